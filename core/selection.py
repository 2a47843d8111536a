"""Layer selection: turn what a user typed into capture nodes.

A selection is a glob (``"conv*"``, ``"*block_1*"``), a ``"re:<regex>"`` string, a list of
keys, names or globs, a layer class, or a predicate over :class:`CaptureNode`.  Globs match
node keys and layer names; a name that matches nothing fails listing the close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tensortap.core.errors import LayerNotFoundError

if TYPE_CHECKING:
    from tensortap.core.graph import CaptureGraph, CaptureNode

__all__ = ["Selection", "resolve_layer_key", "select_nodes"]

Selection = str | Iterable[str] | type | Callable[["CaptureNode"], bool]

_GLOB_CHARS = set("*?[")


def _suggest(graph: CaptureGraph, word: str) -> str:
    candidates = list(dict.fromkeys([*graph.keys, *(node.name for node in graph)]))
    close = difflib.get_close_matches(word, candidates, n=5, cutoff=0.5)
    if not close:  # fall back to substring hits, then to the first keys
        close = [c for c in candidates if word.lower() in c.lower()][:5] or candidates[:5]
    return ", ".join(close)


def _match_one(graph: CaptureGraph, pattern: str) -> list[CaptureNode]:
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as err:
            raise LayerNotFoundError(
                f"invalid layer regex {pattern!r}: {err}; write e.g. 're:^conv\\d+$'"
            ) from err
        hits = [n for n in graph if regex.search(n.key) or regex.search(n.name)]
        what = "regex"
    elif _GLOB_CHARS & set(pattern):
        hits = [
            n
            for n in graph
            if fnmatch.fnmatchcase(n.key, pattern) or fnmatch.fnmatchcase(n.name, pattern)
        ]
        what = "pattern"
    else:
        hits = [n for n in graph if n.key == pattern]
        if not hits:  # a bare layer name stands for all calls/outputs of that layer
            hits = [n for n in graph if n.name == pattern]
        what = "layer"
    if not hits:
        raise LayerNotFoundError(
            f"{what} {pattern!r} matches no layer of {graph.model_name!r}; "
            f"did you mean: {_suggest(graph, pattern.removeprefix('re:').strip('*?'))}? "
            "(tensortap.graph(model) lists every key)"
        )
    return hits


def resolve_layer_key(keys: Iterable[str], name: str) -> str | None:
    """The one key among ``keys`` whose last path segment is ``name``, else ``None``.

    Capture accepts a bare layer name (``"block_1_expand"``) for a nested model's key
    (``"mobilenetv2_1.00_96.block_1_expand"``); views and ``Run`` readers resolve it the
    same way when exactly one stored key ends in that name (a shared layer's calls
    ``dense``, ``dense@1`` are two keys: the name alone stays ambiguous).
    """
    hits = [key for key in keys if key == name or key.rsplit(".", 1)[-1] == name]
    return hits[0] if len(hits) == 1 else None


def select_nodes(graph: CaptureGraph, layers: Any = "*") -> tuple[CaptureNode, ...]:
    """Resolve a layer selection against a capture graph.

    Parameters
    ----------
    graph : CaptureGraph
        The model's capture graph.
    layers : str, list of str, type or callable
        ``"*"`` (everything), a glob, ``"re:<regex>"``, a list of keys/names/globs, a layer
        class (matched against each node's class hierarchy), or a predicate ``node -> bool``.

    Returns
    -------
    tuple of CaptureNode
        The selected nodes in model order, each once.

    Raises
    ------
    LayerNotFoundError
        When a name or pattern matches nothing (close matches are listed), or the whole
        selection is empty.
    """
    if layers is None:
        layers = "*"
    if isinstance(layers, type):
        wanted = f"{layers.__module__}.{layers.__qualname__}"
        chosen = {n.key for n in graph if wanted in n.type_names or layers.__name__ == n.layer_type}
        label = f"layer class {layers.__name__}"
    elif isinstance(layers, str):
        chosen = {n.key for n in _match_one(graph, layers)}
        label = repr(layers)
    elif callable(layers):
        chosen = {n.key for n in graph if layers(n)}
        label = "predicate"
    elif isinstance(layers, Iterable):
        items = list(layers)
        bad = [item for item in items if not isinstance(item, str)]
        if bad:
            raise LayerNotFoundError(
                f"layer lists hold keys, names or patterns (str), got {bad[0]!r}; "
                "pass a class or a predicate on its own, not inside a list"
            )
        chosen = {n.key for item in items for n in _match_one(graph, item)}
        label = repr(items)
    else:
        raise LayerNotFoundError(
            f"cannot select layers with {type(layers).__name__} {layers!r}; use a glob string, "
            "'re:<regex>', a list of keys, a layer class or a predicate"
        )
    nodes = tuple(n for n in graph if n.key in chosen)
    if not nodes:
        raise LayerNotFoundError(
            f"selection {label} chose no layer of {graph.model_name!r}; "
            "tensortap.graph(model) lists every key"
        )
    return nodes
