"""Gradient targets: validation and per-batch classes."""

from __future__ import annotations

import numpy as np
import pytest

from tensortap.core.errors import TargetError
from tensortap.core.targets import Target, resolve_target


def test_kinds() -> None:
    assert resolve_target("predicted").kind == "predicted"
    assert resolve_target(None).kind == "predicted"
    assert resolve_target("label").needs_labels
    assert resolve_target(3) == Target("class", class_index=3)
    assert resolve_target("7").class_index == 7  # from the command line
    assert resolve_target(np.int64(2)).class_index == 2
    assert resolve_target([0, 2, 1]).kind == "classes"
    fn = resolve_target(lambda outputs, labels: outputs)
    assert fn.kind == "callable" and fn.describe().startswith("callable")
    target = Target("class", class_index=1)
    assert resolve_target(target) is target and target.describe() == "class 1"


def test_batch_classes() -> None:
    assert resolve_target(2).batch_classes(0, 3, None).tolist() == [2, 2, 2]
    assert resolve_target([5, 6, 7, 8]).batch_classes(1, 3, None).tolist() == [6, 7]
    label = resolve_target("label")
    assert label.batch_classes(0, 2, np.array([[0, 1], [1, 0]])).tolist() == [1, 0]  # one-hot
    assert label.batch_classes(0, 2, np.array([[3], [4]])).tolist() == [3, 4]
    assert resolve_target("predicted").batch_classes(0, 2, None) is None


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("top", "unknown target 'top'"),
        (-1, "negative"),
        (True, "not True"),
        (np.zeros((2, 2), int), "1-D integer"),
        ([0.5, 1.5], "1-D integer"),
    ],
)
def test_bad_targets(target: object, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        resolve_target(target)


def test_length_labels_and_range() -> None:
    with pytest.raises(TargetError, match="3 classes but the data has 2"):
        resolve_target([0, 1, 2], n_samples=2)
    with pytest.raises(TargetError, match="needs labels"):
        resolve_target("label").batch_classes(0, 2, None)
    with pytest.raises(TargetError, match=r"out of range.*0\.\.9"):
        resolve_target(10).check_classes(10)
    with pytest.raises(TargetError, match="range over 0..12"):
        resolve_target([0, 12]).check_classes(10)
    resolve_target(9).check_classes(10)
    resolve_target(99).check_classes(None)  # unknown class count: nothing to check
    assert isinstance(TargetError("x"), ValueError)
