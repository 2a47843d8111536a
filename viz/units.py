"""Dead and saturated units: per layer as bars, or one layer's units by index as a table.

The facts come from :mod:`tensortap.core.unit_health` (stored statistics only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import holoviews as hv

from tensortap.core.errors import ViewError
from tensortap.core.unit_health import BOUNDED_ACTIVATIONS, unit_health
from tensortap.viz._backend import style
from tensortap.viz._run import layer_key

__all__ = ["BOUNDED_ACTIVATIONS", "dead_units", "unit_health"]

#: Bar colours of :func:`dead_units`.
KIND_COLOURS = {"dead": "#4c72b0", "saturated": "#dd8452"}


def _unit_table(
    run: Any, key: str, bounds: Mapping[str, tuple[float, float]] | None, tolerance: float
) -> hv.Table:
    """One layer's dead and saturated units by index, with their stored min and max."""
    key = layer_key(run, key)
    (row,) = unit_health(run, bounds, tolerance, keys=[key])
    stats = run.stats(key)
    low, high = stats["min"].values, stats["max"].values
    zero = stats["zero_fraction"].values
    data = [
        (int(u), state, float(low[u]), float(high[u]), float(zero[u]))
        for state, units in (("dead", row["dead_units"]), ("saturated", row["saturated_units"]))
        for u in units
    ]
    inherit = " · derived layer: inherits its input's dead channels" if row["derived"] else ""
    title = (
        f"{key} · {row['dead']} of {row['channels']} dead (never > 0), "
        f"{row['saturated']} saturated{inherit}"
    )
    table = hv.Table(
        data,
        kdims=[hv.Dimension("unit", label="channel/unit")],
        vdims=["state", "min", "max", hv.Dimension("zero_fraction", label="fraction zero")],
    )
    return style(table, title=title, bokeh={"width": 520})


def dead_units(
    run: Any,
    key: str | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    tolerance: float = 0.01,
) -> hv.Bars | hv.Table:
    """Dead and saturated channels: per layer as grouped bars, or one layer's by index.

    Parameters
    ----------
    key : str, optional
        A layer: list its dead and saturated units by index (an ``hv.Table`` with each
        one's stored min, max and zero fraction).  Without it, the fraction of dead and
        saturated channels of every layer (``hv.Bars``).
    bounds, tolerance
        See :func:`tensortap.core.unit_health.unit_health` (the definitions); reads only
        the stored statistics.

    Pooling and reshaping layers inherit their input's dead channels: they are drawn, but
    not counted again in the title's total.
    """
    if key is not None:
        return _unit_table(run, key, bounds, tolerance)
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
    own = [r for r in rows if not r["derived"]]  # pooling/flatten would count them twice
    total_dead = sum(r["dead"] for r in own)
    total = sum(r["channels"] for r in own)
    derived = len(rows) - len(own)
    note = f" · {derived} pooling/reshaping layers inherit (not counted)" if derived else ""
    return style(
        bars,
        title=f"dead (never > 0) and saturated channels · {total_dead} of {total} dead{note}",
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
