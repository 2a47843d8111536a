"""The Grad-CAM family (core/cam.py): NumPy references, tf-keras-vis, a trained-model sanity check.

One small CNN is trained once per module (a few seconds) to tell images holding one bright
square from noise; a run of held-out images with squares is captured with gradients of the
"square" class.  The maps of that run are compared with references written here from the
stored tensors, with tf-keras-vis, and with where the square really is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from fake_runs import FakeRun  # noqa: E402
from square_task import SIZE, SQUARE, squares, trained_keras_cnn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.core.cam import CAM_METHODS, normalize_maps, resize_bilinear  # noqa: E402

LAYER = "last_conv"  # the square task's last convolution


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("keras")
    model, rng = trained_keras_cnn(0, metrics=["accuracy"])

    held_out, boxes = squares(40, rng, np.ones(40, dtype=bool))
    run = tt.capture(
        model,
        (held_out, np.ones(40, dtype=np.int64)),
        store=tmp_path_factory.mktemp("cam") / "r.zarr",
        layers=["conv", LAYER, "gap"],
        gradients=True,
        target="label",
        progress=False,
    )
    return {"model": model, "run": run, "x": held_out, "boxes": boxes}


# ----------------------------------------------------------------------------- references
def _reference(a: np.ndarray, g: np.ndarray, method: str) -> np.ndarray:
    """The published formulas, one sample and one channel at a time (no shared code)."""
    n, h, w, c = a.shape
    out = np.zeros((n, h, w))
    for s in range(n):
        for k in range(c):
            A, G = a[s, :, :, k], g[s, :, :, k]
            if method == "gradcam":
                out[s] += G.mean() * A
            elif method == "gradcam++":
                denominator = 2 * G**2 + A.sum() * G**3
                alpha = np.divide(G**2, denominator, out=np.zeros_like(G), where=denominator != 0)
                out[s] += (alpha * np.maximum(G, 0)).sum() * A
            elif method == "layercam":
                out[s] += np.maximum(G, 0) * A
            elif method == "hirescam":
                out[s] += G * A
            elif method == "xgradcam":
                total = A.sum()
                out[s] += ((A * G).sum() / total if total != 0 else 0.0) * A
    out = np.maximum(out, 0)
    for s in range(n):  # min-max per sample; a flat map is 0 (or 1 if positive)
        low, high = out[s].min(), out[s].max()
        out[s] = (out[s] - low) / (high - low) if high > low else float(high > 0)
    return out


# The methods of core/cam_methods.py have their references in tests/test_cam_methods.py.
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"])
def test_method_equals_numpy_reference(trained: dict, method: str) -> None:
    run = trained["run"]
    a = run.activation(LAYER).values.astype(np.float64)
    g = run.gradient(LAYER).values.astype(np.float64)
    assert np.abs(g).max() > 0
    expected = _reference(a, g, method)
    got = tt.cam(run, LAYER, method=method, upsample=False)
    assert got.dims == ("sample", "y", "x")
    np.testing.assert_allclose(got.values, expected, atol=1e-5)
    # At the input's size: in [0, 1], and the bilinear resize of the layer-size map.
    full = tt.cam(run, LAYER, method=method, sample=[0, 5])
    assert full.shape == (2, SIZE, SIZE)
    assert 0.0 <= float(full.min()) and float(full.max()) <= 1.0
    np.testing.assert_allclose(
        full.values, resize_bilinear(expected[[0, 5]], (SIZE, SIZE)), atol=1e-5
    )


def test_resize_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    maps = np.random.default_rng(1).random((2, 7, 5))
    for size in ((28, 20), (3, 2)):
        ref = np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_LINEAR) for m in maps])
        np.testing.assert_allclose(resize_bilinear(maps, size), ref, atol=1e-12)


def test_gradcam_equals_tf_keras_vis(trained: dict) -> None:
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    run, x = trained["run"], trained["x"]
    ours = tt.cam(run, LAYER, method="gradcam", upsample=False, normalize=False).values
    theirs = Gradcam(trained["model"], clone=True)(
        CategoricalScore([1] * len(x)),
        x,
        penultimate_layer=LAYER,
        expand_cam=False,
        normalize_cam=False,  # tf-keras-vis applies ReLU like Grad-CAM
    )
    theirs = np.asarray(theirs)
    span = float(theirs.max() - theirs.min())
    assert span > 0 and (theirs > 0).mean() > 0.05  # a trained model: maps are not all zero
    assert np.abs(ours - theirs).max() <= 1e-5 * span


def test_trained_gradcam_peaks_inside_the_square(trained: dict) -> None:
    maps = tt.cam(trained["run"], LAYER, method="gradcam").values
    hits = 0
    for m, (top, left) in zip(maps, trained["boxes"], strict=True):
        y, x = np.unravel_index(np.argmax(m), m.shape)
        hits += top <= y < top + SQUARE and left <= x < left + SQUARE
    assert hits / len(maps) >= 0.9, f"peak inside the square in {hits}/{len(maps)} samples"


# ----------------------------------------------------------------------------- behaviour
def _fake(channels_first: bool = False, zero: bool = False) -> FakeRun:
    rng = np.random.default_rng(2)
    a = np.maximum(rng.normal(size=(4, 6, 5, 3)), 0) * (0 if zero else 1)
    g = rng.normal(size=(4, 6, 5, 3))
    dims = ("height", "width", "channel")
    if channels_first:
        a, g, dims = (
            a.transpose(0, 3, 1, 2),
            g.transpose(0, 3, 1, 2),
            ("channel", "height", "width"),
        )
    return FakeRun(
        {"conv": (dims, a), "dense": (("unit",), rng.normal(size=(4, 3)))},
        gradients={"conv": g},
        inputs=(("height", "width", "channel"), rng.random((4, 12, 10, 1))),
    )


def test_dims_found_by_name_channels_first() -> None:
    for method in CAM_METHODS:
        last, first = (tt.cam(_fake(cf), "conv", method=method) for cf in (False, True))
        assert last.shape == (4, 12, 10)  # the stored input's size
        np.testing.assert_allclose(last.values, first.values, atol=1e-6)


def test_all_zero_map_stays_zero() -> None:
    result = tt.cam(_fake(zero=True), "conv", method="gradcam")
    assert not np.isnan(result.values).any() and float(np.abs(result.values).max()) == 0.0
    assert normalize_maps(np.full((1, 2, 2), 3.0)).min() == 1.0  # flat but positive


def test_errors_are_clear(trained: dict, tmp_path: Path) -> None:
    run = _fake()
    with pytest.raises(tt.ViewError, match="gradcam, gradcam\\+\\+, layercam, hirescam, xgradcam"):
        tt.cam(run, "conv", method="scorecam")
    with pytest.raises(tt.ViewError, match="'dense'.*spatial"):
        tt.cam(run, "dense")
    with pytest.raises(tt.ViewError, match="sample 4 is out of range.*4 committed"):
        tt.cam(run, "conv", sample=4)
    with pytest.raises(tt.LayerNotFoundError, match="conv"):
        tt.cam(run, "cnov")
    plain = tt.capture(
        trained["model"],
        trained["x"][:4],
        store=tmp_path / "plain.zarr",
        layers=[LAYER],
        progress=False,
    )
    with pytest.raises(tt.NoGradientsError, match="gradients=True"):
        tt.cam(plain, LAYER)
