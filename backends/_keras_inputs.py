"""Inputs and outputs of Keras models: specs, structure, validation and safe casting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tensortap.core.errors import InputMismatchError, ModelNotBuiltError
from tensortap.core.graph import TensorSpec, default_dims

__all__ = ["input_specs", "output_names", "prepare_inputs", "structure_inputs"]

_NOT_BUILT = (
    "model {name!r} has no known input shape yet; call the model on a batch "
    "(model(x[:1])) or give it an Input (keras.Input(shape=...)) before capturing"
)


def _spec(name: str, shape: Sequence[int | None], dtype: Any) -> TensorSpec:
    per_sample = tuple(None if s is None else int(s) for s in tuple(shape)[1:])
    return TensorSpec(name, per_sample, tf.as_dtype(dtype).name, default_dims(len(per_sample)))


def input_specs(model: Any) -> tuple[TensorSpec, ...]:
    """The model's inputs, named after their ``Input`` layers.

    Raises
    ------
    ModelNotBuiltError
        When the model was never built (a Sequential without ``Input`` never called, a
        subclassed model never called).
    """
    try:
        tensors = list(model.inputs) if model.built else None
    except (AttributeError, ValueError):
        tensors = None
    if tensors:
        return tuple(
            _spec(
                t._keras_history[0].name if hasattr(t, "_keras_history") else t.name,
                t.shape,
                t.dtype,
            )
            for t in tensors
        )
    shapes = getattr(model, "_build_shapes_dict", None) if model.built else None
    if not shapes or len(shapes) != 1:
        raise ModelNotBuiltError(_NOT_BUILT.format(name=model.name))
    shape = next(iter(shapes.values()))
    dtype = model.input_dtype if hasattr(model, "input_dtype") else "float32"
    if isinstance(shape, dict):
        return tuple(_spec(str(k), v, dtype) for k, v in shape.items())
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return tuple(_spec(f"input_{i}", s, dtype) for i, s in enumerate(shape))
    return (_spec("input", shape, dtype),)


def structure_inputs(model: Any, specs: Sequence[TensorSpec], tensors: Sequence[Any]) -> Any:
    """Arrange flat input tensors the way ``model.__call__`` expects them."""
    by_name = dict(zip((s.name for s in specs), tensors, strict=True))
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return {key: by_name[_history_name(t)] for key, t in struct.items()}
    if isinstance(struct, (list, tuple)) and len(struct) > 1:
        return [by_name[_history_name(t)] for t in struct]
    if len(tensors) == 1:
        return tensors[0]
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    shape = next(iter(shapes.values()), None)
    if isinstance(shape, dict):
        return dict(by_name)
    return list(tensors)


def _history_name(tensor: Any) -> str:
    return (
        str(tensor._keras_history[0].name)
        if hasattr(tensor, "_keras_history")
        else str(tensor.name)
    )


def output_names(model: Any, outputs: Any) -> tuple[str, ...]:
    """Names for the flattened model outputs: dict keys, ``model.output_names``, or ``output_i``."""
    flat = tf.nest.flatten(outputs)
    if isinstance(outputs, Mapping):
        return tuple(str(k) for k in sorted(outputs))  # tf.nest flattens dicts by sorted key
    try:
        names = list(model.output_names)
    except (AttributeError, ValueError):
        names = []
    if not names and isinstance(model, keras.Sequential) and model.layers:
        names = [model.layers[-1].name]
    if len(names) == len(flat) and len(set(names)) == len(names):
        return tuple(str(n) for n in names)
    return ("output",) if len(flat) == 1 else tuple(f"output_{i}" for i in range(len(flat)))


def _castable(source: np.dtype, target: np.dtype) -> bool:
    if source == target:
        return True
    if target.kind == "f":  # numbers and booleans become floats (uint8 images, float64 arrays)
        return source.kind in "biuf"
    if target.kind in "iu":  # never truncate floats into token ids
        return source.kind in "biu"
    return False


def prepare_inputs(
    specs: Sequence[TensorSpec], inputs: Mapping[str, Any] | Any
) -> list[np.ndarray]:
    """Check inputs against the model's specs and cast safe dtypes; flat, in spec order.

    Raises
    ------
    InputMismatchError
        Missing or unknown names, wrong rank or size, a dtype that cannot be cast safely,
        or inputs with different batch sizes.
    """
    if not isinstance(inputs, Mapping):
        if len(specs) != 1:
            raise InputMismatchError(
                f"the model has {len(specs)} inputs {[s.name for s in specs]}; pass a dict "
                "of arrays by input name"
            )
        inputs = {specs[0].name: inputs}
    expected = [s.name for s in specs]
    if set(inputs) != set(expected):
        raise InputMismatchError(
            f"inputs {sorted(inputs)} do not match the model's inputs {expected}; "
            "pass one array per input name"
        )
    arrays: list[np.ndarray] = []
    batch: int | None = None
    for spec in specs:
        array = np.asarray(inputs[spec.name])
        want = f"(batch, {', '.join('?' if s is None else str(s) for s in spec.shape)})"
        fits = array.ndim == len(spec.shape) + 1 and all(
            s is None or s == a for s, a in zip(spec.shape, array.shape[1:], strict=True)
        )
        if not fits:
            raise InputMismatchError(
                f"input {spec.name!r} has shape {array.shape} but the model expects {want}; "
                "reshape or resize the data (one sample per row)"
            )
        target = np.dtype(spec.dtype)
        if not _castable(array.dtype, target):
            raise InputMismatchError(
                f"input {spec.name!r} has dtype {array.dtype} but the model expects "
                f"{spec.dtype}, and {array.dtype} cannot be cast to it safely; convert the data"
            )
        if batch is not None and array.shape[0] != batch:
            raise InputMismatchError(
                f"inputs have different batch sizes ({batch} and {array.shape[0]} for "
                f"{spec.name!r}); give every input the same number of samples"
            )
        batch = array.shape[0]
        arrays.append(np.ascontiguousarray(array, dtype=target))
    return arrays


def signature(specs: Sequence[TensorSpec]) -> list[tf.TensorSpec]:
    """``tf.TensorSpec`` with an unknown batch size, one per model input."""
    return [
        tf.TensorSpec((None, *s.shape), tf.as_dtype(s.dtype), name=_safe(s.name)) for s in specs
    ]


def _safe(name: str) -> str:
    # tf.function argument names must be identifiers-ish; dots and dashes are not allowed
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "input"


def is_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model or layer tensortap can run."""
    return isinstance(obj, keras.layers.Layer)
