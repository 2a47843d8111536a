"""Explanations that need the model: ScoreCAM, AblationCAM, occlusion (``tt.explain``).

The activations come from the run (as for the offline CAMs); the model is only asked for
class scores of modified inputs (ScoreCAM, occlusion) or of the model with one channel
zeroed (AblationCAM).  Framework-free: the backend provides ``scores(model, x)``
(pre-softmax, ``(sample, class)``) and, for AblationCAM, ``ablated_scores``.  Results are
``(sample, y, x)`` maps at the input's size, in [0, 1], stored in the run
(:mod:`tensortap.core.explanation_store`) next to the input attributions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from tensortap.core.attribution import (
    ATTRIBUTION_METHODS,
    attribute,
    resolve_classes,
    scores_width,
)
from tensortap.core.cam import _spatial, input_size, normalize_maps, resize_bilinear
from tensortap.core.errors import UnsupportedModelError, ViewError

__all__ = [
    "MODEL_METHODS",
    "ablationcam",
    "explain",
    "explanation_name",
    "occlusion",
    "scorecam",
    "softmax",
]

#: Methods of :func:`explain` that run the model (besides the input attributions).
MODEL_METHODS = ("scorecam", "ablationcam", "occlusion")

Scores = Callable[[np.ndarray], np.ndarray]
Resize = Callable[[np.ndarray, tuple[int, int]], np.ndarray]


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _spatial_axes(input_dims: Sequence[str]) -> tuple[int, int, int | None]:
    """Axes (batch included) of height, width and channel in the model input."""
    dims = list(input_dims)
    if "height" not in dims or "width" not in dims:
        raise ViewError(
            f"the model input has dims {tuple(dims)}: these methods need an image input"
        )
    channel = dims.index("channel") if "channel" in dims else None
    return dims.index("height"), dims.index("width"), channel


def _broadcast_mask(mask: np.ndarray, x: np.ndarray, dims: Sequence[str]) -> np.ndarray:
    """``(n, h, w)`` masks shaped to multiply inputs with dims ``dims`` (batch first)."""
    h_axis, w_axis, c_axis = _spatial_axes(dims)
    shape = [1] * x.ndim
    shape[0], shape[h_axis], shape[w_axis] = mask.shape[0], mask.shape[1], mask.shape[2]
    return mask.reshape(shape) if h_axis < w_axis else mask.transpose(0, 2, 1).reshape(shape)


def scorecam(
    activations: np.ndarray,
    x: np.ndarray,
    input_dims: Sequence[str],
    classes: np.ndarray,
    scores: Scores,
    *,
    resize: Resize | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    r"""Score-CAM: channels weighted by the class confidence of the input they mask.

    .. math::

        H_k = \mathrm{norm}\big(\mathrm{up}(A_k)\big), \quad
        w_k = \mathrm{softmax}\big(f(x \odot H_k)\big)_c, \quad
        L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops 2020, https://arxiv.org/abs/1910.01279 (the confidence
    without the baseline's, as tf-keras-vis's ``Scorecam``).

    Parameters
    ----------
    activations : ndarray, shape (sample, height, width, channel)
    x : ndarray
        The model inputs (batch first), dims ``input_dims``.
    classes : ndarray of int, shape (sample,)
    scores : callable
        ``scores(x) -> (n, classes)`` pre-softmax.
    resize : callable, optional
        ``resize(maps, (h, w))``; bilinear by default.

    Returns
    -------
    ndarray, shape (sample, height, width) at the layer's resolution, not normalised.
    """
    resize = resize or resize_bilinear
    h_axis, w_axis, _ = _spatial_axes(input_dims)
    size = (x.shape[h_axis], x.shape[w_axis])
    n, _, _, channels = activations.shape
    weights = np.zeros((n, channels))
    for s in range(n):
        up = np.asarray(resize(np.moveaxis(activations[s], -1, 0), size))  # (channel, h, w)
        low = up.min(axis=(1, 2), keepdims=True)
        high = up.max(axis=(1, 2), keepdims=True)
        masks = (up - low) / (high - low + 1e-7)
        sample = x[s : s + 1]
        masked = sample * _broadcast_mask(masks, np.repeat(sample, channels, 0), input_dims)
        for start in range(0, channels, batch_size):
            part = masked[start : start + batch_size].astype(x.dtype)
            weights[s, start : start + len(part)] = softmax(scores(part))[:, classes[s]]
        if progress is not None:
            progress(1)
    return np.asarray(np.maximum(np.einsum("nhwc,nc->nhw", activations, weights), 0.0))


def ablationcam(
    activations: np.ndarray,
    x: np.ndarray,
    classes: np.ndarray,
    scores: Scores,
    ablated: Callable[[np.ndarray, int], np.ndarray],
    *,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    r"""Ablation-CAM: channels weighted by the score lost when each is zeroed.

    .. math:: w_k = \frac{y_c - y_c^{(k)}}{y_c}, \qquad L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    with :math:`y_c^{(k)}` the class score with channel :math:`k` of the layer set to 0.
    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network
    via Gradient-free Localization", WACV 2020, https://doi.org/10.1109/WACV45572.2020.9093360

    Parameters
    ----------
    activations : ndarray, shape (sample, height, width, channel)
    ablated : callable
        ``ablated(x, k) -> (n, classes)`` scores with channel ``k`` zeroed.
    """
    rows = np.arange(len(x))
    base = scores(x)[rows, classes]
    channels = activations.shape[-1]
    weights = np.zeros((len(x), channels))
    safe = np.where(base != 0.0, base, 1.0)
    for k in range(channels):
        weights[:, k] = (base - ablated(x, k)[rows, classes]) / safe
        if progress is not None:
            progress(1)
    return np.asarray(np.maximum(np.einsum("nhwc,nc->nhw", activations, weights), 0.0))


def occlusion(
    x: np.ndarray,
    input_dims: Sequence[str],
    classes: np.ndarray,
    scores: Scores,
    *,
    window: int = 8,
    stride: int = 4,
    baseline: float = 0.0,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    r"""Occlusion sensitivity: the score lost when a square patch is replaced by a baseline.

    .. math:: M(i, j) = \frac{1}{|W_{ij}|} \sum_{p \in W_{ij}} \big(S_c(x) - S_c(x_{\setminus p})\big)

    over the windows :math:`W_{ij}` (``window`` x ``window``, every ``stride`` pixels, all
    channels) that cover pixel :math:`(i, j)`; the scores are pre-softmax.
    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
    https://arxiv.org/abs/1311.2901 (windows and averaging as Captum's ``Occlusion``).

    Returns
    -------
    ndarray, shape (sample, height, width) at the input's resolution.
    """
    h_axis, w_axis, _ = _spatial_axes(input_dims)
    height, width = x.shape[h_axis], x.shape[w_axis]
    tops = range(0, height - window + 1, stride)
    lefts = range(0, width - window + 1, stride)
    windows = [(t, left) for t in tops for left in lefts]
    rows = np.arange(len(x))
    base = scores(x)[rows, classes]
    total = np.zeros((len(x), height, width))
    count = np.zeros((height, width))
    for t, left in windows:
        count[t : t + window, left : left + window] += 1
    for s in range(len(x)):
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            copies = np.repeat(x[s : s + 1], len(chunk), axis=0)
            for i, (t, left) in enumerate(chunk):
                index: list[Any] = [i] + [slice(None)] * (x.ndim - 1)
                index[h_axis], index[w_axis] = slice(t, t + window), slice(left, left + window)
                copies[tuple(index)] = baseline
            drops = base[s] - scores(copies)[:, classes[s]]
            for drop, (t, left) in zip(drops, chunk, strict=True):
                total[s, t : t + window, left : left + window] += drop
        if progress is not None:
            progress(1)
    return np.asarray(total / np.where(count > 0, count, 1.0))


def explanation_name(method: str, layer: str | None = None) -> str:
    """The name an explanation is stored under: ``method`` or ``method-layer``."""
    return method if layer is None else f"{method}-{layer}"


def explain(
    model: Any,
    run: Any,
    method: str,
    layer: str | None = None,
    *,
    target: Any = "predicted",
    window: int = 8,
    stride: int = 4,
    baseline: float = 0.0,
    batch_size: int = 32,
    store: bool = True,
    progress: bool = False,
    backend: Any = None,
    **options: Any,
) -> xr.DataArray:
    """Explain a run's samples with the model; the result is stored in the run.

    Parameters
    ----------
    model : object
        The model the run was captured from.
    run : tensortap.Run
        A run with stored inputs (and, for ScoreCAM / AblationCAM, ``layer``'s activations).
    method : str
        ``scorecam``, ``ablationcam``, ``occlusion``, or an input
        attribution (``saliency``, ``gradient_x_input``, ``smoothgrad``,
        ``integrated_gradients``; see :func:`tensortap.core.attribution.attribute`).
    layer : str, optional
        The spatial (or token) layer, for ScoreCAM and AblationCAM.
    target : "predicted", "label", int or array of int
    window, stride, baseline
        Occlusion's square patch, its step, and the value it is filled with.
    progress : bool
        A progress bar over samples (tqdm).
    **options
        Passed on to :func:`~tensortap.core.attribution.attribute`.

    Returns
    -------
    xarray.DataArray
        CAM-like methods: ``(sample, y, x)`` in [0, 1] at the input's size.  Input
        attributions: the input's dims.
    """
    if method in ATTRIBUTION_METHODS:
        return attribute(
            model, run, method, target=target, batch_size=batch_size, store=store,
            backend=backend, **options,
        )  # fmt: skip
    if method not in MODEL_METHODS:
        raise ViewError(
            f"unknown explanation method {method!r}; choose one of: "
            f"{', '.join(MODEL_METHODS + ATTRIBUTION_METHODS)}"
        )
    from tensortap.core.engine import resolve_backend

    chosen: Any = resolve_backend(model, backend)
    stored = run.inputs()
    if stored is None:
        raise ViewError(
            f"the run at {run.path!r} stores no inputs; capture it with keep_inputs=True"
        )
    x = np.asarray(stored.values)
    dims = tuple(str(d) for d in stored.dims)

    def scores(batch: np.ndarray) -> np.ndarray:
        return np.asarray(chosen.scores(model, batch))

    labels = None if run.labels is None else run.labels.values
    classes = resolve_classes(
        target, len(x), lambda: scores(x), labels, n_classes=scores_width(scores, x)
    )
    a: np.ndarray | None = None
    if method == "occlusion":
        layer = None  # occlusion reads no layer
    else:  # a bad layer fails before the progress bar starts (one line on the CLI)
        if layer is None:
            raise ViewError(f"{method} needs layer=: the key of a spatial layer in the run")
        a = np.asarray(_spatial(run.activation(layer), layer).values, dtype=np.float64)
    bar = _progress_bar(progress, len(x), method)
    tick = None if bar is None else bar.update
    try:
        if a is None:
            maps = occlusion(
                x, dims, classes, scores, window=window, stride=stride, baseline=baseline,
                batch_size=batch_size, progress=tick,
            )  # fmt: skip
        else:
            if method == "scorecam":
                maps = scorecam(a, x, dims, classes, scores, batch_size=batch_size, progress=tick)
            else:
                ablated = getattr(chosen, "ablated_scores", None)
                if ablated is None:
                    raise UnsupportedModelError(
                        f"ablationcam needs a backend that can zero a layer's channel; "
                        f"{chosen.name!r} cannot (use the torch or tensorflow backend, or scorecam)"
                    )
                maps = ablationcam(
                    a, x, classes, scores, lambda b, k: ablated(model, layer, b, k), progress=tick
                )
    finally:
        if bar is not None:
            bar.close()
    size = input_size(run) or maps.shape[1:]
    maps = normalize_maps(maps)
    if maps.shape[1:] != tuple(size):
        maps = np.clip(resize_bilinear(maps, (int(size[0]), int(size[1]))), 0.0, 1.0)
    samples = stored["sample"].values if "sample" in stored.coords else np.arange(len(x))
    result = xr.DataArray(
        maps.astype(np.float32),
        dims=("sample", "y", "x"),
        coords={"sample": samples, "y": np.arange(maps.shape[1]), "x": np.arange(maps.shape[2])},
        name="cam",
        attrs={
            "long_name": f"{method} map" + ("" if layer is None else f" of {layer}"),
            "units": "normalised",
            "method": method,
            "layer": layer or "",
            "kind": "model explanation",
            "target": target if isinstance(target, str) else "classes",
            "classes": classes.tolist(),
            **({"window": window, "stride": stride} if method == "occlusion" else {}),
        },
    )
    if store:
        from tensortap.core.explanation_store import write_explanation

        write_explanation(run, explanation_name(method, layer), result)
    return result


def _progress_bar(enabled: bool, total: int, method: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=method, unit="sample")
