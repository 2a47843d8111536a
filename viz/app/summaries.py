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


def input_thumbnail(run: Any, sample: int, name: str | None = None) -> hv.Element:
    """The stored model input of one sample, as a small picture.

    Images (``height``, ``width`` and optionally ``channel``) become an ``hv.RGB`` (three
    channels) or a grey ``hv.Image``; anything else becomes a curve of its values.

    Parameters
    ----------
    run
        An open run.
    sample
        Position of the sample among the committed ones.
    name
        Which input of a multi-input model (default: the first).
    """
    from tensortap.viz._run import indexed

    data = indexed(run).inputs(name).isel(sample=sample)  # zarr directly: no Dask graph
    values = np.asarray(data.values, dtype="float64")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    # A thumbnail is a picture, not a plot: no toolbar, no axes.
    size = {
        "width": THUMBNAIL_PX,
        "height": THUMBNAIL_PX,
        "xaxis": None,
        "yaxis": None,
        "toolbar": None,
        "default_tools": [],
    }
    y_dim, x_dim = dim_named(data, "height", "y"), dim_named(data, "width", "x")
    if y_dim and x_dim:
        channel = dim_named(data, "channel")
        order = [y_dim, x_dim] + ([channel] if channel else [])
        image = data.copy(data=scaled).transpose(*order, ...).values
        height, width = image.shape[:2]
        bounds = (0, 0, width, height)
        if image.ndim == 3 and image.shape[2] >= 3:
            return hv.RGB(np.clip(image[..., :3], 0, 1)[::-1], bounds=bounds).opts(**size)
        grey = image if image.ndim == 2 else image.mean(axis=2)
        return hv.Image(grey[::-1], bounds=bounds).opts(cmap="gray", clim=(0, 1), **size)
    flat = scaled.ravel()
    return hv.Curve((np.arange(flat.size), flat), "index", "value").opts(
        width=THUMBNAIL_PX * 2, height=THUMBNAIL_PX // 2, toolbar=None, default_tools=[]
    )


def layer_table(run: Any) -> pd.DataFrame:
    """One row per layer: key, type, stored shape and summary statistics.

    Statistics are pooled from the stored per-channel stats
    (:func:`tensortap.viz.distributions.layer_summary`), so no activation is read; *dead*
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
            stats = run.stats(key)
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
