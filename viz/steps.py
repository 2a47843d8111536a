"""Views over the steps of a training run (issue 14), from the exact stored histograms.

- :func:`histogram_over_steps`: one layer's histogram evolving over steps, as a heatmap
  (one row per step, each cell exactly one stored bin: each step keeps its own edges, so
  nothing is re-binned) or TensorBoard's offset ("ridge") view;
- :func:`step_curves`: whole-layer mean, std and zero fraction per step;
- :func:`dead_units_over_steps`: the fraction of a layer's channels that never fired on
  the probe, per step;
- :func:`compare_steps`: step *a* against step *b* in the comparison view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np

from tensortap.core.errors import ViewError
from tensortap.viz._backend import style
from tensortap.viz.compare import compare

__all__ = [
    "compare_steps",
    "dead_units_over_steps",
    "histogram_over_steps",
    "step_curves",
    "whole_layer_over_steps",
]

#: ``step_curves`` statistics and their axis labels.
CURVES = {"mean": "mean", "std": "standard deviation", "zero_fraction": "fraction of zeros"}


def _check_training(run: Any) -> None:
    if not hasattr(run, "step_values"):
        raise ViewError(
            f"{getattr(run, 'path', run)!r} is a capture run without steps; views over "
            "steps need a training run (tt.CaptureCallback or tt.Monitor)"
        )
    if not len(run.step_values):
        raise ViewError(f"the training run at {run.path!r} has no committed step yet")


def _row_bounds(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each step's row on the step axis: from halfway to the previous step to halfway
    to the next (steps need not be evenly spaced)."""
    s = steps.astype(np.float64)
    if len(s) == 1:
        return s - 0.5, s + 0.5
    mid = (s[:-1] + s[1:]) / 2
    low = np.concatenate([[s[0] - (mid[0] - s[0])], mid])
    high = np.concatenate([mid, [s[-1] + (s[-1] - mid[-1])]])
    return low, high


def histogram_over_steps(
    run: Any, key: str, *, of: str = "activation", mode: str = "heatmap", log: bool = False
) -> hv.Element | hv.Overlay:
    """One layer's histogram over the steps of a training run.

    Parameters
    ----------
    run : TrainingRun
    key : str
        A watched layer.
    of : {"activation", "gradient"}
        Histograms of the activations or of the gradients.
    mode : {"heatmap", "offset"}
        ``heatmap``: value along x, step along y, colour = values in the bin; every cell
        is one stored bin with its own edges.  ``offset``: TensorBoard's view, one
        outline per step, later steps lower and drawn in front.
    log : bool
        Colour (heatmap) by ``log10(1 + count)``.
    """
    _check_training(run)
    if mode not in ("heatmap", "offset"):
        raise ViewError(f"mode={mode!r} is not a view over steps; use 'heatmap' or 'offset'")
    stats = run.stats(key, of=of)
    steps = stats["step"].values
    edges = stats["bin_edges"].values
    counts = stats["histogram"].values.astype(np.float64)
    label = f"{key} ({of}s)"
    if mode == "heatmap":
        low, high = _row_bounds(steps)
        n_steps, bins = counts.shape
        color = np.log10(1 + counts) if log else counts
        data = {
            "x0": edges[:, :-1].ravel(),
            "y0": np.repeat(low, bins),
            "x1": edges[:, 1:].ravel(),
            "y1": np.repeat(high, bins),
            "count": color.ravel(),
        }
        keep = counts.ravel() > 0
        frame = {name: values[keep] for name, values in data.items()}
        rects = hv.Rectangles(
            frame, kdims=["x0", "y0", "x1", "y1"], vdims=[hv.Dimension("count", label="values")]
        )
        rects = rects.redim.label(x0=f"{of} value", y0="step")
        return style(
            rects,
            color="count",
            cmap="viridis",
            colorbar=True,
            title=f"{label}: histogram over steps" + (" (log10(1 + count))" if log else ""),
            bokeh={"width": 640, "height": 420, "line_width": 0, "tools": ["hover"]},
            matplotlib={"fig_inches": (8, 5), "linewidth": 0},
        )
    # offset view: normalised outline per step, offset by its position
    curves = []
    peak = counts.max(axis=1, keepdims=True)
    heights = np.divide(counts, peak, out=np.zeros_like(counts), where=peak > 0)
    order = np.arange(len(steps))
    spacing = 0.35
    for position in order:
        x = np.repeat(edges[position], 2)[1:-1]
        y = np.repeat(heights[position], 2) - spacing * position
        curves.append(hv.Curve((x, y), f"{of} value", "step (offset)"))
    overlay = hv.Overlay(curves)
    ticks = [(-spacing * p, str(int(steps[p]))) for p in order[:: max(1, len(order) // 10)]]
    return style(
        overlay,
        title=f"{label}: histograms over steps (offset)",
        bokeh={"width": 640, "height": 420, "yticks": ticks},
        matplotlib={"fig_inches": (8, 5), "yticks": ticks},
    )


def whole_layer_over_steps(run: Any, key: str, of: str = "activation") -> dict[str, np.ndarray]:
    """Whole-layer ``mean``, ``std``, ``zero_fraction``, ``nonfinite`` and
    ``dead_fraction`` per committed step (channels pooled exactly, as
    ``viz.layer_summary`` pools them)."""
    stats = run.stats(key, of=of)
    count = stats["count"].values.astype(np.float64)
    nonfinite = stats["nonfinite"].values.astype(np.float64)
    mean_c = np.nan_to_num(stats["mean"].values)
    std_c = np.nan_to_num(stats["std"].values)
    total = count.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (count * mean_c).sum(axis=1) / total
        variance = (count * (std_c**2 + (mean_c - mean[:, None]) ** 2)).sum(axis=1) / total
        zeros = (np.nan_to_num(stats["zero_fraction"].values) * (count + nonfinite)).sum(axis=1)
        zero_fraction = zeros / (total + nonfinite.sum(axis=1))
        seen = count > 0
        dead = ((stats["max"].values <= 0) & seen).sum(axis=1) / seen.sum(axis=1)
    return {
        "step": stats["step"].values,
        "mean": mean,
        "std": np.sqrt(variance),
        "zero_fraction": zero_fraction,
        "nonfinite": nonfinite.sum(axis=1),
        "dead_fraction": dead,
    }


def _layers(run: Any, keys: Sequence[str] | str | None) -> list[str]:
    if keys is None:
        return list(run.layers)
    keys = [keys] if isinstance(keys, str) else list(keys)
    for key in keys:
        run.stats(key)  # unknown keys fail with suggestions
    return keys


def step_curves(
    run: Any, keys: Sequence[str] | str | None = None, *, of: str = "activation"
) -> hv.Layout:
    """Mean, standard deviation and fraction of zeros of each layer over the steps.

    Parameters
    ----------
    run : TrainingRun
    keys : str or sequence of str, optional
        Layers to draw (default: all watched layers).
    of : {"activation", "gradient"}
    """
    _check_training(run)
    rows = {key: whole_layer_over_steps(run, key, of) for key in _layers(run, keys)}
    panels = []
    for name, label in CURVES.items():
        curves = [
            hv.Curve((row["step"], row[name]), "step", hv.Dimension(name, label=label), label=key)
            for key, row in rows.items()
        ]
        panels.append(
            style(
                hv.Overlay(curves),
                title=f"{label} of the {of}s per step",
                bokeh={"width": 420, "height": 300, "legend_position": "right", "tools": ["hover"]},
                matplotlib={"fig_inches": (5, 3.5)},
            )
        )
    return hv.Layout(panels).cols(1)


def dead_units_over_steps(run: Any, keys: Sequence[str] | str | None = None) -> hv.Overlay:
    """Fraction of each layer's channels that never exceeded 0 on the probe, per step
    (a ReLU unit that died stays at 1 of its layer's fraction)."""
    _check_training(run)
    curves = [
        hv.Curve(
            (row["step"], row["dead_fraction"]),
            "step",
            hv.Dimension("dead_fraction", label="dead channels (fraction)", range=(0, 1)),
            label=key,
        )
        for key in _layers(run, keys)
        for row in [whole_layer_over_steps(run, key)]
    ]
    return style(
        hv.Overlay(curves),
        title="dead units over steps (max <= 0 on the probe)",
        bokeh={"width": 640, "height": 320, "legend_position": "right", "tools": ["hover"]},
        matplotlib={"fig_inches": (8, 4)},
    )


def compare_steps(
    run: Any, step_a: int, step_b: int, key: str | None = None, **kwargs: Any
) -> hv.Layout:
    """Step ``step_a`` against step ``step_b`` of one training run (``viz.compare``).

    Maps (``key``) need both steps to hold tensors; statistics need none.
    """
    _check_training(run)
    return compare(run.at(step_a), run.at(step_b), key=key, **kwargs)
