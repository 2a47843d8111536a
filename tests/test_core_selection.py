"""Layer selection on a framework-free capture graph."""

from __future__ import annotations

import pytest

from tensortap.core.errors import LayerNotFoundError
from tensortap.core.graph import CaptureGraph, CaptureNode, TensorSpec, default_dims, make_key


class Conv2D:  # stands in for a framework class: selection matches type_names
    pass


def node(
    path: tuple[str, ...], layer_type: str = "Dense", call: int = 0, out: int = 0
) -> CaptureNode:
    shape = (4, 4, 2) if layer_type == "Conv2D" else (3,)
    names = (f"{Conv2D.__module__}.{Conv2D.__qualname__}",) if layer_type == "Conv2D" else ()
    return CaptureNode(
        make_key(path, call, out),
        path[-1],
        layer_type,
        path,
        shape,
        default_dims(len(shape)),
        call_index=call,
        output_index=out,
        type_names=names,
    )


@pytest.fixture
def graph() -> CaptureGraph:
    nodes = (
        node(("conv1",), "Conv2D"),
        node(("base", "block_1_expand"), "Conv2D"),
        node(("base", "block_1_project"), "Conv2D"),
        node(("shared",)),
        node(("shared",), call=1),
        node(("lstm",), "LSTM"),
        node(("lstm",), "LSTM", out=1),
        node(("logits",)),
    )
    spec = TensorSpec("x", (4, 4, 2), "float32", ("height", "width", "channel"))
    return CaptureGraph(
        "test", "m", "Model", nodes, (spec,), (TensorSpec("logits", (3,), "float32", ("unit",)),)
    )


def keys(nodes: tuple[CaptureNode, ...]) -> list[str]:
    return [n.key for n in nodes]


def test_keys() -> None:
    assert make_key(("base", "block_1_expand")) == "base.block_1_expand"
    assert make_key(("shared",), 1) == "shared@1"
    assert make_key(("lstm",), 0, 1) == "lstm:1"
    assert make_key(("lstm",), 2, 1) == "lstm@2:1"


def test_glob_list_regex_class_predicate(graph: CaptureGraph) -> None:
    assert graph.select("*") == graph.nodes
    assert graph.select(None) == graph.nodes
    assert keys(graph.select("*block_1*")) == ["base.block_1_expand", "base.block_1_project"]
    assert keys(graph.select("conv?")) == ["conv1"]
    assert keys(graph.select(["logits", "conv1"])) == ["conv1", "logits"]  # model order
    assert keys(graph.select("re:^base\\..*project$")) == ["base.block_1_project"]
    assert keys(graph.select(Conv2D)) == ["conv1", "base.block_1_expand", "base.block_1_project"]
    assert keys(graph.select(lambda n: n.call_index == 1)) == ["shared@1"]


def test_name_stands_for_every_call_and_output(graph: CaptureGraph) -> None:
    assert keys(graph.select("shared")) == ["shared"]  # the exact key wins
    assert keys(graph.select("block_1_expand")) == ["base.block_1_expand"]  # bare layer name
    assert keys(graph.select(["shared@1", "shared@1"])) == ["shared@1"]  # each once


def test_unknown_name_lists_close_matches(graph: CaptureGraph) -> None:
    with pytest.raises(LayerNotFoundError, match="did you mean: .*base.block_1_expand") as err:
        graph.select("base.block_1_expnd")
    assert "tensortap.graph(model)" in str(err.value)
    assert isinstance(err.value, KeyError)  # catchable as the builtin too
    with pytest.raises(LayerNotFoundError, match="pattern 'dense\\*'"):
        graph.select("dense*")
    with pytest.raises(LayerNotFoundError, match="invalid layer regex"):
        graph.select("re:(")
    with pytest.raises(LayerNotFoundError, match="chose no layer"):
        graph.select(lambda n: False)
    with pytest.raises(LayerNotFoundError, match="hold keys"):
        graph.select(["conv1", Conv2D])
    with pytest.raises(LayerNotFoundError, match="cannot select"):
        graph.select(3.5)
    with pytest.raises(LayerNotFoundError):
        graph["nope"]


def test_graph_table_and_lookup(graph: CaptureGraph) -> None:
    assert graph["shared@1"].call_index == 1
    assert "base.block_1_expand" in graph and len(graph) == 8
    text = str(graph)
    assert "base.block_1_expand" in text and "height, width, channel" in text
    assert graph["conv1"].is_spatial and graph["conv1"].channel_dim == "channel"
    with pytest.raises(ValueError, match="duplicate"):
        CaptureGraph("t", "m", "M", (graph.nodes[0], graph.nodes[0]), (), ())
