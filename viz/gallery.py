"""A gallery of stored inputs, each captioned with its label, prediction and confidence —
the view for finding samples (all, the misclassified ones, one class…)."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd

from tensortap.core.errors import ViewError
from tensortap.viz._colour import to_rgb
from tensortap.viz._mosaic import rgb_mosaic
from tensortap.viz._run import positions, stored_inputs
from tensortap.viz.sample_table import filter_samples, sample_table

__all__ = ["gallery", "gallery_caption"]

#: Tiles shown at most (a page of the gallery).
MAX_TILES = 36


def gallery_caption(row: dict[str, Any], names: list[str] | None = None) -> str:
    """``"s12 3→5 87%"``: sample, label → prediction, confidence of the prediction, and a
    cross when misclassified (the parts known; ``None`` is unknown)."""

    def named(value: Any) -> str:
        if names and 0 <= int(value) < len(names):
            return str(names[int(value)])
        return str(int(value))

    parts = [f"s{int(row['sample'])}"]
    label, prediction = row.get("label"), row.get("prediction")
    if label is not None and prediction is not None:
        parts.append(f"{named(label)}→{named(prediction)}")
    elif label is not None:
        parts.append(f"y {named(label)}")
    elif prediction is not None:
        parts.append(f"ŷ {named(prediction)}")
    if row.get("confidence") is not None and np.isfinite(row["confidence"]):
        parts.append(f"{100 * float(row['confidence']):.0f}%")
    if row.get("correct") is False:
        parts.append("✗")
    return " ".join(parts)


def gallery(
    run: Any,
    samples: list[int] | range | None = None,
    *,
    filter: str = "all",
    label: int | None = None,
    prediction: int | None = None,
    min_confidence: float = 0.0,
    max_confidence: float = 1.0,
    k: int = MAX_TILES,
    table: pd.DataFrame | None = None,
) -> hv.Overlay:
    """The stored inputs of some samples in one mosaic, captioned for finding samples.

    Parameters
    ----------
    run : tensortap.Run
    samples : sequence of int, optional
        Positions to show, in this order; default: those that pass the filters.
    filter : {"all", "correct", "misclassified"}
        Keep the correctly classified or the misclassified samples (needs labels and
        predictions).
    label, prediction : int, optional
        Keep one label / one predicted class.
    min_confidence, max_confidence : float
        Keep samples whose predicted class has a probability in this range (softmax of
        the stored outputs when they are logits).
    k : int
        Tiles at most, the first ones in position order.
    table : pandas.DataFrame, optional
        The run's :func:`~tensortap.viz.sample_table.sample_table`, if already read.

    Returns
    -------
    holoviews.Overlay
        ``hv.RGB * hv.Labels``: one figure; its title says how many samples matched.
    """
    if table is None:
        table = sample_table(run)
    if samples is None:
        chosen = filter_samples(
            table,
            filter,
            label=label,
            prediction=prediction,
            min_confidence=min_confidence,
            max_confidence=max_confidence,
        )
    else:
        chosen = positions(run.samples, samples, default=k)
    if not chosen:
        raise ViewError(
            f"no committed sample passes the filter ({_describe(filter, label, prediction)})"
        )
    shown = chosen[:k]
    pixels = stored_inputs(run, shown)
    if pixels is None:
        raise ViewError("the run kept no image inputs: capture with inputs stored to see them")
    names = (getattr(run, "attrs", None) or {}).get("class_names") or None
    captions = [gallery_caption(_known(table.loc[p].to_dict()), names) for p in shown]
    title = (
        f"{len(shown)} of {len(chosen)} samples · {_describe(filter, label, prediction)} "
        "· caption: sample label→prediction confidence"
    )
    # Wider for fewer tiles, so each caption fits its tile.
    px = 560 if len(shown) > 9 else 460
    return rgb_mosaic([to_rgb(p) for p in pixels], captions, title, px=px)


def _known(row: dict[str, Any]) -> dict[str, Any]:
    """``pd.NA`` and NaN as ``None``, NumPy scalars as Python ones."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is pd.NA or (isinstance(value, float) and value != value):
            out[name] = None
        else:
            out[name] = value.item() if hasattr(value, "item") else value
    return out


def _describe(filter: str, label: int | None, prediction: int | None) -> str:
    parts = [filter]
    if label is not None:
        parts.append(f"label {label}")
    if prediction is not None:
        parts.append(f"prediction {prediction}")
    return ", ".join(parts)
