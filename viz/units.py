"""Dead and saturated units per layer, from the stored per-channel statistics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import holoviews as hv
import numpy as np

from tensortap.core.errors import ViewError
from tensortap.viz._backend import style

__all__ = ["BOUNDED_ACTIVATIONS", "dead_units", "unit_health"]

#: Output ranges of bounded activations, matched (case-insensitively) against a layer's
#: key, name, type and long name: these layers can saturate.
BOUNDED_ACTIVATIONS: dict[str, tuple[float, float]] = {
    "hard_sigmoid": (0.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu6": (0.0, 6.0),
}


#: Bar colours of :func:`dead_units`.
KIND_COLOURS = {"dead": "#4c72b0", "saturated": "#dd8452"}


def _bounds(
    run: Any, key: str, given: Mapping[str, tuple[float, float]] | None
) -> tuple[float, float] | None:
    if given and key in given:
        return given[key]
    try:
        node = run.node(key) or {}
    except Exception:  # a reader without .node(): match the key alone
        node = {}
    text = " ".join(str(node.get(f, "")) for f in ("name", "layer_type", "long_name", "activation"))
    text = f"{key} {text}".lower()
    for name, bounds in BOUNDED_ACTIVATIONS.items():
        if re.search(rf"(^|[^a-z_]|_){re.escape(name)}($|[^a-z0-9])", text):
            return bounds
    return None


def unit_health(
    run: Any,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    tolerance: float = 0.01,
) -> list[dict[str, Any]]:
    """Per layer: channels never active, and channels stuck at a bound.

    A channel is *dead* when it never exceeded 0 over the whole run (``max <= 0``: a ReLU
    unit that never fires).  For a bounded activation with range ``[lo, hi]`` (from
    ``bounds`` or :data:`BOUNDED_ACTIVATIONS`), a channel is *saturated* when all its values
    lie within ``tolerance * (hi - lo)`` of one bound (``min >= hi - eps`` or ``max <= lo + eps``).

    Returns
    -------
    list of dict
        ``layer, channels, dead, dead_fraction, saturated, saturated_fraction, bounds``.
    """
    rows = []
    for key in run.layers:
        stats = run.stats(key)
        high_c = np.asarray(stats["max"].values, dtype=np.float64)
        low_c = np.asarray(stats["min"].values, dtype=np.float64)
        seen = np.asarray(stats["count"].values) > 0
        n = int(seen.sum())
        dead = int((high_c[seen] <= 0.0).sum())
        layer_bounds = _bounds(run, key, bounds)
        saturated = 0
        if layer_bounds is not None:
            lo, hi = layer_bounds
            eps = tolerance * (hi - lo)
            stuck = (low_c[seen] >= hi - eps) | (high_c[seen] <= lo + eps)
            saturated = int(stuck.sum())
        rows.append(
            {
                "layer": key,
                "channels": n,
                "dead": dead,
                "dead_fraction": dead / n if n else 0.0,
                "saturated": saturated,
                "saturated_fraction": saturated / n if n else 0.0,
                "bounds": layer_bounds,
            }
        )
    return rows


def dead_units(
    run: Any,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    tolerance: float = 0.01,
) -> hv.Bars:
    """Fraction of dead and of saturated channels in each layer, as grouped bars.

    See :func:`unit_health` for the definitions; reads only the stored statistics.
    """
    rows = unit_health(run, bounds, tolerance)
    if not rows:
        raise ViewError("the run has no layers to summarise")
    data = []
    for row in rows:
        data.append((row["layer"], "dead", row["dead_fraction"], row["dead"], row["channels"]))
        data.append(
            (
                row["layer"],
                "saturated",
                row["saturated_fraction"],
                row["saturated"],
                row["channels"],
            )
        )
    bars = hv.Bars(
        data,
        kdims=["layer", hv.Dimension("kind", label="units")],
        vdims=[
            hv.Dimension("fraction", label="fraction of channels", range=(0, 1)),
            "count",
            "channels",
        ],
    )
    total_dead = sum(r["dead"] for r in rows)
    total = sum(r["channels"] for r in rows)
    return style(
        bars,
        title=f"dead (never > 0) and saturated channels per layer · {total_dead} of {total} dead",
        xrotation=90,
        color=hv.dim("kind").categorize(KIND_COLOURS),
        bokeh={"width": max(500, 45 * len(rows)), "height": 400, "tools": ["hover"]},
        matplotlib={
            "fig_inches": (max(8, 0.45 * len(rows)), 4.5),
            "aspect": max(2.0, 0.12 * len(rows)),
            "multi_level": False,
            "show_legend": True,
        },
    )
