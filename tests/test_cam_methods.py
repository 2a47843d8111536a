"""The CAM methods of core/cam_methods.py: the papers' formulas in NumPy, scikit-learn's
PCA and KernelPCA, eigen_smooth, the multi-layer fusion, gradient-free runs, a framework-free
reader, and a pointing game on a trained toy task.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from fake_runs import FakeRun  # noqa: E402
from square_task import SIZE, SQUARE, squares, trained_keras_cnn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.core.cam import CAM_METHODS, cam_maps  # noqa: E402
from tensortap.core.cam_fusion import fused_cam  # noqa: E402

NEW_METHODS = ("gradcam-elementwise", "eigencam", "eigengradcam", "kpca-cam", "fem")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("keras")
    model, rng = trained_keras_cnn(1)
    held_out, boxes = squares(40, rng, np.ones(40, dtype=bool))
    root = tmp_path_factory.mktemp("cam_methods")
    run = tt.capture(
        model,
        (held_out, np.ones(40, dtype=np.int64)),
        store=root / "grad.zarr",
        layers=["conv", "last_conv"],
        gradients=True,
        target="label",
        progress=False,
    )
    plain = tt.capture(
        model, held_out, store=root / "plain.zarr", layers=["last_conv"], progress=False
    )
    return {"model": model, "run": run, "plain": plain, "x": held_out, "boxes": boxes}


# ----------------------------------------------------------------------------- references
def _first_component(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """One sample: centred SVD projection on v1, signed to agree with ``reference``."""
    h, w, c = x.shape
    flat = x.reshape(h * w, c)
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    ref = reference.reshape(-1) - reference.mean()
    if projection @ ref < 0:
        projection = -projection
    return projection.reshape(h, w)


def _reference(a: np.ndarray, g: np.ndarray, method: str) -> np.ndarray:
    """Each paper's map, one sample at a time, channel loops where the formula has a sum."""
    out = np.zeros(a.shape[:3])
    for s in range(a.shape[0]):
        A, G = a[s], g[s]
        if method == "gradcam-elementwise":
            m = sum(np.maximum(G[..., c] * A[..., c], 0.0) for c in range(A.shape[-1]))
        elif method == "eigencam":
            m = _first_component(A, A.sum(axis=-1))
        elif method == "eigengradcam":
            m = _first_component(G * A, A.sum(axis=-1))
        elif method == "fem":
            m = np.zeros(A.shape[:2])
            for c in range(A.shape[-1]):
                mu, sigma = A[..., c].mean(), A[..., c].std()
                m += mu * (A[..., c] >= mu + 2.0 * sigma)
        else:
            raise AssertionError(method)
        out[s] = np.maximum(m, 0.0)
    return out


@pytest.mark.parametrize("method", ["gradcam-elementwise", "eigencam", "eigengradcam", "fem"])
def test_method_equals_numpy_formula(trained: dict, method: str) -> None:
    run = trained["run"]
    a = run.activation("last_conv").values.astype(np.float64)
    g = run.gradient("last_conv").values.astype(np.float64)
    expected = _reference(a, g, method)
    assert expected.max() > 0
    got = cam_maps(a, g, method)
    np.testing.assert_allclose(got, expected, atol=1e-8 * np.abs(expected).max())
    view = tt.cam(run, "last_conv", method=method, upsample=False, normalize=False)
    np.testing.assert_allclose(view.values, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_eigencam_equals_scikit_learn_pca(trained: dict) -> None:
    from sklearn.decomposition import PCA

    a = trained["run"].activation("last_conv").values.astype(np.float64)
    got = cam_maps(a, None, "eigencam")
    for s in range(len(a)):
        flat = a[s].reshape(-1, a.shape[-1])
        theirs = PCA(n_components=1, svd_solver="full").fit_transform(flat)[:, 0]
        sign = np.sign(theirs @ (flat.sum(axis=1) - flat.sum(axis=1).mean()))
        np.testing.assert_allclose(
            got[s].reshape(-1), np.maximum(sign * theirs, 0.0), atol=1e-8 * np.abs(theirs).max()
        )


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf"])
def test_kpca_cam_equals_scikit_learn_kernel_pca(trained: dict, kernel: str) -> None:
    from sklearn.decomposition import KernelPCA

    from tensortap.core.cam_methods import kpca_cam

    a = trained["run"].activation("last_conv").values.astype(np.float64)[:6]
    got = kpca_cam(a, kernel=kernel)
    for s in range(len(a)):
        flat = a[s].reshape(-1, a.shape[-1])
        centred = flat - flat.mean(axis=0)
        theirs = KernelPCA(n_components=1, kernel=kernel, eigen_solver="dense").fit_transform(
            centred
        )[:, 0]
        sign = np.sign(theirs @ (flat.sum(axis=1) - flat.sum(axis=1).mean()))
        np.testing.assert_allclose(
            got[s].reshape(-1), np.maximum(sign * theirs, 0.0), atol=1e-7 * np.abs(theirs).max()
        )


@pytest.mark.parametrize("method", ["gradcam", "layercam", "hirescam", "gradcam-elementwise"])
def test_eigen_smooth_is_the_first_component_of_the_weighted_activations(
    trained: dict, method: str
) -> None:
    run = trained["run"]
    a = run.activation("last_conv").values.astype(np.float64)
    g = run.gradient("last_conv").values.astype(np.float64)
    terms = {
        "gradcam": a * g.mean(axis=(1, 2))[:, None, None, :],
        "layercam": np.maximum(g, 0) * a,
        "hirescam": g * a,
        "gradcam-elementwise": np.maximum(g * a, 0),
    }[method]
    expected = np.stack(
        [np.maximum(_first_component(t, a_s.sum(-1)), 0) for t, a_s in zip(terms, a, strict=True)]
    )
    got = tt.cam(
        run, "last_conv", method=method, upsample=False, normalize=False, eigen_smooth=True
    )
    np.testing.assert_allclose(got.values, expected, rtol=1e-4, atol=1e-6 * expected.max())
    assert got.attrs["eigen_smooth"] == 1


def test_fusion_is_the_mean_of_normalised_layer_maps(trained: dict) -> None:
    run = trained["run"]
    fused = fused_cam(run, ["conv", "last_conv"], "gradcam", sample=[0, 1, 2])
    parts = []
    for key in ("conv", "last_conv"):
        a = run.activation(key).values[:3].astype(np.float64)
        g = run.gradient(key).values[:3].astype(np.float64)
        raw = np.maximum(np.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2))), 0)
        low, high = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
        norm = (raw - low) / np.where(high > low, high - low, 1)
        cv2 = pytest.importorskip("cv2")
        parts.append(
            np.stack([cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for m in norm])
        )
    mean = np.mean(parts, axis=0)
    low, high = mean.min(axis=(1, 2), keepdims=True), mean.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(fused.values, (mean - low) / (high - low), atol=1e-5)
    assert fused.attrs["layers"] == ["conv", "last_conv"]


def test_gradient_free_methods_work_without_gradients(trained: dict) -> None:
    plain = trained["plain"]
    assert not plain.has_gradient("last_conv")
    for method in ("eigencam", "kpca-cam", "fem"):
        maps = tt.cam(plain, "last_conv", method=method)
        same = tt.cam(trained["run"], "last_conv", method=method)  # same activations
        assert maps.shape == (40, SIZE, SIZE) and float(maps.max()) > 0.5
        np.testing.assert_allclose(maps.values, same.values, atol=1e-6)
    with pytest.raises(tt.NoGradientsError, match="gradient-free method: eigencam, fem, kpca-cam"):
        tt.cam(plain, "last_conv", method="eigengradcam")


# Offline from the run alone: no framework importable, only the run folder.
OFFLINE = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "torch"):
                raise ImportError(name + " is blocked")
    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensortap as tt
    run = tt.open_run(sys.argv[1])
    from tensortap.core.cam import CAM_METHODS
    for method in sorted(CAM_METHODS):
        maps = tt.cam(run, "last_conv", method=method, eigen_smooth=method == "gradcam")
        assert maps.shape == (40, 32, 32) and np.isfinite(maps.values).all(), method
    assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "torch")]
    print("ok")
    """
)


def test_offline_methods_run_without_the_framework(trained: dict) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE, str(trained["run"].path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


#: The pointing game's tolerance: 15 pixels at 224 (Zhang et al., "Top-down neural attention
#: by excitation backprop", ECCV 2016), scaled to these 32-pixel images.
TOLERANCE = 2


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> float:
    """Fraction of maps whose maximum lies within TOLERANCE pixels of the square."""
    hits = 0
    for m, (top, left) in zip(maps, boxes, strict=True):
        y, x = np.unravel_index(np.argmax(m), m.shape)
        dy = max(top - y, 0, y - (top + SQUARE - 1))
        dx = max(left - x, 0, x - (left + SQUARE - 1))
        hits += max(dy, dx) <= TOLERANCE
    return hits / len(maps)


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_pointing_game_on_trainedsquares(trained: dict, method: str) -> None:
    maps = tt.cam(trained["run"], "last_conv", method=method).values
    score = pointing_game(maps, trained["boxes"])
    assert score >= 0.9, f"{method}: pointing game {score:.0%}"


def test_new_methods_on_a_channels_first_fake_run() -> None:
    rng = np.random.default_rng(3)
    a = np.maximum(rng.normal(size=(3, 6, 5, 4)), 0)
    g = rng.normal(size=a.shape)
    last = FakeRun(
        {"conv": (("height", "width", "channel"), a)},
        gradients={"conv": g},
        inputs=(("height", "width", "channel"), rng.random((3, 12, 10, 1))),
    )
    first = FakeRun(
        {"conv": (("channel", "height", "width"), a.transpose(0, 3, 1, 2))},
        gradients={"conv": g.transpose(0, 3, 1, 2)},
        inputs=(("height", "width", "channel"), rng.random((3, 12, 10, 1))),
    )
    for method in NEW_METHODS:
        np.testing.assert_allclose(
            tt.cam(last, "conv", method=method).values,
            tt.cam(first, "conv", method=method).values,
            atol=1e-6,
        )


def test_kpca_cam_equals_scikit_learn_when_the_kernel_mean_is_negative() -> None:
    """A negative offset pushes the sigmoid kernel below zero on average: the double centring
    must add the kernel's own mean back (adding the centred matrix's mean picked the
    constant vector as the top component)."""
    from sklearn.decomposition import KernelPCA

    from tensortap.core.cam_methods import kpca_cam

    rng = np.random.default_rng(4)
    a = 6.0 * rng.normal(size=(3, 4, 4, 8))
    got = kpca_cam(a, coef0=-3.0)
    for s in range(len(a)):
        flat = a[s].reshape(-1, 8)
        centred = flat - flat.mean(axis=0)
        kernel = np.tanh(centred @ centred.T / 8 - 3.0)
        assert kernel.mean() < 0  # the case this test is about
        theirs = KernelPCA(
            n_components=1, kernel="sigmoid", coef0=-3.0, eigen_solver="dense"
        ).fit_transform(centred)[:, 0]
        sign = np.sign(theirs @ (flat.sum(axis=1) - flat.sum(axis=1).mean()))
        np.testing.assert_allclose(
            got[s].reshape(-1), np.maximum(sign * theirs, 0.0), atol=1e-7 * np.abs(theirs).max()
        )
