"""Dimension names of Keras tensors from what produced them, not from their rank.

A rank-3 tensor is an image map only when a convolution-like layer made it (or a layer
that keeps the layout of such a map: activations, normalisation, ``add``); a
TimeDistributed output leads with ``time``; the query/key/value projections of a
``MultiHeadAttention`` are ``(token, head, feature)``.  Names propagate along the traced
graph: a layer that keeps its input's rank and leading sizes keeps its input's names.
Everything else gets names that say nothing spatial (``dim_0, ..., feature``), so CAMs and
the CLI's default CAM layer can never land on a sequence or an attention tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tensortap.core.graph import default_dims

__all__ = ["is_conv_like", "meaning_dims", "plain_dims"]

Dims = tuple[str, ...]

#: Modules whose layers produce grid-shaped maps (convolutions, pooling, padding, resizing).
_GRID_MODULES = (
    "keras.src.layers.convolutional.",
    "keras.src.layers.pooling.",
    "keras.src.layers.reshaping.zero_padding",
    "keras.src.layers.reshaping.cropping",
    "keras.src.layers.reshaping.up_sampling",
    "keras.src.layers.preprocessing.image_preprocessing.",
)
#: Layers that move axes around: their output's axes do not follow their input's.
_REARRANGING = ("Permute", "Reshape", "Flatten", "RepeatVector")
_GRID_BY_RANK: dict[int, Dims] = {
    2: ("time", "channel"),
    3: ("height", "width", "channel"),
    4: ("depth", "height", "width", "channel"),
}


def plain_dims(rank: int) -> Dims:
    """Names for a tensor nothing is known about: never spatial, last axis ``feature``."""
    if rank <= 2:
        return default_dims(rank)
    return (*(f"dim_{i}" for i in range(rank - 1)), "feature")


def is_conv_like(layer: Any) -> bool:
    """Whether ``layer`` is a convolution, pooling, padding or resizing layer.

    Global pooling counts too: with ``keepdims=True`` (squeeze-and-excite blocks) its
    output is a 1 x 1 map; without, it has rank 1 and no grid names apply.
    """
    for klass in type(layer).__mro__:
        module = klass.__module__
        if module.startswith(_GRID_MODULES) and klass.__name__ not in ("Layer", "Operation"):
            return True
    return False


def _attention_dims(layer: Any, parent: Any, rank: int) -> Dims | None:
    """``(token, head, feature)`` projections and ``(head, token, key_token)`` scores."""
    if not isinstance(parent, keras.layers.MultiHeadAttention) or rank != 3:
        return None
    projections = [getattr(parent, f"_{n}_dense", None) for n in ("query", "key", "value")]
    if any(layer is p for p in projections):
        return ("token", "head", "feature")
    scores = [getattr(parent, n, None) for n in ("_softmax", "_dropout_layer")]
    if any(layer is s for s in scores):
        return ("head", "token", "key_token")
    return None


def _same_layout(shape: Sequence[int | None], source: Sequence[int | None]) -> bool:
    """Same rank and same sizes on every axis but the last (unknown sizes match anything)."""
    if len(shape) != len(source):
        return False
    return all(
        a is None or b is None or a == b for a, b in zip(shape[:-1], source[:-1], strict=True)
    )


def meaning_dims(
    layer: Any,
    parent: Any,
    shape: Sequence[int | None],
    output_index: int,
    sources: Sequence[tuple[Sequence[int | None], Dims]],
) -> Dims:
    """Dimension names of one output of ``layer``.

    Parameters
    ----------
    layer : keras.layers.Layer or keras.Operation
        What produced the tensor.
    parent : keras.layers.Layer or None
        The layer that owns ``layer`` (``MultiHeadAttention`` for its projections).
    shape : sequence of int or None
        Per-sample shape of the output (batch axis excluded).
    output_index : int
        Which output of ``layer``.
    sources : sequence of (shape, dims)
        Per-sample shapes and names of the layer's input tensors that are known.
    """
    rank = len(shape)
    if rank == 0:
        return ()
    if isinstance(layer, keras.layers.TimeDistributed):
        inner_sources = [(s[1:], d[1:]) for s, d in sources if len(d) >= 1]
        inner = meaning_dims(layer.layer, layer, shape[1:], output_index, inner_sources)
        return ("time", *inner) if "time" not in inner else plain_dims(rank)
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        if rank == 1:
            return ("unit",)
        # a sequence of vectors, or of maps (ConvLSTM2D): time first; final maps are spatial
        table: dict[int, Dims] = {
            2: ("time", "feature"),
            3: ("height", "width", "channel"),
            4: ("time", "height", "width", "channel"),
        }
        return table.get(rank, plain_dims(rank))
    if isinstance(layer, keras.layers.MultiHeadAttention):
        if output_index == 0 and rank == 2:  # the query's positions, the query's names
            query = [d for s, d in sources if _same_layout(shape, s)]
            return query[0] if query else ("token", "feature")
        return ("head", "token", "key_token") if rank == 3 else plain_dims(rank)
    attention = _attention_dims(layer, parent, rank)
    if attention is not None:
        return attention
    if isinstance(layer, keras.layers.Embedding) and rank == 2:
        return ("token", "feature")
    if is_conv_like(layer) and rank in _GRID_BY_RANK:
        return _GRID_BY_RANK[rank]
    if type(layer).__name__ not in _REARRANGING:
        for source_shape, source_dims in sources:
            if _same_layout(shape, source_shape) and len(set(source_dims)) == rank:
                return source_dims
    return plain_dims(rank)
