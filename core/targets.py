"""Gradient targets: which per-sample scalar the gradients are taken of.

A target is ``"predicted"`` (the top-1 score of each sample), ``"label"`` (the score of
each sample's label), an ``int`` class, an array of per-sample classes, or a callable
``(outputs, labels) -> per-sample scalar`` written in the model's framework.  Backends
evaluate the scalar inside their compiled step; this module validates and normalises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tensortap.core.errors import TargetError

__all__ = ["Target", "TargetKind", "resolve_target"]

TargetKind = Literal["predicted", "label", "class", "classes", "callable"]


@dataclass(frozen=True, slots=True)
class Target:
    """A validated gradient target.

    Attributes
    ----------
    kind : {"predicted", "label", "class", "classes", "callable"}
        How the per-sample class (or scalar) is chosen.
    class_index : int or None
        The class, for ``kind="class"``.
    classes : numpy.ndarray or None
        One class per sample (global sample order), for ``kind="classes"``.
    function : callable or None
        ``(outputs, labels) -> per-sample scalar``, for ``kind="callable"``.
    """

    kind: TargetKind
    class_index: int | None = None
    classes: np.ndarray | None = None
    function: Callable[..., Any] | None = None

    @property
    def needs_labels(self) -> bool:
        """Whether the batches must carry labels."""
        return self.kind == "label"

    def batch_classes(self, start: int, stop: int, labels: np.ndarray | None) -> np.ndarray | None:
        """Per-sample class indices for samples ``start:stop``, or ``None`` when the
        backend decides in-graph (``predicted``) or the target is a callable."""
        n = stop - start
        if self.kind == "class":
            return np.full(n, self.class_index, dtype=np.int64)
        if self.kind == "classes":
            assert self.classes is not None
            return np.asarray(self.classes[start:stop], dtype=np.int64)
        if self.kind == "label":
            if labels is None:
                raise TargetError("target='label' needs labels; pass labels= or (x, y) data")
            flat = np.asarray(labels)
            if flat.ndim == 2 and flat.shape[1] > 1:  # one-hot labels
                flat = flat.argmax(axis=1)
            return flat.reshape(n).astype(np.int64)
        return None

    def describe(self) -> str:
        """Short description stored in the run's attrs."""
        if self.kind == "class":
            return f"class {self.class_index}"
        if self.kind == "callable":
            name = getattr(self.function, "__qualname__", type(self.function).__name__)
            return f"callable {name}"
        return self.kind

    def check_classes(self, n_classes: int | None) -> None:
        """Fail early when a class index cannot exist in an output of ``n_classes`` scores."""
        if n_classes is None:
            return
        if self.kind == "class" and not 0 <= int(self.class_index or 0) < n_classes:
            raise TargetError(
                f"target class {self.class_index} is out of range: the model has {n_classes} "
                f"classes (0..{n_classes - 1}); pass a class in 0..{n_classes - 1}, "
                "'predicted' or 'label'"
            )
        if self.kind == "classes" and self.classes is not None and self.classes.size:
            low, high = int(self.classes.min()), int(self.classes.max())
            if low < 0 or high >= n_classes:
                raise TargetError(
                    f"target classes range over {low}..{high} but the model has {n_classes} "
                    f"classes (0..{n_classes - 1})"
                )


def resolve_target(target: Any, *, n_samples: int | None = None) -> Target:
    """Validate a user-supplied target.

    Parameters
    ----------
    target : str, int, array-like or callable
        See the module docstring.
    n_samples : int, optional
        Number of samples, when known, to check a per-sample array's length.

    Returns
    -------
    Target

    Raises
    ------
    TargetError
        For an unknown string, a negative class, or an array of the wrong length.
    """
    if isinstance(target, Target):
        return target
    if target is None or (isinstance(target, str) and target == "predicted"):
        return Target("predicted")
    if isinstance(target, str):
        if target == "label":
            return Target("label")
        if target.lstrip("-").isdigit():  # from the command line
            return resolve_target(int(target), n_samples=n_samples)
        raise TargetError(
            f"unknown target {target!r}; use 'predicted', 'label', a class index, "
            "an array of per-sample classes or a callable (outputs, labels) -> scalar"
        )
    if isinstance(target, bool):
        raise TargetError(f"target must be a class index, not {target!r}")
    if isinstance(target, (int, np.integer)):
        if target < 0:
            raise TargetError(
                f"target class {target} is negative; classes count from 0: pass a class "
                "index >= 0, 'predicted' or 'label'"
            )
        return Target("class", class_index=int(target))
    if callable(target):
        return Target("callable", function=target)
    classes = np.asarray(target)
    if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer):
        raise TargetError(
            f"a per-sample target must be a 1-D integer array, got shape {classes.shape} "
            f"dtype {classes.dtype}"
        )
    if n_samples is not None and len(classes) != n_samples:
        raise TargetError(
            f"target has {len(classes)} classes but the data has {n_samples} samples; "
            "give one class per sample"
        )
    return Target("classes", classes=classes.astype(np.int64))
