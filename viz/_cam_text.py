"""Words on CAM pictures: which class a map explains, where it came from, and flat maps."""

from __future__ import annotations

from typing import Any

import xarray as xr

from tensortap.core.class_names import class_label

__all__ = ["FLAT_MARK", "explained_class", "flat_note", "target_summary"]

#: Title mark of a map that is zero or constant everywhere (its attrs say why).
FLAT_MARK = "⚠ map flat"

_SOURCE_WORDS = {"predicted": "predicted", "label": "label", "given": "given class"}


def explained_class(result: xr.DataArray, index: int = 0) -> str:
    """``"explains 3 (cat), predicted"`` for map ``index`` of a :func:`tensortap.cam` result."""
    attrs = result.attrs
    source = str(attrs.get("target_source", ""))
    if source == "callable":
        return f"explains {attrs.get('explains', 'a callable target')}"
    classes = result.coords.get("target_class")
    value = int(classes.values[index]) if classes is not None else -1
    if value < 0:
        return "explains an unknown class"
    word = _SOURCE_WORDS.get(source, "")
    label = class_label(value, attrs.get("class_names"))
    return f"explains {label}" + (f", {word}" if word else "")


def target_summary(result: xr.DataArray) -> str:
    """``"target: predicted class · score: logits (pre-softmax)"`` for grid titles."""
    attrs = result.attrs
    score = attrs.get("score")
    text = f"explains {attrs.get('explains', '?')}"
    return f"{text} · score: {score}" if score else text


def flat_note(result: xr.DataArray, position: int) -> str:
    """``" · ⚠ map flat"`` when the map at sample ``position`` is zero or constant."""
    flat: Any = result.attrs.get("flat_samples") or []
    return f" · {FLAT_MARK}" if int(position) in {int(p) for p in flat} else ""
