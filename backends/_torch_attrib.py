"""Input attributions inside the torch capture step (``capture(attributions=...)``).

Called by :class:`~tensortap.backends._torch_session.TorchCaptureSession` from the batch's
own ``run``, in eval mode, after its hooks are removed.  Saliency and gradient x input use
the input gradient of the capture's autograd pass (the same target as the captured
gradients); SmoothGrad and Integrated Gradients run their noisy copies / path points in
batches of the capture's batch size, differentiating the same classes.
"""

from __future__ import annotations

import numpy as np
import torch

from tensortap.core.capture_attributions import AttributionSpec

from ._torch_explain import _forward_scores

__all__ = ["input_attributions"]


def _input_gradient(
    model: torch.nn.Module, rows: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    rows = rows.detach().requires_grad_(True)
    with torch.enable_grad():
        values = _forward_scores(model, rows).gather(1, classes[:, None])[:, 0]
        (grad,) = torch.autograd.grad(values.sum(), rows)
    return grad


def input_attributions(
    spec: AttributionSpec,
    model: torch.nn.Module,
    x: torch.Tensor,
    gradient: torch.Tensor,
    classes: torch.Tensor,
    start: int,
) -> dict[str, np.ndarray]:
    """The attributions of ``spec`` for batch ``x`` (global samples ``start ..``).

    Parameters
    ----------
    gradient : torch.Tensor
        ``d target / d x`` from the capture's own pass.
    classes : torch.Tensor
        The class each sample's target differentiated.
    """
    out: dict[str, torch.Tensor] = {}
    x = x.detach()
    for method in spec.methods:
        if method == "saliency":
            out[method] = gradient.abs()
        elif method == "gradient_x_input":
            out[method] = x * gradient
        elif method == "smoothgrad":
            noise = torch.as_tensor(spec.noise(start, x.cpu().numpy()), device=x.device)
            total = torch.zeros_like(x)
            for k in range(spec.n_samples):
                total += _input_gradient(model, x + noise[k], classes).abs()
            out[method] = total / spec.n_samples
        else:  # integrated_gradients
            base = torch.full_like(x, spec.baseline)
            total = torch.zeros_like(x)
            for alpha, weight in zip(spec.alphas, spec.weights, strict=True):
                point = base + float(alpha) * (x - base)
                total += float(weight) * _input_gradient(model, point, classes)
            out[method] = (x - base) * total
    return {k: v.detach().to(torch.float32).cpu().numpy() for k, v in out.items()}
