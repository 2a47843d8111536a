"""Recording layer calls of a Keras 3 model while TensorFlow traces it.

The TensorFlow backend never builds sub-models (the "Graph disconnected" trap of nested
models).  It wraps ``call`` on the selected layer *instances* for the duration of a session,
and lets TensorFlow trace the whole model once per input signature.  Each wrapper hands the
tensors its layer produced to a :class:`Recorder`; the recorder numbers repeated calls of a
layer (shared layers) and outputs of a layer with several outputs, so every recorded tensor
gets its canonical :func:`~tensortap.core.graph.make_key`.  Recording happens at trace time
only: the compiled step then returns the recorded tensors with no Python work per batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from tensortap.backends._keras_dims import meaning_dims
from tensortap.core.graph import make_key

__all__ = ["Recorder", "RecordedTensor", "layer_paths", "walk_layers", "wrapped_calls"]


def _children(layer: Any) -> list[Any]:
    """Direct sub-layers of ``layer`` (and bare ``keras.ops`` nodes), InputLayers excluded.

    A Functional model's ``operations`` hold its Layers *and* the ``keras.Operation``
    objects of bare ops written between them (``x + y``, ``x[:, 0]``); both have a
    ``call`` the recorder can wrap, so both are capture nodes.
    """
    if isinstance(layer, keras.Model):
        # Functional: graph order, with ops; Sequential and subclassed: layers only
        operations = getattr(layer, "operations", None) if _is_functional(layer) else None
        children = list(operations if operations is not None else layer.layers)
    elif isinstance(layer, keras.layers.Layer):
        children = list(layer._flatten_layers(include_self=False, recursive=False))
    else:
        children = []  # a bare keras.Operation owns nothing
    return [child for child in children if not isinstance(child, keras.layers.InputLayer)]


def _is_functional(model: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional) and not isinstance(model, keras.Sequential)


def _rnn_reason(rnn_key: str) -> str:
    return (
        f"runs inside the time loop of RNN layer {rnn_key!r} (Keras calls it once more "
        "outside the loop only to infer shapes, and discards that value); capture "
        f"{rnn_key!r} for the sequence outputs and final states"
    )


def walk_layers(
    model: Any,
) -> tuple[dict[tuple[str, ...], Any], list[tuple[tuple[str, ...], Any, str]]]:
    """Every capturable layer below ``model`` by path, and those that are not, with why.

    Paths are names from below the root model down to the layer; the root's own name is
    left out, so keys read ``mobilenetv2_1.00_224.block_1_expand`` whatever the outer model
    is called.  A layer reachable along two paths keeps the first.  Everything below an
    RNN layer (its cell, stacked cells) is not capturable: see :func:`_rnn_reason`.
    """
    found: dict[tuple[str, ...], Any] = {}
    skipped: list[tuple[tuple[str, ...], Any, str]] = []
    seen: set[int] = set()

    def walk(layer: Any, prefix: tuple[str, ...], inside_rnn: str | None) -> None:
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path, n = (*prefix, child.name), 1
            while path in found:  # two layers named alike (a subclassed model allows it)
                n += 1
                path = (*prefix, f"{child.name}~{n}")
            if inside_rnn is not None:
                skipped.append((path, child, _rnn_reason(inside_rnn)))
            else:
                found[path] = child
            rnn = inside_rnn
            if rnn is None and isinstance(child, keras.layers.RNN):
                rnn = make_key(path)
            walk(child, path, rnn)

    walk(model, (), None)
    return found, skipped


def layer_paths(model: Any) -> dict[tuple[str, ...], Any]:
    """Every capturable layer (and ``keras.ops`` node) below ``model`` by path."""
    return walk_layers(model)[0]


@dataclass(slots=True)
class RecordedTensor:
    """One tensor a wrapped layer produced during a trace."""

    key: str
    path: tuple[str, ...]
    layer: Any
    call_index: int
    output_index: int
    tensor: Any
    dims: tuple[str, ...] = ()


def _per_sample(tensor: Any) -> tuple[int | None, ...]:
    return tuple(None if s is None else int(s) for s in tensor.shape[1:])


@dataclass(slots=True)
class Recorder:
    """Collects the tensors of wrapped layer calls during one trace.

    ``watch`` is the active ``tf.GradientTape`` (or ``None``): recorded tensors whose keys
    are in ``watch_keys`` are watched, so gradients with respect to them exist even when no
    variable lies upstream.
    """

    paths: dict[int, tuple[str, ...]]
    records: list[RecordedTensor] = field(default_factory=list)
    calls: dict[int, int] = field(default_factory=dict)
    tape: Any = None
    watch_keys: frozenset[str] = frozenset()
    active: bool = False
    graph: Any = None
    #: ``path -> layer``, to find a layer's owner; set to name dimensions (graph trace)
    layers: dict[tuple[str, ...], Any] | None = None
    #: per-sample shape and dims of every tensor seen so far, by graph tensor name
    known: dict[str, tuple[tuple[int | None, ...], tuple[str, ...]]] = field(default_factory=dict)
    #: keys of layers called only inside a control-flow body (no capture node)
    inner: dict[str, Any] = field(default_factory=dict)

    def start(self, tape: Any = None) -> None:
        """Begin a trace: forget earlier records and call counts."""
        self.records = []
        self.calls = {}
        self.known = {}
        self.inner = {}
        self.tape = tape
        self.graph = tf.compat.v1.get_default_graph()
        self.active = True

    def stop(self) -> list[RecordedTensor]:
        """End the trace and return what was recorded, in completion order."""
        self.active = False
        self.tape = None
        return self.records

    def seed(self, tensors: Any, dims: list[tuple[str, ...]]) -> None:
        """Give the model's input tensors their names (images ``height, width, channel``)."""
        for tensor, names in zip(tf.nest.flatten(tensors), dims, strict=False):
            if isinstance(tensor, tf.Tensor) and tensor.shape.rank is not None:
                self.known[tensor.name] = (_per_sample(tensor), names)

    def record(self, layer: Any, outputs: Any, inputs: Any = ()) -> None:
        if not self.active:
            return  # a call outside our trace (e.g. the user's own eager call): leave it be
        path = self.paths[id(layer)]
        if tf.compat.v1.get_default_graph() is not self.graph:
            # inside a control-flow body (a layer in a tf.while_loop): its tensors cannot
            # leave that body, so it is no capture node (the graph says so)
            self.inner.setdefault(make_key(path), layer)
            return
        call_index = self.calls.get(id(layer), 0)
        self.calls[id(layer)] = call_index + 1
        tensors = [t for t in tf.nest.flatten(outputs) if isinstance(t, tf.Tensor)]
        sources = self._sources(inputs) if self.layers is not None else []
        for output_index, tensor in enumerate(tensors):
            key = make_key(path, call_index, output_index)
            if self.tape is not None and key in self.watch_keys:
                self.tape.watch(tensor)
            dims: tuple[str, ...] = ()
            if self.layers is not None and tensor.shape.rank is not None:
                parent = self.layers.get(path[:-1])
                shape = _per_sample(tensor)
                dims = meaning_dims(layer, parent, shape, output_index, sources)
                self.known.setdefault(tensor.name, (shape, dims))
            self.records.append(
                RecordedTensor(key, path, layer, call_index, output_index, tensor, dims)
            )

    def _sources(self, inputs: Any) -> list[tuple[tuple[int | None, ...], tuple[str, ...]]]:
        found = []
        for tensor in tf.nest.flatten(inputs):
            # An eager constant a layer feeds itself (keras_hub ViT's position ids) has no
            # name and comes from no traced layer.
            name = getattr(tensor, "name", None) if isinstance(tensor, tf.Tensor) else None
            if name in self.known:
                found.append(self.known[name])
        return found

    def dims_of(self, tensor: Any) -> tuple[str, ...] | None:
        """The names given to ``tensor`` during the trace, if it was seen."""
        entry = self.known.get(getattr(tensor, "name", ""))
        return None if entry is None else entry[1]


def _wrap(layer: Any, recorder: Recorder) -> Any:
    original = layer.call  # the bound class method; nothing was on the instance before

    @functools.wraps(original)  # keeps the signature Keras inspects (training=, mask=)
    def call(*args: Any, **kwargs: Any) -> Any:
        outputs = original(*args, **kwargs)
        recorder.record(layer, outputs, (args, kwargs))
        return outputs

    return call


@contextmanager
def wrapped_calls(layers: dict[tuple[str, ...], Any], recorder: Recorder) -> Iterator[None]:
    """Wrap ``call`` on each layer instance; restore every one in a ``finally``.

    ``object.__setattr__`` bypasses Keras' attribute tracking, so nothing is tracked or
    serialised; removing the instance attribute exposes the class method again.
    """
    wrapped: list[Any] = []
    try:
        for layer in layers.values():
            if "call" in vars(layer):
                raise RuntimeError(
                    f"layer {layer.name!r} already has an instance-level 'call' (another "
                    "capture session is open on this model?); close it first"
                )
            object.__setattr__(layer, "call", _wrap(layer, recorder))
            wrapped.append(layer)
        yield
    finally:
        for layer in wrapped:
            object.__delattr__(layer, "call")
