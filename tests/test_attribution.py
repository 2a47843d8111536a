"""Input attributions (core/attribution.py) against Captum, tf-keras-vis and GradientTape.

Both backends: a small torch CNN compared with Captum's Saliency, InputXGradient,
IntegratedGradients and NoiseTunnel (fed the very noise Captum draws under a fixed torch
seed), and a small Keras CNN compared with tf-keras-vis's Saliency and an explicit
GradientTape.  Results are stored in the run and read back with the input's dims.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensortap as tt
from tensortap.core.attribution import attribute, integration_points, smoothgrad
from tensortap.core.explanation_store import explanation_names, read_explanation


# ------------------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.Tanh(),  # smooth: IG's quadrature converges, no ReLU kinks
        nn.Conv2d(6, 8, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()
    x = np.random.default_rng(0).normal(size=(5, 3, 10, 10)).astype("float32")
    run = tt.capture(
        model, x, store=tmp_path_factory.mktemp("attr") / "torch.zarr", layers=["2"], progress=False
    )
    with torch.no_grad():
        classes = model(torch.from_numpy(x)).argmax(1).numpy()
    return {"model": model, "x": x, "run": run, "classes": classes}


def test_torch_saliency_and_gradient_x_input_equal_captum(torch_case: dict) -> None:
    import torch
    from captum.attr import InputXGradient, Saliency

    model, x, classes = torch_case["model"], torch_case["x"], torch_case["classes"]
    xt, target = torch.from_numpy(x), torch.from_numpy(classes)
    ours = attribute(model, torch_case["run"], "saliency")
    theirs = Saliency(model).attribute(xt, target=target, abs=True).numpy()
    assert ours.dims == ("sample", "channel", "height", "width")
    np.testing.assert_allclose(ours.values, theirs, rtol=1e-5, atol=1e-7)
    ours = attribute(model, torch_case["run"], "gradient_x_input")
    theirs = InputXGradient(model).attribute(xt.clone(), target=target).detach().numpy()
    np.testing.assert_allclose(ours.values, theirs, rtol=1e-5, atol=1e-7)


# Not riemann_trapezoid: Captum weights its n points 1/n (halved at the ends), which sums
# to (n-1)/n; ours is the trapezoid rule proper, weights 1/(n-1).
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_left"])
def test_torch_integrated_gradients_equal_captum(torch_case: dict, rule: str) -> None:
    import torch
    from captum.attr import IntegratedGradients

    model, x = torch_case["model"], torch_case["x"]
    ours = attribute(model, torch_case["run"], "integrated_gradients", steps=32, rule=rule)
    theirs = (
        IntegratedGradients(model)
        .attribute(
            torch.from_numpy(x),
            baselines=0.0,
            target=torch.from_numpy(torch_case["classes"]),
            n_steps=32,
            method=rule,
        )
        .detach()
        .numpy()
    )
    np.testing.assert_allclose(ours.values, theirs, rtol=1e-4, atol=1e-6)


def test_torch_smoothgrad_equals_captum_noise_tunnel(torch_case: dict) -> None:
    import torch
    from captum.attr import NoiseTunnel, Saliency

    from tensortap.backends.torch import TorchBackend

    model, x, classes = torch_case["model"], torch_case["x"], torch_case["classes"]
    n, sigma = 6, 0.3
    torch.manual_seed(7)
    theirs = (
        NoiseTunnel(Saliency(model))
        .attribute(
            torch.from_numpy(x),
            nt_type="smoothgrad",
            nt_samples=n,
            stdevs=sigma,
            target=torch.from_numpy(classes),
        )
        .numpy()
    )
    # Captum's draw: one torch.normal of (batch * n, ...) after repeat_interleave.
    torch.manual_seed(7)
    drawn = torch.normal(0, torch.tensor(sigma).repeat((len(x) * n, *x.shape[1:]))).numpy()
    noise = drawn.reshape(len(x), n, *x.shape[1:]).swapaxes(0, 1)
    backend = TorchBackend()
    ours = smoothgrad(lambda b, c: backend.input_gradients(model, b, c)[0], x, classes, noise=noise)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    # Seeded NumPy noise: the same seed, the same map; another seed, another map.
    first = attribute(model, x, "smoothgrad", n_samples=4, sigma=0.3, seed=1, store=False)
    again = attribute(model, x, "smoothgrad", n_samples=4, sigma=0.3, seed=1, store=False)
    other = attribute(model, x, "smoothgrad", n_samples=4, sigma=0.3, seed=2, store=False)
    np.testing.assert_array_equal(first.values, again.values)
    assert not np.allclose(first.values, other.values)


def test_attributions_are_stored_in_the_run(torch_case: dict) -> None:
    run = torch_case["run"]
    ours = attribute(torch_case["model"], run, "integrated_gradients", steps=8)
    assert "integrated_gradients" in explanation_names(run)
    back = read_explanation(tt.open_run(run.path), "integrated_gradients")
    assert back.dims == ("sample", "channel", "height", "width")
    np.testing.assert_array_equal(back.values, ours.values)
    assert back.attrs["steps"] == 8 and back.attrs["method"] == "integrated_gradients"
    reopened = tt.open_run(run.path)  # the captured run still reads as before
    assert reopened.samples == 5 and reopened.layers == ("2",)
    with pytest.raises(tt.ViewError, match="no explanation 'gradcam'.*integrated_gradients"):
        read_explanation(run, "gradcam")


def test_integrated_gradients_completeness(torch_case: dict) -> None:
    """Sundararajan et al.'s axiom: attributions sum to S(x) - S(baseline)."""
    import torch

    model, x, classes = torch_case["model"], torch_case["x"], torch_case["classes"]
    ig = attribute(model, x, "integrated_gradients", steps=64, store=False).values
    with torch.no_grad():
        s = model(torch.from_numpy(x)).numpy()[np.arange(len(x)), classes]
        s0 = model(torch.zeros_like(torch.from_numpy(x))).numpy()[np.arange(len(x)), classes]
    np.testing.assert_allclose(ig.reshape(len(x), -1).sum(axis=1), s - s0, rtol=1e-3, atol=1e-4)


def test_integration_points() -> None:
    alphas, weights = integration_points(5)
    assert weights.sum() == pytest.approx(1.0)
    # Gauss-Legendre with 5 points integrates x^9 on [0, 1] exactly: 1/10.
    assert (weights * alphas**9).sum() == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ValueError, match="unknown integration rule 'simpson'"):
        integration_points(4, "simpson")


def test_bad_method_and_target_are_clear(torch_case: dict) -> None:
    with pytest.raises(tt.ViewError, match="unknown attribution method 'lrp'.*saliency"):
        attribute(torch_case["model"], torch_case["run"], "lrp")
    with pytest.raises(tt.TargetError, match="target='label' needs labels"):
        attribute(torch_case["model"], torch_case["x"], "saliency", target="label")


# ------------------------------------------------------------------------------- Keras
@pytest.fixture(scope="module")
def keras_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="tanh", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="logits"),
            keras.layers.Softmax(name="probs"),  # class targets use the logits
        ]
    )
    x = np.random.default_rng(1).normal(size=(5, 10, 10, 3)).astype("float32")
    run = tt.capture(
        model,
        x,
        store=tmp_path_factory.mktemp("attr") / "keras.zarr",
        layers=["conv"],
        progress=False,
    )
    return {"model": model, "x": x, "run": run}


def _logits_model(model):  # noqa: ANN001, ANN202
    import keras

    return keras.Model(model.inputs, model.get_layer("logits").output)


def test_keras_saliency_equals_tf_keras_vis(keras_case: dict) -> None:
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    model, x = keras_case["model"], keras_case["x"]
    ours = attribute(model, keras_case["run"], "saliency")
    classes = ours.attrs["classes"]
    logits = _logits_model(model)
    assert classes == np.argmax(logits.predict(x, verbose=0), axis=1).tolist()
    theirs = Saliency(logits, clone=True)(
        CategoricalScore(classes), x, keepdims=True, normalize_map=False
    )
    assert ours.dims == ("sample", "height", "width", "channel")
    np.testing.assert_allclose(ours.values, np.asarray(theirs), rtol=1e-4, atol=1e-7)


def test_keras_integrated_gradients_equal_gradient_tape(keras_case: dict) -> None:
    import tensorflow as tf

    model, x = keras_case["model"], keras_case["x"]
    ours = attribute(model, keras_case["run"], "integrated_gradients", steps=16)
    classes = np.asarray(ours.attrs["classes"])
    logits = _logits_model(model)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    total = np.zeros_like(x, dtype=np.float64)
    for node, weight in zip(nodes, weights, strict=True):
        point = tf.constant(x * (node + 1.0) / 2.0)
        with tf.GradientTape() as tape:
            tape.watch(point)
            score = tf.gather(logits(point), classes, batch_dims=1)
        total += weight / 2.0 * tape.gradient(score, point).numpy()
    np.testing.assert_allclose(ours.values, x * total, rtol=1e-4, atol=1e-6)
    smooth = attribute(model, keras_case["run"], "smoothgrad", n_samples=3, sigma=0.2)
    assert smooth.shape == x.shape and np.isfinite(smooth.values).all()
