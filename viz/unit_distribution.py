"""One layer's distribution unit by unit, from the stored per-channel statistics.

A pooled histogram hides that one channel is dead and another saturates; per-channel
``mean``, ``std``, ``min`` and ``max`` are stored for every layer (``run.stats(key)``), so
this view costs a few kB whatever the run's size.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import holoviews as hv
import numpy as np

from tensortap.core.errors import ViewError
from tensortap.core.unit_health import unit_health
from tensortap.viz._backend import style
from tensortap.viz._run import layer_key

__all__ = ["unit_distributions"]

#: Box colours: live channels, dead ones (never > 0).
LIVE, DEAD = "#a6c8e8", "#dd8452"


def unit_distributions(
    run: Any,
    key: str,
    max_units: int = 128,
    order: Literal["index", "mean"] = "index",
) -> hv.Overlay:
    """Per channel (unit) of one layer: box ``mean ± std``, whiskers ``min``–``max``.

    Parameters
    ----------
    run : tensortap.Run
    key : str
        Layer key (a unique bare layer name works too).
    max_units : int
        Show at most this many channels (the first ones in ``order``).
    order : {"index", "mean"}
        Channel index, or mean activation, highest first.

    Returns
    -------
    holoviews.Overlay
        Dead channels (never > 0 over the run) are drawn in orange and counted in the title.
    """
    key = layer_key(run, key)
    stats = run.stats(key)
    mean = np.asarray(stats["mean"].values, dtype=np.float64)
    std = np.asarray(stats["std"].values, dtype=np.float64)
    low = np.asarray(stats["min"].values, dtype=np.float64)
    high = np.asarray(stats["max"].values, dtype=np.float64)
    if order == "index":
        chosen = np.arange(len(mean))
    elif order == "mean":
        chosen = np.argsort(-np.nan_to_num(mean, nan=-np.inf), kind="stable")
    else:
        raise ViewError(f"order must be 'index' or 'mean', got {order!r}")
    if max_units < 1:
        raise ViewError(f"max_units must be at least 1, got {max_units}")
    chosen = chosen[:max_units]
    (health,) = unit_health(run, keys=[key])
    dead = set(health["dead_units"])
    x = np.arange(len(chosen), dtype=np.float64)
    half = 0.35
    channel = hv.Dimension("position", label="channel" + (" (by mean)" if order == "mean" else ""))
    value = hv.Dimension("activation", label="activation")
    m, s, lo, hi = mean[chosen], std[chosen], low[chosen], high[chosen]
    is_dead = np.array([int(c) in dead for c in chosen])
    elements = [
        style(hv.Segments((x, lo, x, hi), kdims=[channel, value, "x1", "y1"]), color="grey")
    ]
    if (~is_dead).any():
        boxes = hv.Rectangles(
            (x[~is_dead] - half, (m - s)[~is_dead], x[~is_dead] + half, (m + s)[~is_dead]),
            kdims=[channel, value, "x1", "y1"],
            label="mean ± std",
        )
        elements.append(style(boxes, color=LIVE, bokeh={"line_color": "#4c72b0"}))
    elements.append(
        style(hv.Scatter((x, m), kdims=[channel], vdims=[value], label="mean"), color="black")
    )
    if is_dead.any():  # a dead channel's box has no height: mark it so it is seen
        marks = hv.Scatter((x[is_dead], hi[is_dead]), kdims=[channel], vdims=[value], label="dead")
        elements.append(
            style(marks, color=DEAD, marker="v", bokeh={"size": 8}, matplotlib={"s": 30})
        )
    step = max(1, math.ceil(len(chosen) / 16))  # at most 16 tick labels: they never overlap
    ticks = [(float(i), str(int(c))) for i, c in enumerate(chosen)][::step]
    shown = f"{len(chosen)} of {len(mean)}" if len(chosen) < len(mean) else f"{len(mean)}"
    title = f"{key}: {shown} channels (box mean ± std, whiskers min–max) · {len(dead)} of {len(mean)} dead (never > 0)"
    return style(
        hv.Overlay(elements),
        title=title,
        xticks=ticks,
        xlabel="channel",
        ylabel="activation",
        bokeh={"width": max(520, 9 * len(chosen)), "height": 360, "legend_position": "right"},
        matplotlib={
            "fig_inches": (max(8, 0.12 * len(chosen)), 4),
            "aspect": max(2.0, 0.04 * len(chosen)),
            "legend_position": "right",
        },
    )
