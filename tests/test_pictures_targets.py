"""Several targets in one capture (issue 15): gradients along a ``target`` dimension, so
``tt.cam(..., class_index=k)`` explains any captured class offline.  The reference is the
same model captured once per target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tensortap as tt
from tensortap import viz
from tensortap.core.errors import TargetError, ViewError

torch = pytest.importorskip("torch")
nn = torch.nn

N, CLASSES = 10, 5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, CLASSES),
    )


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.random((N, 1, 8, 8)).astype("float32"), (np.arange(N) * 3) % CLASSES


def _capture(path: Path, target, model: nn.Module | None = None) -> tt.Run:
    return tt.capture(
        model or _model(),
        _data(),
        store=path,
        gradients=True,
        target=target,
        batch_size=4,
        progress=False,
    )


@pytest.fixture(scope="module")
def several(tmp_path_factory: pytest.TempPathFactory) -> tt.Run:
    return _capture(tmp_path_factory.mktemp("t") / "several.zarr", ["predicted", "label", "3"])


def test_three_targets_equal_three_single_captures(several: tt.Run, tmp_path: Path) -> None:
    assert several.attrs["targets"] == ["predicted", "label", "class 3"]
    assert several.gradient("1").dims[:2] == ("sample", "target")
    for index, (name, single) in enumerate(
        [("predicted", "predicted"), ("label", "label"), ("class 3", 3)]
    ):
        alone = _capture(tmp_path / f"{index}.zarr", single)
        np.testing.assert_allclose(
            several.gradient("1").isel(target=index).values, alone.gradient("1").values, atol=1e-6
        )
        for method in ("gradcam", "layercam"):
            np.testing.assert_allclose(
                tt.cam(several, "1", method=method, target=name, upsample=False).values,
                tt.cam(alone, "1", method=method, upsample=False).values,
                atol=1e-5,
            )
        np.testing.assert_array_equal(
            several.target_classes.values[:, index], alone.target_classes.values
        )


def test_class_index_picks_each_samples_captured_target(several: tt.Run, tmp_path: Path) -> None:
    _, y = _data()
    classes = several.target_classes.values  # (sample, target)
    with torch.no_grad():
        predicted = _model()(torch.from_numpy(_data()[0])).argmax(1).numpy()
    np.testing.assert_array_equal(classes[:, 0], predicted)  # the model's own argmax
    np.testing.assert_array_equal(classes[:, 1], y)
    label_cam = tt.cam(several, "1", class_index=3, upsample=False)
    np.testing.assert_array_equal(label_cam["target_class"].values, 3)
    only_3 = _capture(tmp_path / "3.zarr", 3)
    np.testing.assert_allclose(
        label_cam.values, tt.cam(only_3, "1", upsample=False).values, atol=1e-5
    )
    sample = int(np.flatnonzero((classes != 4).all(axis=1))[0])
    with pytest.raises(ViewError, match="class 4 was not among the captured targets"):
        tt.cam(several, "1", sample=[sample], class_index=4)
    with pytest.raises(ViewError, match="was not captured"):
        tt.cam(several, "1", target="top2")
    position = int(np.flatnonzero(y == 2)[0])
    viz.cam_figure(several, "1", sample=position, class_index=2)  # the label's class


def test_top_k_targets_are_the_ranked_classes(tmp_path: Path) -> None:
    run = _capture(tmp_path / "top3.zarr", "top3")
    assert run.attrs["targets"] == ["top1", "top2", "top3"]
    with torch.no_grad():
        scores = _model()(torch.from_numpy(_data()[0])).numpy()
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(run.target_classes.values, ranked)
    second = tt.cam(run, "1", target="top2", upsample=False)
    assert second.attrs["target_source"] == "rank 2 of the prediction"


def test_bad_several_targets_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="pass gradients=True"):
        tt.capture(_model(), _data(), store=None, target=["predicted", "label"], progress=False)
    with pytest.raises(TargetError, match="cannot use 'lable'"):
        _capture(tmp_path / "a.zarr", ["predicted", "lable"])
    with pytest.raises(TargetError, match="out of range"):
        _capture(tmp_path / "b.zarr", ["predicted", "9"])
    with pytest.raises(TargetError, match="names one target"):
        _capture(tmp_path / "c.zarr", ["predicted", "top1"])
