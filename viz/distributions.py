"""Activation distributions from the stored statistics — never from the activations.

A layer's histogram has fixed edges and exact counts (``core/stats.py``), so one layer's
distribution and a whole model's summary are drawn from a few kB per layer, however many
GB of activations the run holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
import xarray as xr

from tensortap.core.errors import ViewError
from tensortap.viz._backend import style

__all__ = ["distribution", "distributions", "histogram_quantiles", "layer_summary"]

#: Quantiles drawn by :func:`distributions`: whiskers, box, median.
QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
#: One colour per run in :func:`distributions` (Tableau 10).
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def histogram_quantiles(stats: xr.Dataset, quantiles: Sequence[float]) -> np.ndarray:
    """Quantiles of a layer's values from its stored histogram.

    The cumulative count at each edge, :math:`C_k = u + \\sum_{j<k} h_j` (``u`` the
    underflow), is inverted by linear interpolation inside the bin, i.e. values are taken
    as uniform within a bin.  Quantiles falling in the underflow (overflow) are clamped to
    the first (last) edge; the run's ``min``/``max`` give the true extremes.
    """
    counts = np.asarray(stats["histogram"].values, dtype=np.float64)
    edges = np.asarray(stats["bin_edges"].values, dtype=np.float64)
    underflow = float(stats["underflow"].values) if "underflow" in stats else 0.0
    overflow = float(stats["overflow"].values) if "overflow" in stats else 0.0
    cumulative = underflow + np.concatenate([[0.0], np.cumsum(counts)])
    total = cumulative[-1] + overflow
    if total <= 0:
        return np.full(len(quantiles), np.nan)
    return np.interp(np.asarray(quantiles) * total, cumulative, edges)


def layer_summary(stats: xr.Dataset) -> dict[str, float]:
    """Whole-layer count, mean, std, min, max and zero fraction from per-channel stats.

    Channels are pooled exactly: :math:`\\mu = \\sum_c n_c \\mu_c / N` and
    :math:`\\sigma^2 = \\sum_c n_c(\\sigma_c^2 + (\\mu_c - \\mu)^2) / N`.
    """
    count = np.asarray(stats["count"].values, dtype=np.float64)
    total = float(count.sum())
    if total == 0:
        nan = float("nan")
        return {"count": 0.0, "mean": nan, "std": nan, "min": nan, "max": nan, "zero_fraction": nan}
    mean_c = np.asarray(stats["mean"].values, dtype=np.float64)
    std_c = np.asarray(stats["std"].values, dtype=np.float64)
    mean = float((count * mean_c).sum() / total)
    variance = float((count * (std_c**2 + (mean_c - mean) ** 2)).sum() / total)
    zero = np.asarray(stats["zero_fraction"].values, dtype=np.float64)
    return {
        "count": total,
        "mean": mean,
        "std": variance**0.5,
        "min": float(np.nanmin(stats["min"].values)),
        "max": float(np.nanmax(stats["max"].values)),
        "zero_fraction": float((count * zero).sum() / total),
    }


def _value_label(run: Any, key: str) -> str:
    try:
        node = run.node(key) or {}
    except Exception:  # a reader without .node(): the label is cosmetic
        node = {}
    return str(node.get("long_name") or f"{key} activation")


#: Automatic log counts when the fullest bin holds more than this share of all values
#: (the spike of exact zeros of a ReLU layer flattens every other bar on a linear axis).
SPIKE_SHARE = 0.2
#: Colour of the bars that stand for the values outside the fixed edges.
OUTSIDE_COLOUR = "#dd8452"


def spike_dominates(counts: np.ndarray) -> bool:
    """Whether one bin holds more than :data:`SPIKE_SHARE` of the histogram's values."""
    total = float(np.sum(counts))
    return bool(total > 0 and float(np.max(counts)) > SPIKE_SHARE * total)


def _outside_bars(
    stats: xr.Dataset, edges: np.ndarray, log: bool, value_dim: hv.Dimension, count_dim: Any
) -> tuple[list[Any], str]:
    """Bars from each fixed edge to the layer's true min / max holding the values outside
    the edges (fixed from the first block, so later blocks can overflow them), labelled."""
    parts, words = [], []
    low, high = float(np.nanmin(stats["min"].values)), float(np.nanmax(stats["max"].values))
    width = float(edges[1] - edges[0]) if len(edges) > 1 else 1.0
    for name, start, stop, word in (
        ("underflow", min(low, edges[0] - width), edges[0], "below"),
        ("overflow", edges[-1], max(high, edges[-1] + width), "above"),
    ):
        count = int(stats[name].values) if name in stats else 0
        if not count:
            continue
        height = np.log10(1.0 + count) if log else float(count)
        bar = hv.Histogram(
            ([start, stop], [height]),
            kdims=[value_dim],
            vdims=[count_dim],
            label=f"{word} the edges",
        )
        parts.append(style(bar, color=OUTSIDE_COLOUR, alpha=0.8, bokeh={"line_color": None}))
        words.append(f"{count:,} {word} the edges (to {stop if word == 'above' else start:.3g})")
    return parts, " · ".join(words)


def distribution(run: Any, key: str, log: bool | None = None) -> hv.Overlay:
    """Histogram of every value one layer produced, from the stored histogram.

    Parameters
    ----------
    run : tensortap.Run
    key : str
        Layer key.
    log : bool, optional
        Show :math:`\\log_{10}(1 + \\text{count})`.  ``None`` (default) decides: log counts
        when one bin holds more than 20 % of the values (the spike of zeros of a ReLU layer),
        linear otherwise; the axis label says which.

    Returns
    -------
    holoviews.Overlay
        The histogram, a dashed line at the layer mean and, in another colour, bars from
        the fixed edges to the layer's true min / max holding the values that fell outside
        the edges (the title counts them).
    """
    stats = run.stats(key)  # LayerNotFoundError with suggestions; reads no activation
    counts = np.asarray(stats["histogram"].values, dtype=np.float64)
    edges = np.asarray(stats["bin_edges"].values, dtype=np.float64)
    summary = layer_summary(stats)
    if log is None:
        log = spike_dominates(counts)
    heights = np.log10(1.0 + counts) if log else counts
    count_dim = hv.Dimension("count", label="log10(1 + count)" if log else "count")
    value_dim = hv.Dimension("activation", label=_value_label(run, key))
    histogram = hv.Histogram((edges, heights), kdims=[value_dim], vdims=[count_dim])
    outside, words = _outside_bars(stats, edges, log, value_dim, count_dim)
    title = (
        f"{key}: {int(summary['count']):,} values · mean {summary['mean']:.3g} · "
        f"std {summary['std']:.3g} · zeros {summary['zero_fraction']:.1%}"
        + (f" · {words}" if words else "")
    )
    style(histogram, bokeh={"tools": ["hover"], "line_color": None}, color="#4c72b0")
    mean_line = style(
        hv.VLine(summary["mean"]),
        color="black",
        bokeh={"line_dash": "dashed"},
        matplotlib={"linestyle": "dashed"},
    )
    overlay = hv.Overlay([histogram, *outside, mean_line])
    return style(
        overlay,
        title=title,
        bokeh={"width": 640, "height": 360},
        matplotlib={"fig_inches": (7, 4), "aspect": 1.8},
    )


def _box_plot(run: Any, keys: Sequence[str]) -> hv.Overlay:
    rows = []
    for i, key in enumerate(keys):
        stats = run.stats(key)
        q = histogram_quantiles(stats, QUANTILES)
        summary = layer_summary(stats)
        rows.append((i, key, *q, summary["mean"], summary["min"], summary["max"]))
    table = np.array([[r[0], *r[2:]] for r in rows], dtype=np.float64)
    x, q01, q25, q50, q75, q99, mean, low, high = table.T
    half = 0.3
    value = hv.Dimension("activation", label="activation")
    layer = hv.Dimension("layer")
    boxes = hv.Rectangles((x - half, q25, x + half, q75), kdims=[layer, value, "x1", "y1"])
    whiskers = hv.Segments((x, q01, x, q99), kdims=[layer, value, "x1", "y1"])
    medians = hv.Segments((x - half, q50, x + half, q50), kdims=[layer, value, "x1", "y1"])
    means = hv.Scatter((x, mean), kdims=[layer], vdims=[value], label="mean")
    extremes = hv.Scatter(
        (np.r_[x, x], np.r_[low, high]), kdims=[layer], vdims=[value], label="min / max"
    )
    style(
        boxes, color="#a6c8e8", bokeh={"line_color": "#4c72b0"}, matplotlib={"edgecolor": "#4c72b0"}
    )
    style(whiskers, color="#4c72b0")
    style(medians, color="black", bokeh={"line_width": 2}, matplotlib={"linewidth": 2})
    style(means, color="#dd5555", bokeh={"size": 6}, matplotlib={"s": 20})
    style(extremes, color="grey", bokeh={"size": 3}, matplotlib={"s": 4})
    ticks = [(float(r[0]), r[1]) for r in rows]
    overlay = boxes * whiskers * medians * means * extremes
    return style(
        overlay,
        title="activation per layer (box 25–75 %, whiskers 1–99 %, line median)",
        xticks=ticks,
        xrotation=90,
        ylabel="activation",
        xlabel="layer",
        bokeh={"width": max(500, 40 * len(keys)), "height": 420},
        matplotlib={
            "aspect": max(2.0, 0.12 * len(keys)),
            "fig_inches": (max(8, 0.4 * len(keys)), 4.5),
            "legend_position": "right",
        },
    )


def _steps_plot(runs: Sequence[Any], keys: Sequence[str], steps: Sequence[Any]) -> hv.Overlay:
    layers = []
    x = np.arange(len(keys), dtype=np.float64)
    value = hv.Dimension("activation")
    for i, (run, step) in enumerate(zip(runs, steps, strict=True)):
        q = np.array([histogram_quantiles(run.stats(k), (0.25, 0.5, 0.75)) for k in keys])
        colour = PALETTE[i % len(PALETTE)]
        band = hv.Area((x, q[:, 0], q[:, 2]), kdims=["layer"], vdims=[value, "activation_high"])
        line = hv.Curve((x, q[:, 1]), kdims=["layer"], vdims=[value], label=f"step {step}")
        layers += [style(band, alpha=0.15, color=colour), style(line, color=colour)]
    overlay = hv.Overlay(layers)
    return style(
        overlay,
        title=f"median and 25–75 % band per layer across {len(runs)} steps",
        xticks=[(float(i), k) for i, k in enumerate(keys)],
        xrotation=90,
        xlabel="layer",
        ylabel="activation",
        bokeh={"width": max(500, 40 * len(keys)), "height": 420, "legend_position": "right"},
        matplotlib={
            "aspect": max(2.0, 0.12 * len(keys)),
            "fig_inches": (max(8, 0.4 * len(keys)), 4.5),
            "legend_position": "right",
        },
    )


def distributions(
    run: Any | Sequence[Any],
    steps: Sequence[Any] | None = None,
    layers: Sequence[str] | None = None,
) -> hv.Overlay:
    """Every layer's distribution in one view, from the stored statistics.

    Parameters
    ----------
    run : tensortap.Run or sequence of Run
        One run: a box plot per layer (quartiles, 1–99 % whiskers, median, mean, min/max)
        from each layer's histogram.  Several runs of the same model (e.g. training steps
        from ``tt.CaptureCallback``): one median line with its 25–75 % band per run.
    steps : sequence, optional
        Labels of the runs (default: each run's ``attrs["step"]``, ``attrs["epoch"]``, or
        its position).
    layers : sequence of str, optional
        Layers to show (default: every layer, in model order; with several runs, those
        common to all).
    """
    runs = list(run) if isinstance(run, list | tuple) else [run]
    if not runs:
        raise ViewError("distributions() needs at least one run")
    keys = list(layers) if layers is not None else list(runs[0].layers)
    for other in runs[1:]:
        keys = [k for k in keys if k in set(other.layers)] if layers is None else keys
    if not keys:
        raise ViewError("the runs have no layer in common to show")
    if len(runs) == 1 and not isinstance(run, list | tuple):
        return _box_plot(runs[0], keys)
    if steps is None:
        steps = [
            (getattr(r, "attrs", None) or {}).get(
                "step", (getattr(r, "attrs", None) or {}).get("epoch", i)
            )
            for i, r in enumerate(runs)
        ]
    if len(steps) != len(runs):
        raise ViewError(f"got {len(steps)} steps for {len(runs)} runs")
    return _steps_plot(runs, keys, steps)
