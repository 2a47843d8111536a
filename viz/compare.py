"""Two runs of the same model side by side: per-layer statistics and the same map."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np

from tensortap.core.errors import ViewError
from tensortap.viz._backend import style
from tensortap.viz._run import check_channel, check_sample, layer_map
from tensortap.viz.distributions import layer_summary
from tensortap.viz.feature_maps import _clim, map_image

__all__ = ["compare", "compare_table"]

#: Whole-layer statistics compared, with their axis labels.
COMPARED = {"mean": "mean", "std": "standard deviation", "zero_fraction": "fraction of zeros"}


def compare_table(run_a: Any, run_b: Any) -> list[dict[str, Any]]:
    """Whole-layer statistics of the layers both runs hold, and their differences ``b - a``."""
    common = [k for k in run_a.layers if k in set(run_b.layers)]
    if not common:
        raise ViewError("the two runs have no layer in common: compare two runs of the same model")
    rows = []
    for key in common:
        a, b = layer_summary(run_a.stats(key)), layer_summary(run_b.stats(key))
        row: dict[str, Any] = {"layer": key}
        for name in COMPARED:
            row[f"{name}_a"], row[f"{name}_b"] = a[name], b[name]
            row[f"{name}_diff"] = b[name] - a[name]
        rows.append(row)
    return rows


def _names(run_a: Any, run_b: Any) -> tuple[str, str]:
    def name(run: Any, default: str) -> str:
        path = str(getattr(run, "path", "") or "").rstrip("/")
        return path.rsplit("/", 1)[-1] or default

    a, b = name(run_a, "run a"), name(run_b, "run b")
    return (a, b) if a != b else (f"{a} (a)", f"{b} (b)")


def compare(
    run_a: Any,
    run_b: Any,
    key: str | None = None,
    sample: int = 0,
    channel: int | None = None,
) -> hv.Layout:
    """Compare two runs of the same model.

    Parameters
    ----------
    run_a, run_b : tensortap.Run
    key : str, optional
        A layer to also show as maps: the same sample and channel in both runs and their
        difference ``b - a`` (diverging colours, symmetric range).
    sample : int
        Position among the committed samples, for the maps.
    channel : int, optional
        Channel of the maps (default: the one with the largest mean squared activation in
        ``run_a``'s sample).

    Returns
    -------
    holoviews.Layout
        One bar chart per statistic (``mean``, ``std``, ``zero_fraction``) of ``b - a``
        per layer, then the maps when ``key`` is given.
    """
    rows = compare_table(run_a, run_b)
    label_a, label_b = _names(run_a, run_b)
    charts: list[Any] = []
    for name, label in COMPARED.items():
        bars = hv.Bars(
            [(r["layer"], r[f"{name}_diff"], r[f"{name}_a"], r[f"{name}_b"]) for r in rows],
            kdims=["layer"],
            vdims=[hv.Dimension(f"{name}_diff", label=f"Δ {label}"), f"{name}_a", f"{name}_b"],
        )
        charts.append(
            style(
                bars,
                title=f"Δ {label} (b − a)",
                xrotation=90,
                bokeh={"width": max(360, 30 * len(rows)), "height": 320, "tools": ["hover"]},
                matplotlib={"fig_inches": (max(4, 0.3 * len(rows)), 3.5)},
            )
        )
    if key is not None:
        charts += _maps(run_a, run_b, key, sample, channel, (label_a, label_b))
    return style(
        hv.Layout(charts).cols(3),
        bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": "", "vspace": 0.9, "hspace": 0.5},
    )


def _maps(
    run_a: Any, run_b: Any, key: str, sample: int, channel: int | None, labels: tuple[str, str]
) -> list[hv.Image]:
    arrays = [run_a.activation(key), run_b.activation(key)]
    n = min(int(a.sizes["sample"]) for a in arrays)
    position = check_sample(n, sample)
    maps = [layer_map(a.isel(sample=position), key) for a in arrays]
    if maps[0].shape != maps[1].shape:
        raise ViewError(
            f"layer {key!r} has shape {maps[0].shape} in one run, {maps[1].shape} in the other"
        )
    values = [np.asarray(m.values, dtype=np.float64) for m in maps]
    if channel is None:
        channel = int(np.argmax((values[0] ** 2).reshape(len(values[0]), -1).mean(axis=1)))
    channel = check_channel(key, len(values[0]), channel)
    dims = tuple(str(d) for d in maps[0].dims[1:])
    pair = [v[channel] for v in values]
    shared = _clim(np.stack(pair))
    images = [
        map_image(v, arrays[0], dims, clim=shared, title=f"{label}: {key} ch {channel}")
        for v, label in zip(pair, labels, strict=True)
    ]
    difference = pair[1] - pair[0]
    bound = float(np.abs(difference).max()) or 1.0
    diff = map_image(difference, arrays[0], dims, clim=(-bound, bound), title="b − a")
    images.append(style(diff, cmap="RdBu_r"))
    return images
