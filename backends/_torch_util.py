"""Small helpers shared by the PyTorch backend's graph tracer and capture session.

They walk the nested tuples, lists and dicts that ``nn.Module.forward`` may return, name
model inputs and outputs, turn NumPy batches into tensors (checking them against the
traced input specs), and switch a model to eval mode for exactly one forward pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from tensortap.core.errors import InputMismatchError
from tensortap.core.graph import TensorSpec, default_dims

__all__ = [
    "eval_mode",
    "input_names",
    "map_tensors",
    "model_device",
    "output_items",
    "remove_all",
    "split_example",
    "tensor_leaves",
    "to_numpy",
    "to_tensors",
    "type_names",
]


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts, in a stable order.

    The position of a tensor in this list is its *output index* (``key:i`` in the graph),
    so the tracer and the session must both use this function.
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in tensor_leaves(item)]
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in tensor_leaves(item)]
    return []


def map_tensors(value: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with each tensor leaf replaced by ``function(leaf)``, structure kept."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(map_tensors(item, function) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(item, function) for item in value)
    if isinstance(value, dict):
        return type(value)((k, map_tensors(v, function)) for k, v in value.items())
    return value


def output_items(output: Any) -> list[tuple[str, torch.Tensor]]:
    """Name the tensors a model returns: ``output`` for one tensor, the keys of a dict,
    ``output_0, output_1, ...`` for anything else (tuples, lists, nested)."""
    if isinstance(output, torch.Tensor):
        return [("output", output)]
    if isinstance(output, Mapping) and all(isinstance(v, torch.Tensor) for v in output.values()):
        return [(str(k), v) for k, v in output.items()]
    return [(f"output_{i}", t) for i, t in enumerate(tensor_leaves(output))]


def input_names(model: torch.nn.Module, count: int) -> tuple[str, ...]:
    """Names of the first ``count`` positional parameters of ``model.forward``.

    Falls back to ``input_0, input_1, ...`` when ``forward`` takes ``*args`` or has fewer
    named parameters, so a name always exists and is stable for one model class.
    """
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # builtins or C extensions without a signature
        parameters = []
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= count:
        return tuple(positional[:count])
    return tuple(f"input_{i}" for i in range(count))


def split_example(model: torch.nn.Module, example: Any) -> tuple[dict[str, Any], bool]:
    """Normalise an example batch to ``({name: array_or_tensor}, by_keyword)``.

    An array or tensor is the single input; a tuple or list holds positional inputs named
    after ``forward``'s parameters; a dict is passed by keyword under its own keys.
    """
    if isinstance(example, (np.ndarray, torch.Tensor)):
        return dict(zip(input_names(model, 1), [example], strict=True)), False
    if isinstance(example, Mapping):
        return {str(k): v for k, v in example.items()}, True
    if isinstance(example, (tuple, list)) and example:
        items = list(example)
        return dict(zip(input_names(model, len(items)), items, strict=True)), False
    raise InputMismatchError(
        f"cannot use {type(example).__name__} as example inputs of a torch model; pass an "
        "array or tensor, a tuple of them (one per forward argument) or a dict by argument name"
    )


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _numpy_dtype(dtype: torch.dtype) -> str:
    # bfloat16 has no NumPy dtype: its values are stored as float32.
    return "float32" if dtype == torch.bfloat16 else str(dtype).removeprefix("torch.")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous NumPy copy-or-view of a tensor that no one modifies any more."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return np.ascontiguousarray(tensor.cpu().numpy())


def spec_for(name: str, tensor: torch.Tensor) -> TensorSpec:
    """The per-sample :class:`TensorSpec` of a batched tensor (channels-first dims)."""
    shape = tuple(int(s) for s in tensor.shape[1:])
    return TensorSpec(
        name, shape, _numpy_dtype(tensor.dtype), default_dims(len(shape), channels_last=False)
    )


def type_names(module: torch.nn.Module) -> tuple[str, ...]:
    """``module.qualname`` of every class in the module's MRO (selection by class)."""
    return tuple(f"{k.__module__}.{k.__qualname__}" for k in type(module).__mro__)


def _kind(dtype: np.dtype) -> str:
    return (
        "float"
        if np.issubdtype(dtype, np.floating)
        else "int"
        if (np.issubdtype(dtype, np.integer) or dtype == np.bool_)
        else str(dtype)
    )


def to_tensors(
    specs: Sequence[TensorSpec],
    inputs: Mapping[str, Any],
    device: torch.device,
) -> list[torch.Tensor]:
    """Check a batch against the traced input specs and copy it into fresh tensors.

    Floats are cast to the traced float dtype (NumPy's float64 default is common), integers
    to the traced integer dtype; anything else, or another per-sample shape, raises
    :class:`InputMismatchError`.  The copy keeps in-place ops inside the model (``ReLU(
    inplace=True)`` on an input) from touching the caller's arrays.
    """
    missing = [s.name for s in specs if s.name not in inputs]
    extra = sorted(set(inputs) - {s.name for s in specs})
    if missing or extra:
        raise InputMismatchError(
            f"the model takes inputs {[s.name for s in specs]}, got {sorted(inputs)}; "
            "pass one array per forward argument, by name or in order"
        )
    tensors = []
    for spec in specs:
        value = inputs[spec.name]
        array = (
            value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        )
        got, want = _kind(array.dtype), _kind(np.dtype(spec.dtype))
        shape_ok = array.ndim == len(spec.shape) + 1 and all(
            w is None or w == g for w, g in zip(spec.shape, array.shape[1:], strict=True)
        )
        if not shape_ok or got != want:
            raise InputMismatchError(
                f"input {spec.name!r} has per-sample shape {tuple(array.shape[1:])} dtype "
                f"{array.dtype}, but the model was traced with shape {spec.shape} dtype "
                f"{spec.dtype}; give batches shaped (batch, {', '.join(map(str, spec.shape))}) "
                f"of {want} values"
            )
        tensors.append(torch.tensor(array.astype(spec.dtype, copy=False), device=device))
    return tensors


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the body with every submodule in eval mode, then restore each ``training`` flag
    exactly as it was (a model mixing train and eval submodules stays mixed)."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        if any(flag for _, flag in flags):  # ``eval()`` honours a module's own ``train()``
            model.eval()
        yield
    finally:
        for module, flag in flags:
            if module.training != flag:  # ``nn.Module.__setattr__`` is slow: only changes
                module.training = flag


def remove_all(handles: list[Any]) -> None:
    """Remove every hook handle, emptying the list (safe to call twice)."""
    while handles:
        handles.pop().remove()
