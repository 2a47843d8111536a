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

__all__ = [
    "MapFacts",
    "choose_targets",
    "describe_cam",
    "map_facts",
    "target_classes",
    "target_source",
]

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


def _sample_label(run: Any, position: int) -> str:
    samples = getattr(run, "sample_indices", None)
    try:
        return f"sample {int(np.asarray(samples)[position])}"
    except (TypeError, IndexError, ValueError):
        return f"sample at position {position}"


def choose_targets(
    run: Any,
    positions: np.ndarray,
    class_index: int | None = None,
    target: str | None = None,
) -> tuple[np.ndarray | None, str]:
    """Which of a run's targets each sample's map explains.

    Returns ``(indices, name)``: positions along the gradients' ``target`` axis (``None``
    for a run of one target) and the chosen target's name (``"several"`` when samples
    differ).  ``target`` picks a captured target by name; ``class_index`` the target whose
    class is ``k`` for each sample; neither, the first.

    Raises
    ------
    ViewError
        An unknown target name, or a class that was not captured for some sample.
    """
    from tensortap.core.errors import ViewError

    attrs = getattr(run, "attrs", None) or {}
    names = [str(n) for n in attrs.get("targets") or []]
    if not names:  # one target: it may only be checked
        held = str(attrs.get("target", ""))
        if target is not None and target != held:
            raise ViewError(
                f"the run holds gradients of target {held!r} only, not {target!r}; capture "
                f"with target=[{held!r}, {target!r}] to have both"
            )
        if class_index is not None:
            classes = target_classes(run, positions)
            wrong = (
                np.arange(len(positions))
                if classes is None
                else np.flatnonzero(classes != int(class_index))
            )
            if wrong.size:
                p = int(positions[wrong[0]])
                have = "an unknown class" if classes is None else f"class {classes[wrong[0]]}"
                raise ViewError(
                    f"the run holds gradients of target {held!r} ({have} for "
                    f"{_sample_label(run, p)}), not class {class_index}; capture again with "
                    f"target=[{held!r}, {class_index}] (several targets) to see both"
                )
        return None, held
    if target is not None:
        if target not in names:
            raise ViewError(f"target {target!r} was not captured; the run has {names}")
        return np.full(len(positions), names.index(target), dtype=np.intp), target
    if class_index is None:
        return np.zeros(len(positions), dtype=np.intp), names[0]
    stored = np.asarray(run.target_classes.values)[np.asarray(positions, dtype=np.intp)]
    hits = stored == int(class_index)
    missing = np.flatnonzero(~hits.any(axis=1))
    if missing.size:
        row = int(missing[0])
        raise ViewError(
            f"class {class_index} was not among the captured targets of "
            f"{_sample_label(run, int(positions[row]))} (targets {names} are classes "
            f"{stored[row].tolist()}); pass one of those or capture with target=[..., "
            f"{class_index}]"
        )
    indices = hits.argmax(axis=1).astype(np.intp)
    chosen = {names[i] for i in indices}
    return indices, chosen.pop() if len(chosen) == 1 else "several"


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
    several = getattr(run, "target_classes", None)
    if stored is None and several is not None and getattr(several, "ndim", 0) == 2:
        stored = np.asarray(several.values)[:, 0]  # the first target's; see choose_targets
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


def map_facts(maps: np.ndarray, activations: np.ndarray, gradients: np.ndarray | None) -> MapFacts:
    """:class:`MapFacts` of raw ``maps (sample, h, w)`` from ``(sample, h, w, c)`` tensors.

    ``gradients`` is ``None`` for gradient-free methods: no map is blamed on a gradient.
    """
    axes = tuple(range(1, activations.ndim))
    gradient_zero = (
        np.zeros(len(maps), dtype=bool)
        if gradients is None
        else ~np.any(gradients != 0.0, axis=axes)
    )
    return MapFacts(
        high=maps.max(axis=(1, 2)),
        low=maps.min(axis=(1, 2)),
        gradient_zero=gradient_zero,
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
    run: Any,
    key: str,
    method: str,
    positions: np.ndarray,
    facts: MapFacts,
    *,
    choice: tuple[np.ndarray | None, str] | None = None,
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
    score = str(attrs_run.get("score") or "")
    names = list(attrs_run.get("class_names") or [])
    classes = target_classes(run, positions)
    indices, chosen_name = choice if choice is not None else (None, target)
    if indices is not None:  # several targets: the chosen one of each sample
        stored = np.asarray(run.target_classes.values)[np.asarray(positions, dtype=np.intp)]
        classes = stored[np.arange(len(positions)), indices].astype(np.int64)
        target = chosen_name
    source = target_source(target) if target != "several" else "several"
    if target.startswith("top") and target[3:].isdigit():
        source = "predicted" if target == "top1" else f"rank {target[3:]} of the prediction"
    coordinate = classes if classes is not None else np.full(len(positions), -1, np.int64)

    if source == "callable":
        explains = f"the value of {target.removeprefix('callable ').strip() or 'a callable'}"
    else:
        known = np.unique(coordinate[coordinate >= 0])
        if len(known) == 1:
            index = int(known[0])
            name = f" ({names[index]})" if 0 <= index < len(names) else ""
            explains = f"class {index}{name}" + {
                "predicted": ", the predicted class",
                "label": ", the label",
                "given": ", given at capture",
            }.get(source, f", {source}" if source.startswith("rank") else "")
        else:
            explains = "each sample's " + {
                "predicted": "predicted class",
                "label": "label",
                "given": "class given at capture",
            }.get(source, f"class ({source})")
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
