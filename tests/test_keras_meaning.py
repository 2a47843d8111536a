"""What the Keras capture graph offers and how it names it (issue 13): RNN cells listed as
not capturable, Bidirectional's parts in run order, bare ``keras.ops`` nodes (ConvNeXtTiny's
residual adds), dimension names by meaning with a ``dims=`` override, CAMs refusing
non-spatial layers, predictions from the gradients' scores, and no warnings."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import tensortap as tt  # noqa: E402
from tensortap.core.errors import DimsError, LayerNotFoundError, ViewError  # noqa: E402


def _load(name: str) -> Any:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


models = _load("keras_sequence_models")


def test_rnn_cells_are_listed_with_the_reason_not_captured() -> None:
    model, _, _ = models.recurrent("LSTM", True, True)()
    graph = tt.graph(model)
    assert not [k for k in graph.keys if "lstm_cell" in k]  # the shape-inference call
    (cell,) = [s for s in graph.skipped if s.key == "rnn.lstm_cell"]
    assert cell.layer_type == "LSTMCell" and "time loop" in cell.reason and "'rnn'" in cell.reason
    assert "not capturable:" in str(graph) and "rnn.lstm_cell" in str(graph)
    assert graph["rnn"].dims == ("time", "feature")
    assert graph["rnn:1"].dims == graph["rnn:2"].dims == ("unit",)


def test_bidirectional_parts_in_the_order_they_run() -> None:
    graph = tt.graph(models.bidirectional()[0])
    keys = list(graph.keys)
    assert keys.index(models.BI_FORWARD) < keys.index(models.BI_BACKWARD) < keys.index("bi")
    cells = [s.key.rsplit(".", 1)[0] for s in graph.skipped if s.layer_type == "LSTMCell"]
    assert cells == [models.BI_FORWARD, models.BI_BACKWARD]


def test_dims_by_meaning() -> None:
    td = tt.graph(models.time_distributed()[0])
    assert td["td_conv"].dims == ("time", "height", "width", "channel")
    assert td["td_conv.conv@2"].dims == ("height", "width", "channel")
    attention = tt.graph(models.class_token()[0])
    for part in ("query", "key", "value"):
        node = attention[f"mha.{part}"]
        assert node.dims == ("token", "head", "feature") and not node.is_spatial
    convnext = tt.graph(models.convnext_like()[0])
    ops = [n for n in convnext if n.layer_type in ("Add", "Multiply")]
    assert len(ops) == 4 and all(n.is_spatial for n in ops)
    assert convnext["b1_pw2"].is_spatial  # a pointwise Dense on a map keeps the map's names
    tokens = keras.Input((7,), dtype="int32", name="ids")
    emb = keras.layers.Embedding(20, 6, name="emb")(tokens)
    conv = keras.layers.Conv1D(4, 3, name="conv1d")(emb)
    text = tt.graph(keras.Model(tokens, keras.layers.LSTM(2, name="rnn")(conv)))
    assert text["emb"].dims == ("token", "feature")
    assert text["conv1d"].dims == ("time", "channel")
    image = keras.Input((6, 6, 3), name="image")
    squeeze = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(image)
    flat = keras.layers.GlobalAveragePooling2D(name="gap")(image)
    pooled = tt.graph(keras.Model(image, [squeeze, flat]))
    assert pooled["squeeze"].dims == ("height", "width", "channel")  # a 1 x 1 map
    assert pooled["gap"].dims == ("unit",)


def test_dims_override_and_its_errors(tmp_path: Path) -> None:
    model, x, _ = models.class_token()
    run = tt.capture(
        model, x, store=None, layers=["embed"], progress=False, dims={"embed": ("token", "emb")}
    )
    assert run.activation("embed").dims == ("sample", "token", "emb")
    with pytest.raises(DimsError, match=r"does not fit the layer's per-sample shape \(5, 8\)"):
        tt.capture(model, x, layers=["embed"], progress=False, dims={"embed": ("token",)})
    with pytest.raises(LayerNotFoundError, match="not captured layers"):
        tt.capture(model, x, layers=["embed"], progress=False, dims={"mha": ("a", "b")})


def test_cam_refuses_attention_and_accepts_ops_maps(tmp_path: Path) -> None:
    model, x, _ = models.class_token()
    run = tt.capture(model, x, store=None, layers="mha*", gradients=True, progress=False)
    with pytest.raises(ViewError, match=r"'mha.query' has dims \('token', 'head', 'feature'\)"):
        tt.cam(run, "mha.query")
    model, x, _ = models.convnext_like()
    adds = models._op_names(model, "Add")
    run = tt.capture(model, x, store=None, gradients=True, progress=False)
    maps = tt.cam(run, adds[-1])
    assert maps.shape == (2, 8, 8) and np.isfinite(maps.values).all()

    from tensortap.cli.export import _default_layer

    assert _default_layer(run, "cam") == "b1_dw"  # the last convolution-like layer
    assert _default_layer(run, "heatmap") == "stem"


def test_convnext_tiny_residual_adds_match_a_sub_model() -> None:
    model = keras.applications.ConvNeXtTiny(
        weights=None, input_shape=(32, 32, 3), include_top=True, classes=4
    )
    graph = tt.graph(model)
    adds = [op for op in model.operations if type(op).__name__ == "Add"]
    assert len(adds) == 18 and all(op.name in graph for op in adds)
    assert all(graph[op.name].dims == ("height", "width", "channel") for op in adds)
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    run = tt.capture(model, x, layers=[op.name for op in adds], progress=False)
    reference = keras.Model(model.inputs[0], [op.output for op in adds])(x, training=False)
    for op, expected in zip(adds, reference, strict=True):
        np.testing.assert_array_equal(run.activation(op.name).values, np.asarray(expected))


def test_predictions_are_the_gradients_classes_under_softmax_ties() -> None:
    inp = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(5, activation="tanh", name="h")(inp)
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(hidden)
    model = keras.Model(inp, probs)
    head = model.get_layer("probs")
    rng = np.random.default_rng(5)
    # Every weight from the test's own generator: Keras' initializers draw from a global
    # seed that earlier tests advance, and the test needs logits that disagree with class 0.
    model.get_layer("h").set_weights(
        [rng.standard_normal((4, 5)).astype("float32"), np.zeros(5, "float32")]
    )
    kernel = (rng.standard_normal((5, 3)) * 1e-10).astype("float32")  # random-init-sized logits
    head.set_weights([kernel, np.zeros(3, "float32")])
    x = rng.standard_normal((8, 4)).astype("float32")
    h = np.tanh(x @ model.get_layer("h").kernel.numpy() + model.get_layer("h").bias.numpy())
    logits = h.astype("float64") @ kernel.astype("float64")
    expected = logits.argmax(axis=1)
    assert len(set(expected)) > 1  # the test needs the logits to disagree with class 0
    run = tt.capture(model, x, layers=["h"], gradients=True, progress=False)
    assert (run.outputs().values.argmax(axis=1) == 0).all()  # float32 softmax: all tied
    np.testing.assert_array_equal(run.predictions.values, expected)
    # d logit_k / d h = kernel[:, k]: the gradient used the same class as the prediction
    np.testing.assert_allclose(run.gradient("h").values, kernel[:, expected].T, rtol=1e-6)
    forward_only = tt.capture(model, x, layers=["h"], progress=False)
    np.testing.assert_array_equal(forward_only.predictions.values, expected)


def test_a_keras_capture_emits_no_warnings(tmp_path: Path) -> None:
    model, x, labels = models.convnext_like()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print(tt.graph(model))
        run = tt.capture(
            model, x, store=tmp_path / "run.zarr", gradients=True, labels=labels, progress=False
        )
        opened = tt.open_run(tmp_path / "run.zarr")
        assert opened.activation(run.layers[0]).values.size
        opened.stats(run.layers[-1])
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


class _Twins(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="twins")
        self.first = keras.layers.Dense(3, name="twin")
        self.second = keras.layers.Dense(2, name="twin")  # Keras allows it outside Functional

    def call(self, x: Any) -> Any:
        return self.second(self.first(x))


def test_two_layers_with_one_name_get_two_keys() -> None:
    model = _Twins()
    model(np.zeros((1, 4), "float32"))
    graph = tt.graph(model)
    assert graph.keys == ("twin", "twin~2")
    assert graph["twin~2"].shape == (2,)


def test_an_rnn_inside_time_distributed_is_captured_per_outer_step() -> None:
    inp = keras.Input((2, 4, 3), name="clips")  # 2 clips of 4 steps
    lstm = keras.layers.LSTM(5, name="rnn")
    per_clip = keras.layers.TimeDistributed(lstm, name="td")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(per_clip)))
    graph = tt.graph(model)
    assert not [k for k in graph.keys if "cell" in k]
    assert {"td.rnn", "td.rnn@1", "td"} <= set(graph.keys)
    assert graph["td"].dims == ("time", "unit")
    x = np.random.default_rng(7).standard_normal((3, 2, 4, 3)).astype("float32")
    run = tt.capture(model, x, layers=["td.rnn", "td.rnn@1", "td"], progress=False)
    clips = [models.unroll(lstm, tf.constant(x[:, c]))[0][:, -1] for c in range(2)]
    np.testing.assert_array_equal(run.activation("td.rnn").values, np.asarray(clips[0]))
    np.testing.assert_array_equal(run.activation("td.rnn@1").values, np.asarray(clips[1]))
    np.testing.assert_array_equal(run.activation("td").values, np.stack(clips, axis=1))
