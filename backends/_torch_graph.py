"""Trace a ``torch.nn.Module`` once into a :class:`CaptureGraph`.

PyTorch modules have no static shapes, so the graph comes from running an example batch
with a forward hook on every submodule.  Each hook call becomes one node per tensor it
returns, keyed by the module's dotted path (``layer1.0.conv2``), ``@k`` for the k-th call
of a module used more than once and ``:i`` for the i-th tensor of a tuple output.  Nodes
are ordered by when their output was produced (a container follows its children).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tensortap.core.errors import InputMismatchError, UnsupportedModelError
from tensortap.core.graph import CaptureGraph, CaptureNode, make_key

from ._torch_util import (
    eval_mode,
    model_device,
    output_items,
    remove_all,
    spec_for,
    split_example,
    tensor_leaves,
    type_names,
)

__all__ = ["build_graph", "check_module", "model_name"]

#: How many example samples the trace runs: two, so a batch axis is told apart from a
#: coincidental size-1 axis, and tracing stays cheap whatever the batch size.
_TRACE_SAMPLES = 2


def check_module(model: Any) -> None:
    """Refuse objects the hook-based tracer cannot see into."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedModelError(
            f"{type(model).__name__} is TorchScript: its submodules run as compiled code, where "
            "forward hooks never fire; capture the Python nn.Module instead (torch.save(model))"
        )
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(
            f"{type(model).__module__}.{type(model).__qualname__} is not a torch.nn.Module"
        )


def model_name(model: torch.nn.Module) -> str:
    """A model's display name: its ``name`` attribute if it is a string, else its class."""
    name = getattr(model, "name", None)
    return name if isinstance(name, str) and name else type(model).__name__


def _trace_tensors(values: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, value in values.items():
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            # torch.as_tensor warns ("non-writable NumPy array") to the user: copy the
            # few samples traced instead (issue 16).
            value = np.array(value[:_TRACE_SAMPLES])
        tensor = torch.as_tensor(value)
        if tensor.dim() == 0:
            raise InputMismatchError(
                f"example input {name!r} is a scalar; inputs need a batch axis first"
            )
        tensors[name] = tensor[:_TRACE_SAMPLES].clone().to(device)
    return tensors


def build_graph(model: torch.nn.Module, example: Any) -> CaptureGraph:
    """Run ``example`` through ``model`` once (eval mode, no grad) and record every call.

    Parameters
    ----------
    model : torch.nn.Module
        The model; it is left exactly as it was (hooks removed, ``training`` restored).
    example : array, tensor, tuple of them, or dict
        An example batch, as :func:`split_example` reads it; only its first two samples run.

    Returns
    -------
    CaptureGraph
        ``extra`` holds ``by_keyword`` (call ``forward`` with keyword arguments) and
        ``softmax`` (``(module path, call index)`` of a final softmax, or ``None``) and
        ``score`` (what a class target differentiates, as in the TensorFlow backend).

    Raises
    ------
    InputMismatchError
        When the model rejects the example.
    """
    check_module(model)
    values, by_keyword = split_example(model, example)
    tensors = _trace_tensors(values, model_device(model))
    batch = next(iter(tensors.values())).shape[0]
    records: list[tuple[str, torch.nn.Module, int, Any]] = []
    softmax_inputs: dict[int, tuple[str, int]] = {}
    calls: dict[str, int] = {}

    def make_hook(path: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            index = calls.get(path, 0)
            calls[path] = index + 1
            records.append((path, module, index, output))
            if isinstance(module, (torch.nn.Softmax, torch.nn.LogSoftmax)):
                for leaf in tensor_leaves(output):
                    softmax_inputs[id(leaf)] = (path, index)

        return hook

    handles: list[Any] = []
    try:
        with eval_mode(model), torch.no_grad():
            for path, module in model.named_modules():
                if path:  # the root's output is stored as the model output
                    handles.append(module.register_forward_hook(make_hook(path)))
            try:
                output = model(**tensors) if by_keyword else model(*tensors.values())
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                shapes = {n: tuple(t.shape) for n, t in tensors.items()}
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise InputMismatchError(
                    f"example inputs {shapes} do not fit {model_name(model)}: {first_line}"
                ) from err
    finally:
        remove_all(handles)

    nodes = []
    for path, module, index, value in records:
        for position, leaf in enumerate(tensor_leaves(value)):
            # Only per-sample floating tensors can be stored and differentiated.
            if not leaf.is_floating_point() or leaf.dim() == 0 or leaf.shape[0] != batch:
                continue
            spec = spec_for(path, leaf)
            nodes.append(
                CaptureNode(
                    key=make_key(tuple(path.split(".")), index, position),
                    name=path,
                    layer_type=type(module).__name__,
                    path=tuple(path.split(".")),
                    shape=spec.shape,
                    dims=spec.dims,
                    dtype=spec.dtype,
                    call_index=index,
                    output_index=position,
                    type_names=type_names(module),
                )
            )
    outputs = output_items(output)
    inputs = tuple(spec_for(name, tensor) for name, tensor in tensors.items())
    softmax = softmax_inputs.get(id(outputs[0][1])) if outputs else None
    return CaptureGraph(
        framework="torch",
        model_name=model_name(model),
        model_class=type(model).__qualname__,
        nodes=tuple(nodes),
        inputs=inputs,
        outputs=tuple(spec_for(name, tensor) for name, tensor in outputs),
        params=sum(p.numel() for p in model.parameters()),
        extra={
            "by_keyword": by_keyword,
            "softmax": softmax,
            # Same wording as the TensorFlow backend (and the session's info["score"]).
            "score": "logits (pre-softmax)" if softmax is not None else "model output",
        },
    )
