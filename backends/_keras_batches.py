"""Several compute batches in one compiled call (issue 12, small layers).

A call of a traced step costs about a millisecond of Python and TensorFlow dispatch
(binding the arguments, packing the outputs, one ``EagerTensor`` per array) whatever the
batch holds: on a small MLP that is as much as the whole forward and backward pass.
:func:`loop_over_batches` wraps the single-batch step in a ``tf.while_loop`` that calls it
on each ``batch_size`` slice of its inputs and concatenates what each call returned, so the
dispatch is paid once per group of batches while the model still sees exactly one batch at
a time (same ops, same shapes: values are bit-identical to calling the step batch by batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tensortap.core.graph import CaptureNode, TensorSpec

__all__ = ["loop_over_batches", "sample_bytes"]


def sample_bytes(
    nodes: Sequence[CaptureNode], outputs: Sequence[TensorSpec], gradients: bool
) -> int | None:
    """Bytes one sample's activations (and gradients) and outputs take, or ``None`` when a
    shape is not static (sequences of unknown length)."""
    total = 0
    for shape, dtype, copies in [
        *((n.shape, n.dtype, 2 if gradients else 1) for n in nodes),
        *((o.shape, o.dtype, 1) for o in outputs),
    ]:
        if any(s is None for s in shape):
            return None
        total += int(np.prod(shape, dtype=np.int64)) * tf.as_dtype(dtype).size * copies
    return total


def loop_over_batches(single: Any) -> Any:
    """A concrete function ``(batch_size, *inputs)`` running ``single`` batch by batch.

    Parameters
    ----------
    single : ConcreteFunction
        The single-batch step: every input and every output has the sample axis first.

    Returns
    -------
    ConcreteFunction
        Takes a scalar ``int32`` batch size and ``single``'s inputs holding a whole number
        of batches (or one shorter batch); returns ``single``'s outputs for all of them,
        in sample order.
    """
    specs = [
        tf.TensorSpec(t.shape, t.dtype, name=f"arg_{i}")
        for i, t in enumerate(single.structured_input_signature[0])
    ]
    structure = single.structured_outputs
    flat_specs = tf.nest.flatten(structure)

    def grouped(batch: Any, *args: Any) -> Any:
        count = tf.shape(args[0])[0] // batch

        def body(i: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
            rows = [a[i * batch : (i + 1) * batch] for a in args]
            found = tf.nest.flatten(single(*rows))
            return i + 1, [array.write(i, t) for array, t in zip(arrays, found, strict=True)]

        arrays = [
            tf.TensorArray(t.dtype, size=count, infer_shape=False, element_shape=t.shape)
            for t in flat_specs
        ]
        _, arrays = tf.while_loop(
            lambda i, _arrays: i < count, body, (tf.constant(0), arrays), parallel_iterations=1
        )
        return tf.nest.pack_sequence_as(structure, [array.concat() for array in arrays])

    batch_spec = tf.TensorSpec((), tf.int32, name="batch_size")
    return tf.function(grouped, autograph=False).get_concrete_function(batch_spec, *specs)
