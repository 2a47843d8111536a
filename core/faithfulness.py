"""Faithfulness of explanations: deletion and insertion AUC (Petsiuk et al. 2018).

Deletion removes the pixels an explanation ranks highest first (replacing them with a
baseline) and follows the class probability down; insertion starts from a blurred copy and
puts the pixels back in the same order.  A faithful map gives a low deletion AUC and a high
insertion AUC.  Each method's map comes from the run (an offline CAM, a stored model
explanation, or a stored input attribution), so several methods can be ranked on the same
samples with one model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from tensortap.core.attribution import ATTRIBUTION_METHODS, resolve_classes, scores_width
from tensortap.core.cam import CAM_METHODS, cam, input_size, resize_bilinear
from tensortap.core.errors import ViewError
from tensortap.core.explain import MODEL_METHODS, _spatial_axes, explanation_name, softmax

__all__ = ["auc", "blur", "deletion_insertion", "faithfulness", "read_faithfulness"]

Scores = Callable[[np.ndarray], np.ndarray]


def auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled evenly on [0, 1] (last axis), trapezoid rule."""
    curve = np.asarray(curve, dtype=np.float64)
    return np.asarray((curve[..., 1:] + curve[..., :-1]).sum(axis=-1) / (2 * (curve.shape[-1] - 1)))


def blur(x: np.ndarray, dims: Sequence[str], sigma: float = 5.0) -> np.ndarray:
    """Separable Gaussian blur over the height and width axes (edges reflected)."""
    h_axis, w_axis, _ = _spatial_axes(dims)
    radius = max(1, int(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = np.asarray(x, dtype=np.float64)
    for axis in (h_axis, w_axis):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        length = out.shape[axis]
        blurred = np.zeros_like(out)
        for i, weight in enumerate(kernel):
            blurred += weight * np.take(padded, np.arange(i, i + length), axis=axis)
        out = blurred
    return np.asarray(out, dtype=x.dtype)


def deletion_insertion(
    x: np.ndarray,
    dims: Sequence[str],
    maps: np.ndarray,
    classes: np.ndarray,
    scores: Scores,
    *,
    steps: int = 32,
    baseline: float = 0.0,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Deletion and insertion curves and their AUCs.

    Pixels are ranked by ``maps`` (descending; ties by position).  After step
    :math:`k = 0..K`, the top :math:`\lceil k HW / K \rceil` pixels (all channels) are

    - deletion: set to ``baseline`` in :math:`x`;
    - insertion: copied from :math:`x` into a blurred copy of :math:`x`;

    and the curve is :math:`\mathrm{softmax}(f(\cdot))_c`.  AUC: trapezoid on [0, 1].
    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018, https://arxiv.org/abs/1806.07421 (section 4.1).

    Parameters
    ----------
    x : ndarray
        Inputs, batch first, dims ``dims``.
    maps : ndarray, shape (sample, height, width)
        At the input's size.
    steps : int
        :math:`K`.

    Returns
    -------
    deletion_auc, insertion_auc : ndarray, shape (sample,)
    deletion_curve, insertion_curve : ndarray, shape (sample, steps + 1)
    """
    h_axis, w_axis, _ = _spatial_axes(dims)
    height, width = x.shape[h_axis], x.shape[w_axis]
    if maps.shape[1:] != (height, width):
        raise ViewError(f"maps {maps.shape[1:]} must have the input's size {(height, width)}")
    pixels = height * width
    counts = np.ceil(np.arange(steps + 1) * pixels / steps).astype(int)
    blurred = blur(x, dims, blur_sigma)
    curves = np.zeros((2, len(x), steps + 1))
    for s in range(len(x)):
        order = np.argsort(-maps[s].reshape(-1), kind="stable")
        rank = np.empty(pixels, dtype=np.int64)
        rank[order] = np.arange(pixels)
        # keep[k] is True where pixel is among the first counts[k]: (steps+1, h, w)
        chosen = (rank[None, :] < counts[:, None]).reshape(steps + 1, height, width)
        shape = [1] * x.ndim
        shape[0], shape[h_axis], shape[w_axis] = steps + 1, height, width
        mask = chosen.reshape(shape)
        sample = x[s : s + 1]
        deleted = np.where(mask, np.asarray(baseline, dtype=x.dtype), sample)
        inserted = np.where(mask, sample, blurred[s : s + 1])
        for which, batch in enumerate((deleted, inserted)):
            for start in range(0, steps + 1, batch_size):
                part = batch[start : start + batch_size].astype(x.dtype)
                curves[which, s, start : start + len(part)] = softmax(scores(part))[:, classes[s]]
    return auc(curves[0]), auc(curves[1]), curves[0], curves[1]


def _method_maps(run: Any, method: str, layer: str | None, size: tuple[int, int]) -> np.ndarray:
    """One method's ``(sample, h, w)`` maps at the input's size, read from the run."""
    from tensortap.core.explanation_store import read_explanation

    if method in CAM_METHODS:
        if layer is None:
            raise ViewError(f"CAM method {method!r} needs layer=")
        return np.asarray(cam(run, layer, method, size=size).values, dtype=np.float64)
    if method in MODEL_METHODS:
        stored = read_explanation(
            run, explanation_name(method, None if method == "occlusion" else layer)
        )
        return np.asarray(stored.values, dtype=np.float64)
    if method in ATTRIBUTION_METHODS:
        stored = read_explanation(run, method)
        extra = [d for d in stored.dims if d not in ("sample", "height", "width")]
        # pixel importance: the attribution's magnitude summed over channels
        magnitude = abs(stored)
        values = magnitude.sum(dim=extra) if extra else magnitude
        return np.asarray(values.transpose("sample", "height", "width").values, dtype=np.float64)
    raise ViewError(
        f"unknown method {method!r}; choose CAM methods ({', '.join(CAM_METHODS)}), "
        f"{', '.join(MODEL_METHODS)} or {', '.join(ATTRIBUTION_METHODS)}"
    )


def faithfulness(
    model: Any,
    run: Any,
    methods: Sequence[str],
    layer: str | None = None,
    *,
    target: Any = "predicted",
    steps: int = 32,
    baseline: float = 0.0,
    store: bool = True,
    backend: Any = None,
) -> xr.Dataset:
    """Deletion and insertion AUC of several methods on every sample of a run.

    Parameters
    ----------
    model : object
        The run's model.
    run : tensortap.Run
        With stored inputs; model explanations and input attributions must have been
        computed (``tt.explain``) before they are scored.
    methods : sequence of str
        CAM methods (with ``layer``), ``scorecam`` / ``ablationcam`` (with ``layer``),
        ``occlusion``, input attributions.
    store : bool
        Write ``deletion_auc`` and ``insertion_auc`` into the run.

    Returns
    -------
    xarray.Dataset
        ``deletion_auc(method, sample)``, ``insertion_auc(method, sample)`` and the curves
        ``deletion(method, sample, step)``, ``insertion(method, sample, step)``.
    """
    from tensortap.core.engine import resolve_backend

    chosen: Any = resolve_backend(model, backend)
    stored = run.inputs()
    if stored is None:
        raise ViewError(f"the run at {run.path!r} stores no inputs; capture with keep_inputs=True")
    x = np.asarray(stored.values)
    dims = tuple(str(d) for d in stored.dims)
    size = input_size(run) or (x.shape[_spatial_axes(dims)[0]], x.shape[_spatial_axes(dims)[1]])

    def scores(batch: np.ndarray) -> np.ndarray:
        return np.asarray(chosen.scores(model, batch))

    labels = None if run.labels is None else run.labels.values
    classes = resolve_classes(
        target, len(x), lambda: scores(x), labels, n_classes=scores_width(scores, x)
    )
    results = []
    for method in methods:
        maps = _method_maps(run, method, layer, (int(size[0]), int(size[1])))
        if maps.shape[1:] != tuple(size):
            maps = resize_bilinear(maps, (int(size[0]), int(size[1])))
        results.append(
            deletion_insertion(x, dims, maps, classes, scores, steps=steps, baseline=baseline)
        )
    samples = stored["sample"].values if "sample" in stored.coords else np.arange(len(x))
    coords = {"method": list(methods), "sample": samples, "step": np.linspace(0, 1, steps + 1)}
    dataset = xr.Dataset(
        {
            "deletion_auc": (("method", "sample"), np.stack([r[0] for r in results])),
            "insertion_auc": (("method", "sample"), np.stack([r[1] for r in results])),
            "deletion": (("method", "sample", "step"), np.stack([r[2] for r in results])),
            "insertion": (("method", "sample", "step"), np.stack([r[3] for r in results])),
        },
        coords=coords,
        attrs={"layer": layer or "", "steps": steps, "baseline": baseline},
    )
    if store:
        from tensortap.core.explanation_store import write_explanation

        for name in ("deletion_auc", "insertion_auc"):
            values = dataset[name].transpose("sample", "method")
            write_explanation(
                run,
                name,
                values.drop_vars("method").assign_attrs(
                    methods=list(methods), layer=layer or "", steps=steps, kind="faithfulness"
                ),
            )
    return dataset


def read_faithfulness(run: Any) -> xr.Dataset:
    """The stored ``deletion_auc`` / ``insertion_auc`` of a run as ``(method, sample)``."""
    from tensortap.core.explanation_store import read_explanation

    arrays = {}
    for name in ("deletion_auc", "insertion_auc"):
        stored = read_explanation(run, name)
        arrays[name] = stored.assign_coords(method=list(stored.attrs["methods"])).transpose(
            "method", "sample"
        )
    return xr.Dataset(arrays)
