"""What a class activation map explains: method, class, where the class came from, score,
and whether the map shows anything at all.

Kept apart from the CAM formulas (:mod:`tensortap.core.cam`) so every CAM method, present
and future, describes its result the same way: :func:`describe_cam` turns a run's target
attrs and a few per-sample facts gathered while the maps were computed into the result's
attrs and its ``target_class`` coordinate.  A map that is zero or constant everywhere is
flagged with its likely cause and what to try (issue 15: a Flatten-head CNN gives an
all-zero Grad-CAM for every sample, and nothing said so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MapFacts", "describe_cam", "map_facts", "target_classes", "target_source"]

#: Where the explained class came from, by the run's ``target`` attr.
_SOURCES = {"predicted": "predicted", "label": "label", "classes": "given"}


def target_source(target: str) -> str:
    """``"predicted"``, ``"label"``, ``"given"`` (a class index or per-sample array),
    ``"callable"`` or ``"unknown"`` for a run's ``target`` attr."""
    target = str(target)
    if target in _SOURCES:
        return _SOURCES[target]
    if target.startswith("class "):
        return "given"
    if target.startswith("callable"):
        return "callable"
    return "unknown"


def _root_values(run: Any, name: str) -> np.ndarray | None:
    value = getattr(run, name, None)
    if value is None or not hasattr(value, "values") or getattr(value, "ndim", 0) != 1:
        return None
    return np.asarray(value.values)


def target_classes(run: Any, positions: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """The class each sample's stored gradients differentiate, ``-1`` where unknown.

    The run's stored ``target_class`` array when it has one; for older runs derived from
    the target: ``predicted`` → the prediction, ``label`` → the label, ``class k`` → ``k``.
    ``None`` for a callable target (no class) or when nothing tells.
    """
    chosen = np.asarray(positions, dtype=np.intp)
    target = str((getattr(run, "attrs", None) or {}).get("target", ""))
    if target.startswith("callable"):
        return None
    stored = _root_values(run, "target_classes")
    if stored is None:
        source = {"predicted": "predictions", "label": "labels"}.get(target)
        stored = _root_values(run, source) if source else None
    if stored is not None and stored.dtype.kind in "iu":
        return np.asarray(stored[chosen], dtype=np.int64)
    if target.startswith("class "):
        return np.full(len(chosen), int(target.split()[1]), dtype=np.int64)
    return None


@dataclass(frozen=True, slots=True)
class MapFacts:
    """Per-sample facts about raw maps (after the method's ReLU), gathered block by block.

    Attributes
    ----------
    high, low : ndarray
        Each map's maximum and minimum.
    gradient_zero : ndarray of bool
        The target's gradient is exactly zero everywhere in the layer.
    activation_zero : ndarray of bool
        The layer's activations are exactly zero everywhere (a dead layer for this input).
    """

    high: np.ndarray
    low: np.ndarray
    gradient_zero: np.ndarray
    activation_zero: np.ndarray

    @staticmethod
    def concatenate(parts: Sequence[MapFacts]) -> MapFacts:
        """One :class:`MapFacts` from those of consecutive blocks."""
        if not parts:
            empty = np.zeros(0)
            return MapFacts(empty, empty, empty.astype(bool), empty.astype(bool))
        return MapFacts(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in MapFacts.__slots__)
        )


def map_facts(maps: np.ndarray, activations: np.ndarray, gradients: np.ndarray) -> MapFacts:
    """:class:`MapFacts` of raw ``maps (sample, h, w)`` from ``(sample, h, w, c)`` tensors."""
    axes = tuple(range(1, activations.ndim))
    return MapFacts(
        high=maps.max(axis=(1, 2)),
        low=maps.min(axis=(1, 2)),
        gradient_zero=~np.any(gradients != 0.0, axis=axes),
        activation_zero=~np.any(activations != 0.0, axis=axes),
    )


def _flat_reason(facts: MapFacts, flat: np.ndarray, method: str) -> str:
    """The likely cause of the flat maps and what to try, in one sentence."""
    zero = flat & (facts.high <= 0.0)
    if np.all(facts.gradient_zero[flat]):
        return (
            "the target's gradient is zero everywhere in this layer (the score does not "
            "depend on it, or a saturated unit blocks it); try a layer nearer the output"
        )
    if np.all(facts.activation_zero[flat]):
        return "the layer's activations are all zero (dead units); try another layer"
    if np.any(zero):
        others = " or ".join(repr(m) for m in ("layercam", "hirescam", "gradcam") if m != method)
        return (
            f"the {method} map is <= 0 everywhere before its ReLU: this layer's evidence "
            "counts against the class (typical after a Flatten/Dense head, where position "
            f"matters); try method={others}, another layer, or normalize=False to see the "
            "raw values"
        )
    return (
        "the map is the same value everywhere (no spatial evidence at this layer); try "
        "another layer or method"
    )


def describe_cam(
    run: Any, key: str, method: str, positions: np.ndarray, facts: MapFacts
) -> tuple[dict[str, Any], np.ndarray]:
    """Attrs for a CAM result and its ``target_class`` coordinate (``-1``: unknown).

    Attrs: ``method``, ``layer``, ``target`` (the run's), ``target_source`` (label /
    predicted / given / callable), ``score`` (what was differentiated), ``explains`` (one
    sentence), ``class_names`` (when the run has them), ``flat_samples`` (sample
    positions whose map is zero or constant: shown as blank or uniform), ``flat_reason``
    and ``warning`` (empty when every map has structure).
    """
    attrs_run = getattr(run, "attrs", None) or {}
    target = str(attrs_run.get("target", ""))
    source = target_source(target)
    score = str(attrs_run.get("score") or "")
    names = list(attrs_run.get("class_names") or [])
    classes = target_classes(run, positions)
    coordinate = classes if classes is not None else np.full(len(positions), -1, np.int64)

    if source == "callable":
        explains = f"the value of {target.removeprefix('callable ').strip() or 'a callable'}"
    else:
        known = np.unique(coordinate[coordinate >= 0])
        if len(known) == 1:
            index = int(known[0])
            name = f" ({names[index]})" if 0 <= index < len(names) else ""
            explains = f"class {index}{name}"
        else:
            explains = "each sample's class (coordinate target_class)"
        explains += {"predicted": ", the predicted class", "label": ", the label"}.get(
            source, ", given at capture" if source == "given" else ""
        )
    flat = (facts.high - facts.low) <= 1e-12 * np.maximum(np.abs(facts.high), 1.0)
    reason = _flat_reason(facts, flat, method) if np.any(flat) else ""
    flat_positions = [int(p) for p in np.asarray(positions)[flat]]
    warning = ""
    if flat_positions:
        what = "zero" if np.all(facts.high[flat] <= 0.0) else "zero or constant"
        warning = (
            f"{len(flat_positions)} of {len(positions)} {method} maps of {key!r} are {what} "
            f"everywhere: {reason}"
        )
    attrs: dict[str, Any] = {
        "method": method,
        "layer": key,
        "target": target,
        "target_source": source,
        "score": score,
        "explains": explains,
        "flat_samples": flat_positions,
        "flat_reason": reason,
        "warning": warning,
    }
    if names:
        attrs["class_names"] = names
    return attrs, coordinate
