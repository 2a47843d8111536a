"""Gradients of several targets in one capture, stored along a ``target`` dimension.

``target=["predicted", "label"]``, ``target="top3"`` or ``target=["label", "3", 7]`` (a list
holding at least one string; a list of ints alone stays one class per sample) captures,
per block, the gradients of each target's class score: ``gradient(sample, target, ...)``
and ``target_class(sample, target)`` in the run, target names in ``attrs["targets"]``.
``tt.cam(run, key, class_index=k)`` then explains any captured class offline, without
running the model again for each one.

The backend needs nothing new: :class:`MultiTargetSession` runs one ordinary session of
per-sample classes once per target (the first run also gives the outputs that rank the
classes for ``predicted`` and ``topK``), and stacks the gradients.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tensortap.core.backend import BatchResult, CaptureSession
from tensortap.core.errors import TargetError
from tensortap.core.targets import Target

__all__ = ["MultiTarget", "MultiTargetBackend", "MultiTargetSession", "TargetSpec", "parse_targets"]

_TOP = re.compile(r"^top(\d+)$")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One of several targets: the ``rank``-th predicted class, the label, or a class."""

    name: str
    kind: Literal["rank", "label", "class"]
    value: int = 0

    def classes(self, ranking: np.ndarray | None, labels: np.ndarray | None, n: int) -> np.ndarray:
        """Per-sample classes of this target for a batch of ``n``."""
        if self.kind == "class":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "label":
            return np.asarray(Target("label").batch_classes(0, n, labels), dtype=np.int64)
        assert ranking is not None
        return np.asarray(ranking[:, self.value - 1], dtype=np.int64)


def _specs(item: Any) -> list[TargetSpec]:
    if isinstance(item, str):
        word = item.strip()
        if word == "predicted":
            return [TargetSpec("predicted", "rank", 1)]
        if word == "label":
            return [TargetSpec("label", "label")]
        top = _TOP.match(word)
        if top and int(top.group(1)) >= 1:
            return [TargetSpec(f"top{r}", "rank", r) for r in range(1, int(top.group(1)) + 1)]
        if word.removeprefix("class ").isdigit():
            value = int(word.removeprefix("class "))
            return [TargetSpec(f"class {value}", "class", value)]
    elif isinstance(item, int | np.integer) and not isinstance(item, bool) and item >= 0:
        return [TargetSpec(f"class {int(item)}", "class", int(item))]
    raise TargetError(
        f"cannot use {item!r} as one of several targets; use 'predicted', 'label', "
        "'topK' (e.g. 'top3') or a class index"
    )


def parse_targets(target: Any) -> tuple[TargetSpec, ...] | None:
    """The targets of a multi-target capture, or ``None`` for a single target.

    Several targets: ``"topK"`` with K > 1, or a list/tuple holding at least one string.
    """
    if isinstance(target, str):
        top = _TOP.match(target.strip())
        return tuple(_specs(target)) if top and int(top.group(1)) > 1 else None
    if not isinstance(target, list | tuple) or not any(isinstance(t, str) for t in target):
        return None
    seen: dict[tuple[str, int], TargetSpec] = {}
    for spec in (spec for item in target for spec in _specs(item)):
        seen.setdefault((spec.kind, spec.value), spec)  # "predicted" and "top1" are one
    if len(seen) < 2:
        only = next(iter(seen.values())).name
        raise TargetError(f"target {target!r} names one target; pass it alone: {only!r}")
    return tuple(seen.values())


class MultiTarget:
    """Several targets, in the engine's place of a :class:`~tensortap.core.targets.Target`."""

    kind = "multi"

    def __init__(self, specs: Sequence[TargetSpec]) -> None:
        self.specs = tuple(specs)

    @property
    def names(self) -> list[str]:
        """Target names, in the order of the ``target`` dimension."""
        return [s.name for s in self.specs]

    @property
    def needs_labels(self) -> bool:
        return any(s.kind == "label" for s in self.specs)

    def batch_classes(self, start: int, stop: int, labels: np.ndarray | None) -> None:
        """The session decides each target's classes (it needs the outputs to rank them)."""
        return None

    def describe(self) -> str:
        return " + ".join(self.names)

    def check_classes(self, n_classes: int | None) -> None:
        if n_classes is None:
            raise TargetError("several targets need a classifier (one score per class)")
        for spec in self.specs:
            if spec.kind == "class" and not 0 <= spec.value < n_classes:
                raise TargetError(
                    f"target class {spec.value} is out of range: the model has {n_classes} "
                    f"classes (0..{n_classes - 1}); pass classes in 0..{n_classes - 1}"
                )
            if spec.kind == "rank" and spec.value > n_classes:
                raise TargetError(
                    f"{spec.name} needs at least {spec.value} classes, not {n_classes}"
                )


class MultiTargetSession(CaptureSession):
    """One backend session of per-sample classes, run once per target and stacked."""

    def __init__(self, inner: CaptureSession, target: MultiTarget) -> None:
        super().__init__()
        self.inner = inner
        self.target = target
        self.info = {**inner.info, "targets": target.names}

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> BatchResult:
        n = len(next(iter(inputs.values())))
        specs = self.target.specs
        # Targets that need no ranking are known before the first run; use one for it.
        known = [s for s in specs if s.kind != "rank"]
        first_classes = known[0].classes(None, labels, n) if known else np.zeros(n, dtype=np.int64)
        first = self.inner.run(inputs, classes=first_classes, labels=labels)
        scores = np.asarray(next(iter(first.outputs.values())))
        ranking = np.argsort(-scores.reshape(n, -1), axis=1, kind="stable")
        gradients: dict[str, list[np.ndarray]] = {key: [] for key in first.gradients}
        chosen = []
        for spec in specs:
            wanted = spec.classes(ranking, labels, n)
            result = (
                first
                if np.array_equal(wanted, first_classes)
                else self.inner.run(inputs, classes=wanted, labels=labels)
            )
            for key, value in result.gradients.items():
                gradients[key].append(np.asarray(value))
            chosen.append(wanted)
        return BatchResult(
            outputs=first.outputs,
            activations=first.activations,
            gradients={key: np.stack(values, axis=1) for key, values in gradients.items()},
            target_classes=np.stack(chosen, axis=1),
            predictions=first.predictions,  # the backend's argmax of the gradients' scores
        )

    def close(self) -> None:
        self.inner.close()


class MultiTargetBackend:
    """A backend whose sessions capture several targets (everything else delegated)."""

    #: Statistics come from the activations in NumPy (the inner runs would repeat them).
    supports_partial_stats = False

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def session(
        self, model: Any, nodes: Any, *, gradients: bool = True, target: Any = None
    ) -> MultiTargetSession:
        if not isinstance(target, MultiTarget):
            raise TargetError("MultiTargetBackend needs a MultiTarget")
        inner = self._backend.session(model, nodes, gradients=True, target=Target("classes"))
        return MultiTargetSession(inner, target)
