"""Input attributions: saliency, gradient x input, SmoothGrad, Integrated Gradients.

Framework-free: the maths is here, and the backend provides one operation,
``backend.input_gradients(model, x, classes) -> (d score[class] / d x, score[class])``,
a compiled step over a batch (``tf.function`` in TensorFlow).  SmoothGrad's noisy copies
and Integrated Gradients' path points are flattened into batches of ``batch_size`` rows
and run through that one step.  Results have the model input's dims and are stored in the
run (:mod:`tensortap.core.explanation_store`), where the overlay views read them.

The target class of each sample is fixed once, on the clean input (``"predicted"``: its
top score; ``"label"``; an int; or one class per sample), and every copy differentiates
that class's pre-softmax score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import xarray as xr

from tensortap.core.errors import TargetError, UnsupportedModelError, ViewError

__all__ = [
    "ATTRIBUTION_METHODS",
    "attribute",
    "gradient_x_input",
    "integrated_gradients",
    "integration_points",
    "resolve_classes",
    "saliency",
    "smoothgrad",
]

#: ``(x, classes) -> gradients`` of the target scores with respect to ``x``.
GradientFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _batched(rows: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, rows, batch_size):
        yield slice(start, min(start + batch_size, rows))


def _gradients(
    gradient: GradientFunction, x: np.ndarray, classes: np.ndarray, batch: int
) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.float64)
    for part in _batched(len(x), batch):
        out[part] = gradient(x[part], classes[part])
    return out


def saliency(
    gradient: GradientFunction, x: np.ndarray, classes: np.ndarray, *, batch_size: int = 32
) -> np.ndarray:
    r"""Vanilla gradient saliency: the absolute gradient of the class score.

    .. math:: M(x) = \left| \frac{\partial S_c}{\partial x} \right|

    Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image Classification
    Models and Saliency Maps", ICLR 2014 workshop, https://arxiv.org/abs/1312.6034
    (Captum's ``Saliency`` with ``abs=True``).
    """
    return np.asarray(np.abs(_gradients(gradient, x, classes, batch_size)))


def gradient_x_input(
    gradient: GradientFunction, x: np.ndarray, classes: np.ndarray, *, batch_size: int = 32
) -> np.ndarray:
    r"""Gradient times input.

    .. math:: M(x) = x \odot \frac{\partial S_c}{\partial x}

    Shrikumar et al., "Not Just a Black Box: Learning Important Features Through Propagating
    Activation Differences", 2016, https://arxiv.org/abs/1605.01713
    """
    return np.asarray(
        np.asarray(x, dtype=np.float64) * _gradients(gradient, x, classes, batch_size)
    )


def smoothgrad(
    gradient: GradientFunction,
    x: np.ndarray,
    classes: np.ndarray,
    *,
    n_samples: int = 16,
    sigma: float = 0.15,
    seed: int = 0,
    noise: np.ndarray | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    r"""SmoothGrad: the saliency map averaged over noisy copies of the input.

    .. math:: \hat M(x) = \frac{1}{n} \sum_{k=1}^{n} \left| \frac{\partial S_c}{\partial x}
              (x + \epsilon_k) \right|, \qquad \epsilon_k \sim \mathcal N(0, \sigma^2)

    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017,
    https://arxiv.org/abs/1706.03825 (Captum's ``NoiseTunnel(Saliency)``, ``smoothgrad``).

    Parameters
    ----------
    sigma : float
        Noise standard deviation, in the input's units.
    seed : int
        Seeds NumPy's generator: the same seed gives the same noise on every backend.
    noise : ndarray, shape (n_samples, *x.shape), optional
        Explicit noise instead of drawing it (to reproduce another library's draws).
    """
    x = np.asarray(x)
    if noise is None:
        noise = np.random.default_rng(seed).normal(0.0, sigma, size=(n_samples, *x.shape))
    elif noise.shape[1:] != x.shape:
        raise ValueError(f"noise {noise.shape} must be (n_samples, *{x.shape})")
    copies = (x[None] + noise).astype(x.dtype).reshape(-1, *x.shape[1:])
    repeated = np.tile(np.asarray(classes), len(noise))
    grads = _gradients(gradient, copies, repeated, batch_size).reshape(noise.shape)
    return np.asarray(np.abs(grads).mean(axis=0))


def integration_points(steps: int, rule: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of a quadrature rule.

    ``gausslegendre`` (Captum's default), ``riemann_left``, ``riemann_right``,
    ``riemann_middle``, ``riemann_trapezoid``.  The trapezoid weights are ``1/(m-1)``,
    halved at both ends (Captum 0.9 uses ``1/m``, which sums to ``(m-1)/m``).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("riemann_trapezoid needs steps >= 2")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2.0
        return alphas, weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise ValueError(
            f"unknown integration rule {rule!r}; choose gausslegendre, "
            f"{', '.join(offsets)} or riemann_trapezoid"
        )
    return (np.arange(steps) + offsets[rule]) / steps, np.full(steps, 1.0 / steps)


def integrated_gradients(
    gradient: GradientFunction,
    x: np.ndarray,
    classes: np.ndarray,
    *,
    steps: int = 32,
    baseline: float | np.ndarray = 0.0,
    rule: str = "gausslegendre",
    batch_size: int = 32,
) -> np.ndarray:
    r"""Integrated Gradients along the straight path from a baseline.

    .. math:: \mathrm{IG}(x) = (x - b) \odot \int_0^1 \frac{\partial S_c}{\partial x}
              \big(b + \alpha (x - b)\big)\, d\alpha
              \approx (x - b) \odot \sum_k w_k\, \frac{\partial S_c}{\partial x}(b + \alpha_k (x - b))

    Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017,
    https://arxiv.org/abs/1703.01365 (quadrature rules as in Captum).

    Parameters
    ----------
    steps : int
        Number of path points ``m``.
    baseline : float or ndarray
        A constant, one input (broadcast over samples) or one per sample.
    rule : str
        See :func:`integration_points`.
    """
    x = np.asarray(x)
    base = np.broadcast_to(np.asarray(baseline, dtype=x.dtype), x.shape)
    alphas, weights = integration_points(steps, rule)
    path = base[None] + alphas.reshape(-1, *[1] * x.ndim).astype(x.dtype) * (x - base)[None]
    repeated = np.tile(np.asarray(classes), steps)
    grads = _gradients(
        gradient, path.reshape(-1, *x.shape[1:]).astype(x.dtype), repeated, batch_size
    )
    mean = np.tensordot(weights, grads.reshape(steps, *x.shape), axes=1)
    return np.asarray((x - base) * mean)


#: Input attribution methods by name (``tt.attribute(method=...)``).
ATTRIBUTION_METHODS = ("saliency", "gradient_x_input", "smoothgrad", "integrated_gradients")


def resolve_classes(
    target: Any,
    n: int,
    scores: Callable[[], np.ndarray],
    labels: np.ndarray | None,
    *,
    n_classes: Callable[[], int] | None = None,
) -> np.ndarray:
    """One class per sample: ``"predicted"`` (top score), ``"label"``, an int, or an array.

    ``n_classes`` (the model's score count, asked only for given classes) range-checks
    them before any explanation is computed: an index past the scores would fail deep in
    the method, or, in a framework's gather, silently read another class.
    """
    if isinstance(target, str) and target == "predicted":
        return np.asarray(np.argmax(scores(), axis=1), dtype=np.int64)
    if isinstance(target, str) and target == "label":
        if labels is None:
            raise TargetError("target='label' needs labels: pass labels= or data as (x, y)")
        classes = np.asarray(labels, dtype=np.int64).reshape(-1)[:n]
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        classes = np.full(n, int(target), dtype=np.int64)
    elif (array := np.asarray(target)).dtype.kind in "iu" and array.shape == (n,):
        classes = array.astype(np.int64)
    else:
        raise _unsupported_target(target, n)
    if n_classes is not None and classes.size:
        _check_class_range(target, classes, n_classes())
    return classes


def _check_class_range(target: Any, classes: np.ndarray, n_classes: int) -> None:
    low, high = int(classes.min()), int(classes.max())
    if low >= 0 and high < n_classes:
        return
    bad = low if low < 0 else high
    what = "labels hold" if isinstance(target, str) else "target"
    raise TargetError(
        f"{what} class {bad}, outside the model's {n_classes} classes (0..{n_classes - 1}); "
        f"pass a class index in 0..{n_classes - 1}, 'predicted' or 'label'"
    )


def scores_width(scores: Callable[[np.ndarray], Any], x: np.ndarray) -> Callable[[], int]:
    """How many scores the model gives one sample (from one forward pass of ``x[:1]``)."""
    return lambda: int(np.asarray(scores(x[:1])).reshape(1, -1).shape[1])


def _unsupported_target(target: Any, n: int) -> TargetError:
    return TargetError(
        f"target {target!r} is not supported for explanations; use 'predicted', 'label', "
        f"a class index or one class per sample ({n} of them)"
    )


def _inputs(run_or_data: Any) -> tuple[xr.DataArray, Any, np.ndarray | None]:
    """The inputs as a DataArray with dims, the run (or None) and labels."""
    if hasattr(run_or_data, "inputs") and hasattr(run_or_data, "layers"):
        stored = run_or_data.inputs()
        if stored is None:
            raise ViewError(
                f"the run at {run_or_data.path!r} stores no inputs; capture it with "
                f"keep_inputs=True, or pass the data itself"
            )
        labels = run_or_data.labels
        return stored.load(), run_or_data, None if labels is None else labels.values
    x, labels = run_or_data, None
    if isinstance(run_or_data, tuple) and len(run_or_data) == 2:
        x, labels = run_or_data
    x = np.asarray(x)
    dims = ("sample", *(f"dim_{i}" for i in range(x.ndim - 1)))
    return xr.DataArray(x, dims=dims, coords={"sample": np.arange(len(x))}), None, labels


def attribute(
    model: Any,
    run_or_data: Any,
    method: str = "integrated_gradients",
    *,
    target: Any = "predicted",
    labels: Any = None,
    n_samples: int = 16,
    sigma: float | None = None,
    seed: int = 0,
    steps: int = 32,
    baseline: float | np.ndarray = 0.0,
    rule: str = "gausslegendre",
    batch_size: int = 32,
    store: bool = True,
    backend: Any = None,
) -> xr.DataArray:
    """Input attributions of ``model`` on a run's stored inputs (or on data), stored in the run.

    Parameters
    ----------
    model : object
        The model the run was captured from (Keras or torch, one input).
    run_or_data : tensortap.Run, array or (x, y)
        A run with stored inputs (the result is written into it as explanation
        ``method``), or the inputs themselves.
    method : str
        One of :data:`ATTRIBUTION_METHODS`.
    target : "predicted", "label", int or array of int
    n_samples, sigma, seed
        SmoothGrad: copies, noise std in input units (default 15 % of the inputs'
        max - min, Smilkov et al.'s noise level), and the NumPy seed.
    steps, baseline, rule
        Integrated Gradients: path points, baseline, quadrature rule.
    batch_size : int
        Rows (copies or path points of samples) per compiled step.
    store : bool
        Write the result into the run (when given a run).

    Returns
    -------
    xarray.DataArray
        The input's dims (``sample`` first), float32; attrs ``method``, ``target`` and
        the method's parameters.
    """
    from tensortap.core.engine import resolve_backend

    if method not in ATTRIBUTION_METHODS:
        raise ViewError(
            f"unknown attribution method {method!r}; choose one of: {', '.join(ATTRIBUTION_METHODS)}"
        )
    inputs, run, data_labels = _inputs(run_or_data)
    chosen: Any = resolve_backend(model, backend)
    grad_op = getattr(chosen, "input_gradients", None)
    if grad_op is None:
        raise UnsupportedModelError(
            f"backend {chosen.name!r} cannot compute input gradients; explanations need the "
            f"torch or tensorflow backend"
        )
    x = np.asarray(inputs.values)
    label_values = data_labels if labels is None else np.asarray(labels)
    classes = resolve_classes(
        target,
        len(x),
        lambda: chosen.scores(model, x),
        label_values,
        n_classes=scores_width(lambda batch: chosen.scores(model, batch), x),
    )

    def gradient(batch: np.ndarray, cls: np.ndarray) -> np.ndarray:
        return np.asarray(grad_op(model, batch, cls)[0])

    params: dict[str, Any] = {}
    if method == "saliency":
        values = saliency(gradient, x, classes, batch_size=batch_size)
    elif method == "gradient_x_input":
        values = gradient_x_input(gradient, x, classes, batch_size=batch_size)
    elif method == "smoothgrad":
        sd = float(sigma) if sigma is not None else 0.15 * float(x.max() - x.min())
        params = {"n_samples": n_samples, "sigma": sd, "seed": seed}
        values = smoothgrad(
            gradient, x, classes, n_samples=n_samples, sigma=sd, seed=seed, batch_size=batch_size
        )
    else:
        params = {"steps": steps, "rule": rule, "baseline": float(np.mean(baseline))}
        values = integrated_gradients(
            gradient, x, classes, steps=steps, baseline=baseline, rule=rule, batch_size=batch_size
        )
    result = inputs.copy(data=values.astype(np.float32))
    result.name = method
    result.attrs = {
        "long_name": f"{method.replace('_', ' ')} attribution",
        "method": method,
        "kind": "input attribution",
        "target": target if isinstance(target, str) else "classes",
        "classes": classes.tolist(),
        **params,
    }
    if run is not None and store:
        from tensortap.core.explanation_store import write_explanation

        write_explanation(run, method, result)
    return result
