"""Model-side operations of explanations for torch modules: input gradients, scores and
channel ablation.

Used by :mod:`tensortap.core.attribution` and :mod:`tensortap.core.explain` through the
backend's ``input_gradients`` / ``scores`` / ``ablated_scores`` methods.  A final
``nn.Softmax`` / ``nn.LogSoftmax`` is skipped the way the capture session does (its input
is the score).  Every hook is removed in a ``finally``.  Single-input models only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from tensortap.core.errors import LayerNotFoundError

from ._torch_util import eval_mode, model_device

__all__ = ["ablated_scores", "input_gradients", "scores"]


def _final_softmax(model: torch.nn.Module) -> torch.nn.Module | None:
    last = list(model.modules())[-1]
    return last if isinstance(last, (torch.nn.Softmax, torch.nn.LogSoftmax)) else None


def _forward_scores(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    softmax = _final_softmax(model)
    handle = (
        None
        if softmax is None
        else softmax.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    )
    try:
        output = model(x)
    finally:
        if handle is not None:
            handle.remove()
    out = seen[-1] if seen else output
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.reshape(out.shape[0], -1)


def input_gradients(
    model: torch.nn.Module, x: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``d score[class] / d x`` per sample, and the scores."""
    device = model_device(model)
    tensor = torch.as_tensor(np.asarray(x), device=device).requires_grad_(True)
    index = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=device)
    with eval_mode(model), torch.enable_grad():
        values = _forward_scores(model, tensor).gather(1, index[:, None])[:, 0]
        (grad,) = torch.autograd.grad(values.sum(), tensor)
    return grad.detach().cpu().numpy(), values.detach().cpu().numpy()


def scores(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The ``(sample, class)`` scores (the input of a final softmax, if any)."""
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        return _forward_scores(model, torch.as_tensor(np.asarray(x), device=device)).cpu().numpy()


@contextmanager
def _zeroed(module: torch.nn.Module, channels: Sequence[int]) -> Iterator[None]:
    def hook(m: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, list(channels)] = 0.0  # torch maps are (sample, channel, ...)
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def ablated_scores(model: torch.nn.Module, key: str, x: np.ndarray, channel: int) -> np.ndarray:
    """Scores with one channel of module ``key``'s output set to zero (AblationCAM)."""
    modules = dict(model.named_modules())
    if key not in modules:
        raise LayerNotFoundError(f"the model has no submodule {key!r}")
    with _zeroed(modules[key], [channel]):
        return scores(model, x)
