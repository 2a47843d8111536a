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

from tensortap.core.graph import make_key

__all__ = ["Recorder", "RecordedTensor", "layer_paths", "wrapped_calls"]


def _children(layer: Any) -> list[Any]:
    """Direct sub-layers of ``layer``, InputLayers excluded."""
    if isinstance(layer, keras.Model):
        children = list(
            layer.layers
        )  # Functional/Sequential: graph order; subclassed: tracked order
    else:
        children = list(layer._flatten_layers(include_self=False, recursive=False))
    return [child for child in children if not isinstance(child, keras.layers.InputLayer)]


def layer_paths(model: Any) -> dict[tuple[str, ...], Any]:
    """Every layer below ``model`` by path (names from below the root model down to it).

    The root model's own name is left out, so keys read ``mobilenetv2_1.00_224.block_1_expand``
    whatever the outer model is called.  A layer reachable along two paths keeps the first.
    """
    found: dict[tuple[str, ...], Any] = {}
    seen: set[int] = set()

    def walk(layer: Any, prefix: tuple[str, ...]) -> None:
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = (*prefix, child.name)
            found[path] = child
            walk(child, path)

    walk(model, ())
    return found


@dataclass(slots=True)
class RecordedTensor:
    """One tensor a wrapped layer produced during a trace."""

    key: str
    path: tuple[str, ...]
    layer: Any
    call_index: int
    output_index: int
    tensor: Any


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

    def start(self, tape: Any = None) -> None:
        """Begin a trace: forget earlier records and call counts."""
        self.records = []
        self.calls = {}
        self.tape = tape
        self.graph = tf.compat.v1.get_default_graph()
        self.active = True

    def stop(self) -> list[RecordedTensor]:
        """End the trace and return what was recorded, in completion order."""
        self.active = False
        self.tape = None
        return self.records

    def record(self, layer: Any, outputs: Any) -> None:
        if not self.active:
            return  # a call outside our trace (e.g. the user's own eager call): leave it be
        if tf.compat.v1.get_default_graph() is not self.graph:
            # inside a control-flow body (an RNN cell in its while loop): its tensors cannot
            # leave that body, so the cell is no capture node; its RNN layer is
            return
        call_index = self.calls.get(id(layer), 0)
        self.calls[id(layer)] = call_index + 1
        path = self.paths[id(layer)]
        tensors = [t for t in tf.nest.flatten(outputs) if isinstance(t, tf.Tensor)]
        for output_index, tensor in enumerate(tensors):
            key = make_key(path, call_index, output_index)
            if self.tape is not None and key in self.watch_keys:
                self.tape.watch(tensor)
            self.records.append(RecordedTensor(key, path, layer, call_index, output_index, tensor))


def _wrap(layer: Any, recorder: Recorder) -> Any:
    original = layer.call  # the bound class method; nothing was on the instance before

    @functools.wraps(original)  # keeps the signature Keras inspects (training=, mask=)
    def call(*args: Any, **kwargs: Any) -> Any:
        outputs = original(*args, **kwargs)
        recorder.record(layer, outputs)
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
