"""Per-sample facts the app filters and captions by: label, prediction, confidence, the
class the stored gradients explain, and whether the prediction was right.

Read from the run's small per-sample arrays (labels, predictions, the first output), never
from activations, so a table of every committed sample is cheap even for a run of GBs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tensortap.core.errors import ViewError

__all__ = [
    "FILTERS",
    "confidence",
    "explained",
    "explained_classes",
    "filter_samples",
    "sample_table",
]

#: Gallery filters, in the order the selector shows them.
FILTERS = ("all", "correct", "misclassified")


def _integers(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values.values)
    return array.astype(np.int64) if np.issubdtype(array.dtype, np.integer) else None


def confidence(scores: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Probability of the predicted class per sample.

    ``scores`` are the stored outputs, ``(sample, class)``: taken as probabilities when each
    row is non-negative and sums to 1 (a model ending in softmax), else as logits and
    turned into probabilities by a softmax.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    sums = scores.sum(axis=1)
    if np.all(scores >= 0) and np.allclose(sums, 1.0, atol=1e-3):
        probabilities = scores
    else:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities[rows, np.clip(predicted, 0, scores.shape[1] - 1)]


def _scores(run: Any, n: int) -> np.ndarray | None:
    """The first output as ``(sample, class)`` if it is one score per class."""
    if not getattr(run, "output_names", ()):
        return None
    outputs = run.outputs()
    if outputs is None or outputs.ndim != 2 or int(outputs.sizes["sample"]) != n:
        return None
    return np.asarray(outputs.transpose("sample", ...).values)


def explained(run: Any, labels: np.ndarray | None, predictions: np.ndarray | None) -> Any:
    """Per sample, the class whose score the stored gradients differentiate (``NA`` if
    unknown) — :func:`tensortap.viz._run.target_class` for every sample in one read."""
    n = int(run.samples)
    tree = getattr(run, "tree", None)
    values: Any = None
    if tree is not None and "target_class" in getattr(tree, "variables", {}):
        values = np.asarray(tree["target_class"].values)[:n]
    else:
        target = str((getattr(run, "attrs", None) or {}).get("target", ""))
        if target == "predicted":
            values = predictions
        elif target == "label":
            values = labels
        elif target.startswith("class "):
            values = np.full(n, int(target.split()[1]))
    if values is None:
        return pd.array([pd.NA] * n, dtype="Int64")
    return pd.array(np.asarray(values, dtype=np.int64), dtype="Int64")


def sample_table(run: Any, *, with_confidence: bool = True) -> pd.DataFrame:
    """One row per committed sample, indexed by position.

    Columns: ``sample`` (the run's index), ``label``, ``prediction``, ``confidence``
    (probability of the prediction, NaN without stored scores, or when
    ``with_confidence=False``: reading every output is the slow part on a large run),
    ``explained`` (the class whose score the stored gradients differentiate) and
    ``correct``; a column the run cannot fill holds ``NA``.
    """
    n = int(run.samples)
    frame = pd.DataFrame(index=pd.RangeIndex(n, name="position"))
    frame["sample"] = np.asarray(run.sample_indices)[:n] if n else []
    labels, predictions = _integers(run.labels), _integers(run.predictions)
    frame["label"] = pd.array(labels if labels is not None else [pd.NA] * n, dtype="Int64")
    frame["prediction"] = pd.array(
        predictions if predictions is not None else [pd.NA] * n, dtype="Int64"
    )
    scores = _scores(run, n) if predictions is not None and with_confidence else None
    frame["confidence"] = (
        confidence(scores, predictions) if scores is not None and n else np.full(n, np.nan)
    )
    frame["explained"] = explained(run, labels, predictions)
    frame["correct"] = (
        pd.array(labels == predictions, dtype="boolean")
        if labels is not None and predictions is not None
        else pd.array([pd.NA] * n, dtype="boolean")
    )
    return frame


def explained_classes(table: pd.DataFrame) -> list[int]:
    """Classes the run's stored gradients explain for at least one sample, sorted."""
    return sorted({int(c) for c in table["explained"].dropna()})


def filter_samples(
    table: pd.DataFrame,
    kind: str = "all",
    *,
    label: int | None = None,
    prediction: int | None = None,
    min_confidence: float = 0.0,
    max_confidence: float = 1.0,
) -> list[int]:
    """Positions of the samples that pass every given filter.

    Parameters
    ----------
    table
        :func:`sample_table`.
    kind
        One of :data:`FILTERS`.
    label, prediction
        Keep only this label / this prediction.
    min_confidence, max_confidence
        Keep confidences in this closed range (samples without one pass only ``0..1``).
    """
    if kind not in FILTERS:
        raise ViewError(f"unknown sample filter {kind!r}; choose one of: {', '.join(FILTERS)}")
    keep = pd.Series(True, index=table.index)
    if kind != "all":
        if table["correct"].isna().all():
            raise ViewError(
                f"filter {kind!r} needs labels and predictions; this run stores "
                + ("neither" if table["label"].isna().all() else "no predictions")
            )
        correct = table["correct"].fillna(False).astype(bool)
        keep &= correct if kind == "correct" else ~correct
    for column, value in (("label", label), ("prediction", prediction)):
        if value is not None:
            keep &= table[column].fillna(-1).astype(np.int64) == value
    if min_confidence > 0.0 or max_confidence < 1.0:
        scores = table["confidence"]
        keep &= scores.between(min_confidence, max_confidence).fillna(False).astype(bool)
    return [int(p) for p in table.index[keep]]
