"""Model-based explanations (core/explain.py) and faithfulness (core/faithfulness.py).

References: tf-keras-vis's Scorecam (same masks, same upsampling), Captum's Occlusion, an
AblationCAM loop that runs the two halves of an ``nn.Sequential`` by hand, deletion /
insertion curves written out step by step; then a pointing game on trained toy models
(Keras and torch) for every method meant to localise, and the faithfulness ranking.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from square_task import SIZE, SQUARE, squares, trained_keras_cnn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.core.explain import explain, scorecam  # noqa: E402
from tensortap.core.explanation_store import read_explanation  # noqa: E402
from tensortap.core.faithfulness import auc, deletion_insertion, faithfulness, read_faithfulness  # noqa: E402

TOLERANCE = 2  # tolerance: 15 px at 224 (Zhang et al. 2016), scaled


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> float:
    hits = 0
    for m, (top, left) in zip(maps, boxes, strict=True):
        y, x = np.unravel_index(np.argmax(m), m.shape)
        dy = max(top - y, 0, y - (top + SQUARE - 1))
        dx = max(left - x, 0, x - (left + SQUARE - 1))
        hits += max(dy, dx) <= TOLERANCE
    return hits / len(maps)


@pytest.fixture(scope="module")
def keras_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("keras")
    model, rng = trained_keras_cnn(2)
    held, boxes = squares(24, rng, np.ones(24, dtype=bool))
    run = tt.capture(
        model,
        (held, np.ones(24, dtype=np.int64)),
        store=tmp_path_factory.mktemp("explain") / "keras.zarr",
        layers=["last_conv"],
        gradients=True,
        target="label",
        progress=False,
    )
    return {"model": model, "run": run, "x": held, "boxes": boxes}


def test_scorecam_equals_tf_keras_vis(keras_case: dict) -> None:
    pytest.importorskip("tf_keras_vis")
    from scipy.ndimage import zoom
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    from tensortap.backends.tensorflow import TensorFlowBackend

    model, run, x = keras_case["model"], keras_case["run"], keras_case["x"][:6]
    a = run.activation("last_conv").values[:6].astype(np.float64)

    def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:  # tf-keras-vis's zoom
        factor = (1, size[0] / maps.shape[1], size[1] / maps.shape[2])
        return zoom(maps, factor, order=1, mode="nearest")

    backend = TensorFlowBackend()
    classes = np.ones(6, dtype=np.int64)
    ours = scorecam(
        a, x, ("sample", "height", "width", "channel"), classes,
        lambda b: backend.scores(model, b), resize=resize,
    )  # fmt: skip
    theirs = Scorecam(model, clone=True)(
        CategoricalScore([1] * 6), x, penultimate_layer="last_conv",
        expand_cam=False, normalize_cam=False,
    )  # fmt: skip
    theirs = np.asarray(theirs)
    assert theirs.max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.max())


def test_keras_ablationcam_equals_a_loop_over_the_layers(keras_case: dict) -> None:
    import tensorflow as tf

    model, run, x = keras_case["model"], keras_case["run"], keras_case["x"][:5]
    ours = explain(model, run, "ablationcam", "last_conv", target="label", store=False)
    head = model.layers[3:]  # after last_conv: gap, logits

    def rest(h: np.ndarray) -> np.ndarray:
        for layer in head:
            h = layer(h)
        return np.asarray(h)

    a = np.asarray(tf.constant(x))
    for layer in model.layers[:3]:
        a = np.asarray(layer(a))
    base = rest(a)[:, 1]
    weights = np.zeros((len(x), a.shape[-1]))
    for k in range(a.shape[-1]):
        ablated = a.copy()
        ablated[..., k] = 0.0
        weights[:, k] = (base - rest(ablated)[:, 1]) / base
    raw = np.maximum(np.einsum("nhwc,nc->nhw", a, weights), 0.0)
    low, high = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    from tensortap.core.cam import resize_bilinear

    expected = np.clip(resize_bilinear((raw - low) / (high - low), (SIZE, SIZE)), 0, 1)
    np.testing.assert_allclose(ours.values[:5], expected, atol=1e-4)
    assert "call" not in vars(model.get_layer("last_conv"))  # the wrapper left


def test_keras_methods_point_at_the_square(keras_case: dict) -> None:
    model, run, boxes = keras_case["model"], keras_case["run"], keras_case["boxes"]
    scores = {}
    for method, layer in (
        ("scorecam", "last_conv"),
        ("ablationcam", "last_conv"),
        ("occlusion", None),
    ):
        maps = explain(model, run, method, layer, target="label", window=6, stride=2)
        assert maps.shape == (24, SIZE, SIZE) and float(maps.max()) <= 1.0
        scores[method] = pointing_game(maps.values, boxes)
    for method in ("saliency", "gradient_x_input", "smoothgrad", "integrated_gradients"):
        values = explain(model, run, method, target="label", n_samples=8).values
        scores[method] = pointing_game(np.abs(values).sum(axis=-1), boxes)
    # Vanilla gradients are noisy pixel by pixel (the reason SmoothGrad exists, Smilkov et
    # al. 2017): their single brightest pixel hits the square far less often (79 % here,
    # 38 % on the torch model), so only "well above chance" (about 10 %) is asked of them.
    assert scores.pop("saliency") >= 0.25, scores
    assert all(v >= 0.9 for v in scores.values()), scores
    back = read_explanation(tt.open_run(run.path), "scorecam-last_conv")
    assert back.dims == ("sample", "y", "x") and back.attrs["layer"] == "last_conv"


def test_deletion_insertion_curves_step_by_step() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 4, 3, 1)).astype("float32")
    maps = rng.random((2, 4, 3))
    weights = rng.normal(size=(12, 3))

    def scores(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1) @ weights

    classes = np.array([0, 2])
    d_auc, i_auc, d_curve, i_curve = deletion_insertion(
        x, ("sample", "height", "width", "channel"), maps, classes, scores, steps=4, blur_sigma=1.0
    )
    from tensortap.core.faithfulness import blur

    blurred = blur(x, ("sample", "height", "width", "channel"), 1.0)
    for s in range(2):
        order = np.argsort(-maps[s].reshape(-1), kind="stable")
        for k in range(5):
            n = int(np.ceil(k * 12 / 4))
            gone = x[s].reshape(-1).copy()
            gone[order[:n]] = 0.0
            back = blurred[s].reshape(-1).copy()
            back[order[:n]] = x[s].reshape(-1)[order[:n]]
            for got, image in ((d_curve[s, k], gone), (i_curve[s, k], back)):
                logits = image @ weights
                p = np.exp(logits - logits.max())
                assert got == pytest.approx((p / p.sum())[classes[s]], rel=1e-6)
    np.testing.assert_allclose(d_auc, np.trapezoid(d_curve, dx=0.25, axis=1))
    np.testing.assert_allclose(i_auc, np.trapezoid(i_curve, dx=0.25, axis=1))
    assert auc(np.ones(7)) == pytest.approx(1.0)


def test_faithfulness_ranks_gradcam_above_a_random_map(keras_case: dict) -> None:
    model, run = keras_case["model"], keras_case["run"]
    explain(model, run, "saliency", target="label")
    result = faithfulness(
        model, run, ["gradcam", "eigencam", "saliency"], "last_conv", target="label"
    )
    assert result["deletion_auc"].dims == ("method", "sample")
    # A uniformly random ranking on the same samples, through the same function.
    x = np.asarray(run.inputs().values)
    from tensortap.backends.tensorflow import TensorFlowBackend

    backend = TensorFlowBackend()
    random_maps = np.random.default_rng(0).random((len(x), SIZE, SIZE))
    d_random, i_random, _, _ = deletion_insertion(
        x, ("sample", "height", "width", "channel"), random_maps, np.ones(len(x), dtype=np.int64),
        lambda b: backend.scores(model, b),
    )  # fmt: skip
    gradcam = result.sel(method="gradcam")
    assert float(gradcam["deletion_auc"].mean()) < float(d_random.mean())
    assert float(gradcam["insertion_auc"].mean()) > float(i_random.mean())
    stored = read_faithfulness(tt.open_run(run.path))
    np.testing.assert_allclose(stored["deletion_auc"].values, result["deletion_auc"].values)
    assert list(stored["method"].values) == ["gradcam", "eigencam", "saliency"]

    hv = pytest.importorskip("holoviews")
    from tensortap.viz.faithfulness import faithfulness_ranking

    table = faithfulness_ranking(run)
    assert isinstance(table, hv.Table)
    ranked = table.dframe()
    assert list(ranked["method"]) == sorted(
        ["gradcam", "eigencam", "saliency"],
        key=lambda m: float(
            result.sel(method=m)["insertion_auc"].mean()
            - result.sel(method=m)["deletion_auc"].mean()
        ),
        reverse=True,
    )


# ------------------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    present = rng.random(1000) < 0.5
    x, _ = squares(len(present), rng, present)
    x = x.transpose(0, 3, 1, 2).copy()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(present.astype("int64"))
    for _ in range(6):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 32):
            idx = order[start : start + 32]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    held, boxes = squares(24, rng, np.ones(24, dtype=bool))
    held = held.transpose(0, 3, 1, 2).copy()
    run = tt.capture(
        model,
        (held, np.ones(24, dtype=np.int64)),
        store=tmp_path_factory.mktemp("explain") / "torch.zarr",
        layers=["4"],  # the last ReLU: (channel, height, width)
        gradients=True,
        target="label",
        progress=False,
    )
    return {"model": model, "run": run, "x": held, "boxes": boxes}


def test_ablationcam_equals_a_loop_over_the_two_halves(torch_case: dict) -> None:
    import torch

    model, run, x = torch_case["model"], torch_case["run"], torch_case["x"][:5]
    ours = explain(model, run, "ablationcam", "4", target="label", store=False)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        a = model[:5](xt)  # (n, 16, 16, 16) after the last ReLU
        base = model[5:](a)[:, 1]
        weights = torch.zeros(len(x), a.shape[1])
        for k in range(a.shape[1]):
            ablated = a.clone()
            ablated[:, k] = 0
            weights[:, k] = (base - model[5:](ablated)[:, 1]) / base
        raw = torch.relu((weights[:, :, None, None] * a).sum(1)).numpy()
    low, high = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    from tensortap.core.cam import resize_bilinear

    expected = np.clip(resize_bilinear((raw - low) / (high - low), (SIZE, SIZE)), 0, 1)
    np.testing.assert_allclose(ours.values[:5], expected, atol=1e-5)


def test_occlusion_equals_captum(torch_case: dict) -> None:
    import torch
    from captum.attr import Occlusion

    model, run = torch_case["model"], torch_case["run"]
    x = torch_case["x"]
    ours = explain(model, run, "occlusion", target="label", window=8, stride=4, store=False)
    theirs = Occlusion(model).attribute(
        torch.from_numpy(x), sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4),
        baselines=0.0, target=1,
    )  # fmt: skip
    raw = theirs.detach().numpy()[:, 0]
    low, high = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(ours.values, (raw - low) / (high - low), atol=1e-5)


def test_torch_methods_point_at_the_square(torch_case: dict) -> None:
    model, run, boxes = torch_case["model"], torch_case["run"], torch_case["boxes"]
    scores = {}
    for method, layer in (("ablationcam", "4"), ("scorecam", "4"), ("occlusion", None)):
        maps = explain(model, run, method, layer, target="label", window=6, stride=2)
        scores[method] = pointing_game(maps.values, boxes)
    for method in ("saliency", "smoothgrad", "integrated_gradients"):
        values = explain(model, run, method, target="label", n_samples=8).values
        scores[method] = pointing_game(np.abs(values).sum(axis=1), boxes)
    assert scores.pop("saliency") >= 0.25, scores  # see the Keras test
    assert all(v >= 0.9 for v in scores.values()), scores


def test_unknown_method_is_clear(torch_case: dict) -> None:
    with pytest.raises(tt.ViewError, match="unknown explanation method 'rise'.*scorecam"):
        explain(torch_case["model"], torch_case["run"], "rise")
    with pytest.raises(tt.ViewError, match="scorecam needs layer="):
        explain(torch_case["model"], torch_case["run"], "scorecam")
