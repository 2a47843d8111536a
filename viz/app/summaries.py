"""What the app's sidebar shows of a run without drawing a view: the input thumbnail and the
layer table."""

from __future__ import annotations

import logging
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd

from tensortap.core.errors import TensortapError

__all__ = [
    "THUMBNAIL_PX",
    "dim_named",
    "input_thumbnail",
    "layer_table",
    "sample_description",
]

log = logging.getLogger(__name__)

THUMBNAIL_PX = 150


def dim_named(array: Any, *names: str) -> str | None:
    """The first of ``names`` that is a dimension of ``array`` (dims are found by name)."""
    return next((name for name in names if name in array.dims), None)


def input_thumbnail(run: Any, sample: int, name: str | None = None) -> Any:
    """The stored model input of one sample, as a small picture.

    Images (``height``, ``width`` and optionally ``channel``) become PNG bytes (a picture
    needs no Bokeh figure: a plot cost ~0.1 s to build on a page's first view and ~15 ms
    to update); anything else becomes an ``hv.Curve`` of its values.

    Parameters
    ----------
    run
        An open run.
    sample
        Position of the sample among the committed ones.
    name
        Which input of a multi-input model (default: the first).

    Returns
    -------
    bytes or holoviews.Curve
        A PNG of at most :data:`THUMBNAIL_PX` pixels a side (RGB for three or more
        channels, else grey), min-max scaled; or the curve.
    """
    from tensortap.viz._run import indexed

    data = indexed(run).inputs(name).isel(sample=sample)  # zarr directly: no Dask graph
    values = np.asarray(data.values, dtype="float64")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0)
    y_dim, x_dim = dim_named(data, "height", "y"), dim_named(data, "width", "x")
    if y_dim and x_dim:
        channel = dim_named(data, "channel")
        order = [y_dim, x_dim] + ([channel] if channel else [])
        image = data.copy(data=scaled).transpose(*order, ...).values
        if image.ndim == 3 and image.shape[2] >= 3:
            image = image[..., :3]
        elif image.ndim == 3:
            image = image.mean(axis=2)
        return _png(np.clip(image, 0, 1))
    flat = scaled.ravel()
    return hv.Curve((np.arange(flat.size), flat), "index", "value").opts(
        width=THUMBNAIL_PX * 2, height=THUMBNAIL_PX // 2, toolbar=None, default_tools=[]
    )


def _png(image: np.ndarray) -> bytes:
    """``image`` (rows × columns [× RGB], values in [0, 1]) as PNG bytes, scaled so that its
    longer side is :data:`THUMBNAIL_PX` pixels: whole pixels drawn as blocks when
    enlarged (a 12×12 input stays legible), averaged when reduced."""
    import cv2

    rows, columns = image.shape[:2]
    zoom = THUMBNAIL_PX / max(rows, columns)
    size = (max(1, round(columns * zoom)), max(1, round(rows * zoom)))
    pixels = np.round(image * 255).astype(np.uint8)
    pixels = cv2.resize(
        pixels, size, interpolation=cv2.INTER_NEAREST if zoom >= 1 else cv2.INTER_AREA
    )
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("could not encode the thumbnail")
    return encoded.tobytes()


def layer_table(run: Any) -> pd.DataFrame:
    """One row per layer: key, type, stored shape and summary statistics.

    Statistics are pooled from the stored per-channel stats
    (:func:`tensortap.viz.distributions.layer_summary`), so no activation is read (nor
    the per-sample statistics, with a :class:`~tensortap.viz.app.shared.CachedRun`); *dead*
    is the fraction of channels that never exceeded 0 (as in :func:`viz.dead_units`).

    Parameters
    ----------
    run
        An open run.
    """
    from tensortap.viz.distributions import layer_summary

    rows = []
    for key in run.layers:
        node = dict(run.node(key) or {})
        row: dict[str, Any] = {"layer": key, "type": node.get("layer_type", "")}
        try:
            row["shape"] = " × ".join(str(n) for n in run.activation(key).shape[1:])
            # Only the per-channel variables: a run's full stats also hold its
            # samples × channels maxima and means, one chunk read per block of samples.
            summary_stats = getattr(run, "summary_stats", None)
            stats = summary_stats(key) if summary_stats is not None else run.stats(key)
            summary = layer_summary(stats)
            seen = np.asarray(stats["count"].values) > 0
            peak = np.asarray(stats["max"].values, dtype="float64")[seen]
            row.update(
                mean=summary["mean"],
                std=summary["std"],
                zeros=summary["zero_fraction"],
                dead=float(np.mean(peak <= 0)) if peak.size else np.nan,
            )
        except TensortapError as err:  # a layer with damaged stats still gets a row
            log.warning("layer %s: %s", key, err)
        rows.append(row)
    columns = ["layer", "type", "shape", "mean", "std", "zeros", "dead"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["shape"] = frame["shape"].fillna("")
    return frame.set_index("layer")


def sample_description(run: Any, sample: int, row: Any) -> str:
    """Markdown beside the thumbnail: sample, label, prediction with confidence, and
    whether it was misclassified (``row``: the sample's row of ``sample_table``)."""
    names = run.attrs.get("class_names") or []

    def named(value: Any) -> str:
        c = int(value)
        return f"{c} ({names[c]})" if 0 <= c < len(names) else str(c)

    parts = [f"**sample {sample}**"]
    if not pd.isna(row["label"]):
        parts.append(f"label **{named(row['label'])}**")
    if not pd.isna(row["prediction"]):
        confidence = row["confidence"]
        sure = "" if pd.isna(confidence) else f" ({100 * float(confidence):.0f}%)"
        parts.append(f"prediction **{named(row['prediction'])}**{sure}")
    if not pd.isna(row["correct"]) and not bool(row["correct"]):
        parts.append('<span style="color:#c62828">misclassified</span>')
    return "<br>".join(parts)
