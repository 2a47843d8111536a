"""Input attributions computed by the capture step (``tt.capture(attributions=...)``).

Stored arrays against independent references on the same batch: Captum (torch: Saliency,
InputXGradient, IntegratedGradients, and Saliency over the run's own SmoothGrad noise) and
an explicit ``tf.GradientTape`` written here (TensorFlow).  Also: the arrays open with
``xr.open_datatree`` with the input's dims and pass ``verify``; a ``kill -9``-ed capture
resumes them with each sample once; the CLI's ``--attributions``; one-line refusals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import tensortap as tt
from tensortap.core.capture_attributions import parse_attributions
from tensortap.core.errors import OptionError, TargetError

sys.path.insert(0, str(Path(__file__).parent))
import attribution_crash_worker as worker  # noqa: E402

METHODS = ["saliency", "gradient_x_input", "smoothgrad", "integrated_gradients"]
OPTIONS = {"n_samples": 4, "sigma": 0.3, "seed": 3, "steps": 8}


def _tree(path: Path) -> xr.DataTree:
    return xr.open_datatree(path, engine="zarr", consolidated=False)


# ------------------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 4),
        nn.Softmax(dim=1),  # the target is the logit feeding it, as for the gradients
    ).eval()
    x = np.random.default_rng(0).normal(size=(10, 3, 8, 8)).astype("float32")
    path = tmp_path_factory.mktemp("cattr") / "torch.zarr"
    run = tt.capture(
        model,
        x,
        store=path,
        layers=["0"],
        gradients=True,
        batch_size=4,
        progress=False,
        attributions=METHODS,
        attribution_options=OPTIONS,
    )
    return {"model": model, "x": x, "run": run, "path": path}


def test_torch_stored_attributions_equal_captum(torch_case: dict) -> None:
    import torch
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    model, x, run = torch_case["model"], torch_case["x"], torch_case["run"]
    logits = model[:-1]  # Captum differentiates what it is given: the pre-softmax scores
    xt = torch.from_numpy(x)
    with torch.no_grad():
        classes = logits(xt).argmax(1)
    np.testing.assert_array_equal(run.target_classes.values, classes.numpy())
    tree = _tree(torch_case["path"])
    stored = {m: tree[f"attributions/{m}"] for m in METHODS}
    for array in stored.values():
        assert array.dims == ("sample", "channel", "height", "width")
        assert array.dtype == np.float32
    saliency = Saliency(logits).attribute(xt, target=classes, abs=True).numpy()
    np.testing.assert_allclose(stored["saliency"].values, saliency, rtol=1e-5, atol=1e-7)
    gxi = InputXGradient(logits).attribute(xt.clone(), target=classes).detach().numpy()
    np.testing.assert_allclose(stored["gradient_x_input"].values, gxi, rtol=1e-5, atol=1e-7)
    ig = (
        IntegratedGradients(logits)
        .attribute(xt, baselines=0.0, target=classes, n_steps=8, method="gausslegendre")
        .detach()
        .numpy()
    )
    np.testing.assert_allclose(stored["integrated_gradients"].values, ig, rtol=1e-4, atol=1e-6)
    # SmoothGrad: Captum's Saliency over noise drawn per sample from default_rng([seed, i])
    rng_noise = np.stack(
        [
            np.random.default_rng([OPTIONS["seed"], i]).normal(
                0.0, OPTIONS["sigma"], size=(OPTIONS["n_samples"], *x.shape[1:])
            )
            for i in range(len(x))
        ],
        axis=1,
    ).astype(np.float32)
    smooth = np.mean(
        [
            Saliency(logits).attribute(xt + torch.from_numpy(n), target=classes, abs=True).numpy()
            for n in rng_noise
        ],
        axis=0,
    )
    np.testing.assert_allclose(stored["smoothgrad"].values, smooth, rtol=1e-4, atol=1e-7)
    assert stored["smoothgrad"].attrs["sigma"] == OPTIONS["sigma"]
    assert stored["integrated_gradients"].attrs["steps"] == OPTIONS["steps"]


def test_torch_attributions_read_through_the_run_and_views(torch_case: dict) -> None:
    from tensortap.core.explanation_store import explanation_names, read_explanation
    from tensortap.viz.explanations import explanation_map

    run = tt.open_run(torch_case["path"])
    assert run.attribution_names == tuple(METHODS)
    assert set(METHODS) <= set(explanation_names(run))
    np.testing.assert_array_equal(
        read_explanation(run, "saliency").values, run.attributions("saliency").values
    )
    one = explanation_map(run, "integrated_gradients", sample=3)
    assert one.shape == (8, 8) and one.min() == 0.0 and one.max() == 1.0
    report = tt.verify(torch_case["path"])
    assert report.ok, report.table()


def test_attributions_without_gradients_have_the_same_values(
    torch_case: dict, tmp_path: Path
) -> None:
    run = tt.capture(
        torch_case["model"],
        torch_case["x"],
        store=tmp_path / "nograd.zarr",
        layers=["0"],
        batch_size=5,  # another batching: the same noise per sample
        progress=False,
        attributions=METHODS,
        attribution_options=OPTIONS,
    )
    assert run.attrs["gradients"] is False  # attributions alone: no activation gradients
    for method in METHODS:
        np.testing.assert_allclose(
            run.attributions(method).values,
            torch_case["run"].attributions(method).values,
            rtol=1e-5,
            atol=1e-7,
        )


# ------------------------------------------------------------------------------- tf
@pytest.fixture(scope="module")
def keras_case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(5, 3, padding="same", activation="tanh", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    logits = keras.layers.Dense(4, name="logits")(h)
    model = keras.Model(inputs, keras.layers.Softmax(name="probs")(logits))
    x = np.random.default_rng(1).normal(size=(9, 8, 8, 3)).astype("float32")
    path = tmp_path_factory.mktemp("cattr") / "keras.zarr"
    run = tt.capture(
        model,
        x,
        store=path,
        layers=["conv"],
        gradients=True,
        batch_size=4,
        progress=False,
        attributions=METHODS,
        attribution_options=OPTIONS,
    )
    return {"model": model, "x": x, "run": run, "path": path, "keras": keras}


def _tape_gradient(logits_model, rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    t = tf.constant(rows)
    with tf.GradientTape() as tape:
        tape.watch(t)
        scores = logits_model(t)
        values = tf.reduce_sum(tf.gather(scores, classes, batch_dims=1))
    return tape.gradient(values, t).numpy()


def test_tensorflow_stored_attributions_equal_gradient_tape(keras_case: dict) -> None:
    keras, model, x = keras_case["keras"], keras_case["model"], keras_case["x"]
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    classes = np.asarray(logits(x)).argmax(1)
    np.testing.assert_array_equal(keras_case["run"].target_classes.values, classes)
    tree = _tree(keras_case["path"])
    stored = {m: tree[f"attributions/{m}"].values for m in METHODS}
    assert tree["attributions/saliency"].dims == ("sample", "height", "width", "channel")
    grad = _tape_gradient(logits, x, classes)
    np.testing.assert_allclose(stored["saliency"], np.abs(grad), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stored["gradient_x_input"], x * grad, rtol=1e-5, atol=1e-7)
    nodes, weights = np.polynomial.legendre.leggauss(OPTIONS["steps"])
    alphas, weights = (nodes + 1) / 2, weights / 2
    path_grads = [_tape_gradient(logits, (a * x).astype(np.float32), classes) for a in alphas]
    ig = x * np.tensordot(weights, np.stack(path_grads), axes=1)
    np.testing.assert_allclose(stored["integrated_gradients"], ig, rtol=1e-4, atol=1e-6)
    noise = np.stack(
        [
            np.random.default_rng([OPTIONS["seed"], i]).normal(
                0.0, OPTIONS["sigma"], size=(OPTIONS["n_samples"], *x.shape[1:])
            )
            for i in range(len(x))
        ],
        axis=1,
    ).astype(np.float32)
    smooth = np.mean([np.abs(_tape_gradient(logits, x + n, classes)) for n in noise], axis=0)
    np.testing.assert_allclose(stored["smoothgrad"], smooth, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_killed_capture_resumes_attributions_each_sample_once(tmp_path: Path) -> None:
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, worker.__file__, str(path), "0.05"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if tt.open_run(path).samples >= 2 * worker.BATCH:
                break
        except tt.RunNotFoundError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the capture ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    survived = tt.open_run(path)
    assert survived.status == "capturing" and 0 < survived.samples < worker.N
    resumed = subprocess.run(
        [sys.executable, worker.__file__, str(path), "0", "--resume"],
        capture_output=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    run = tt.open_run(path)
    assert run.status == "complete" and run.samples == worker.N
    np.testing.assert_array_equal(run.sample_indices, np.arange(worker.N))
    reference = worker.capture(None)
    for method in worker.METHODS:
        np.testing.assert_allclose(
            run.attributions(method).values,
            reference.attributions(method).values,
            rtol=1e-6,
            atol=1e-8,
        )
    assert tt.verify(path).ok


# ------------------------------------------------------------------------------- CLI, errors
def test_cli_capture_attributions_flag(keras_case: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tensortap.cli import main

    model_path = tmp_path / "m.keras"
    keras_case["model"].save(model_path)
    np.save(tmp_path / "x.npy", keras_case["x"])
    out = tmp_path / "cli.zarr"
    result = CliRunner().invoke(
        main,
        [
            "capture", str(model_path), str(tmp_path / "x.npy"), "-o", str(out),
            "--layers", "conv", "--batch-size", "4", "--no-progress",
            "--attributions", "saliency,ig", "--ig-steps", "8",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tt.open_run(out)
    assert run.attribution_names == ("saliency", "integrated_gradients")
    np.testing.assert_allclose(
        run.attributions("integrated_gradients").values,
        keras_case["run"].attributions("integrated_gradients").values,
        rtol=1e-5,
        atol=1e-7,
    )


def test_bad_attribution_requests_fail_in_one_line(torch_case: dict) -> None:
    with pytest.raises(OptionError, match="unknown attribution 'gradcam'"):
        parse_attributions("saliency,gradcam")
    with pytest.raises(OptionError, match="unknown attribution option"):
        parse_attributions("saliency", noise=3)
    with pytest.raises(TargetError, match="one class score per sample"):
        tt.capture(
            torch_case["model"],
            torch_case["x"],
            layers=["0"],
            progress=False,
            gradients=True,
            target="top2",
            attributions="saliency",
        )


def test_app_and_export_offer_the_captured_attributions(keras_case: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tensortap.cli import main
    from tensortap.viz.app import RunCatalog, TensortapApp

    path = keras_case["path"]
    app = TensortapApp(RunCatalog(path.parent), path.name, defer=False)
    cam = next(t for t in app.tab_list if t.SLUG == "cam")
    assert set(METHODS) <= set(cam.method_select.options)
    cam.method_select.value = "integrated_gradients"
    overlay = cam.cam()
    assert "integrated_gradients" in overlay.opts.get().kwargs.get("title", "")
    assert len(cam.cam_grid()) == min(9, keras_case["run"].samples)
    out = tmp_path / "saliency.png"
    result = CliRunner().invoke(
        main,
        ["export", str(path), "--view", "cam_overlay", "--method", "saliency", "-o", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
