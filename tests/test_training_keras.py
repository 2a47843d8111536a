"""Training runs from ``model.fit`` with ``tt.CaptureCallback`` (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

keras = pytest.importorskip("keras")

import tensortap as tt  # noqa: E402
from tensortap.core.errors import (  # noqa: E402
    DataError,
    InputMismatchError,
    NoGradientsError,
    ResumeMismatchError,
    RunExistsError,
)

from .training_models import digits, keras_cnn, keras_nan_layer  # noqa: E402

BATCH = 64


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ...]:
    x, y, px, py = digits()
    return x[:640], y[:640], px, py  # 10 steps an epoch


def _numpy_stats(values: np.ndarray, edges: np.ndarray, channel_axis: int) -> dict[str, np.ndarray]:
    """The statistics of one step, from the stored tensor, in plain NumPy."""
    moved = np.moveaxis(values.astype(np.float64), channel_axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    hist, _ = np.histogram(flat[(flat >= edges[0]) & (flat < edges[-1])], bins=edges)
    return {
        "mean": flat.mean(axis=0),
        "std": flat.std(axis=0),
        "min": flat.min(axis=0),
        "max": flat.max(axis=0),
        "zero_fraction": (flat == 0).mean(axis=0),
        "histogram": hist,
    }


def test_fit_three_epochs_one_run_with_steps(tmp_path, data):
    x, y, px, py = data
    model = keras_cnn()
    store = tmp_path / "fit.zarr"
    callback = tt.CaptureCallback(
        (px, py), store, every_n_batches=4, every_n_epochs=1, policy="epochs"
    )
    model.fit(x, y, epochs=3, batch_size=BATCH, verbose=0, shuffle=False, callbacks=[callback])
    run = tt.open_run(store)
    assert isinstance(run, tt.TrainingRun) and run.status == "complete"
    # batch schedule 0, 4, 8 in each 10-step epoch, plus the epoch's last step (9, 19, 29)
    expected = sorted({s for s in range(30) if s % 4 == 0} | {9, 19, 29})
    np.testing.assert_array_equal(run.step_values, expected)
    steps = run.steps
    np.testing.assert_array_equal(steps["epoch"], np.asarray(expected) // 10)
    np.testing.assert_array_equal(steps["batch"], np.asarray(expected) % 10)
    assert np.all(np.diff(steps["wall_time"].values) >= 0)
    np.testing.assert_array_equal(run.tensor_steps, [9, 19, 29])
    assert run.samples == len(px)
    np.testing.assert_array_equal(run.labels.values, py)
    np.testing.assert_array_equal(run.inputs().values, px)
    # the last stored activation is what the trained model computes (sub-model reference)
    for key in ("conv1", "conv2", "logits"):
        sub = keras.Model(model.inputs, model.get_layer(key).output)
        np.testing.assert_allclose(
            run.activation(key, step=29).values, sub.predict(px, verbose=0), rtol=1e-5, atol=1e-6
        )
    assert run.activation("conv1").dims == ("step", "sample", "height", "width", "channel")
    # statistics equal those computed from the stored tensors, at every tensor step
    for key in ("conv1", "conv2", "logits"):
        for step in run.tensor_steps:
            values = run.activation(key, step=int(step)).values
            stats = run.stats(key, step=int(step))
            ref = _numpy_stats(values, stats["bin_edges"].values, -1)
            for name in ("mean", "std", "min", "max", "zero_fraction"):
                np.testing.assert_allclose(stats[name].values, ref[name], rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(stats["histogram"].values, ref["histogram"])
            assert stats["histogram"].sum() + stats["underflow"] + stats["overflow"] == values.size
    # statistics-only steps hold no tensor
    with pytest.raises(NoGradientsError, match="statistics only"):
        run.activation("conv1", step=4)
    over_steps = run.stats("conv1")
    assert over_steps["mean"].dims == ("step", "channel")
    assert over_steps.sizes["step"] == len(expected)
    # plain xarray opens it
    import xarray as xr

    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    assert tree["layers/conv1/activation"].dims[:2] == ("step", "sample")


def test_statistics_only_run_holds_no_tensors(tmp_path, data):
    x, y, px, py = data
    model = keras_cnn()
    store = tmp_path / "stats.zarr"
    callback = tt.CaptureCallback(px, store, every_n_batches=5, every_n_epochs=None, policy="stats")
    model.fit(x, y, epochs=2, batch_size=BATCH, verbose=0, callbacks=[callback])
    run = tt.open_run(store)
    np.testing.assert_array_equal(run.step_values, [0, 5, 10, 15])
    assert len(run.tensor_steps) == 0
    for key in run.layers:
        group = zarr.open_group(store, path=f"layers/{key}", mode="r")
        assert "activation" not in group and "gradient" not in group
        assert np.isfinite(run.stats(key)["mean"].values).all()
    with pytest.raises(NoGradientsError):
        run.activation("conv1")


def test_nonfinite_trigger_names_the_layer_and_keeps_training(tmp_path, data):
    x, y, px, py = data
    k = 13

    def build():
        model = keras_cnn(seed=3, extra=keras_nan_layer(after_step=k))
        return model

    reference = build()
    initial = [w.copy() for w in reference.get_weights()]
    reference.fit(x, y, epochs=2, batch_size=BATCH, verbose=0, shuffle=False)

    model = build()
    model.set_weights(initial)
    store = tmp_path / "nan.zarr"
    callback = tt.CaptureCallback(
        (px, py), store, every_n_batches=None, every_n_epochs=1, policy="stats"
    )
    model.fit(x, y, epochs=2, batch_size=BATCH, verbose=0, shuffle=False, callbacks=[callback])
    run = tt.open_run(store)
    assert run.trigger == {"step": k, "layer": "turns_nan", "where": "activation"}
    assert k in run.tensor_steps  # the full capture at step k, tensors and gradients
    assert np.isnan(run.activation("turns_nan", step=k).values).all()
    assert np.isfinite(run.activation("conv1", step=k).values).all()
    assert run.gradient("conv1", step=k).shape == run.activation("conv1", step=k).shape
    np.testing.assert_array_equal(run.step_values, [9, k, 19])
    # training is unchanged by the callback (NaN compares equal to NaN here)
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


def test_keyboard_interrupt_keeps_committed_steps(tmp_path, data):
    x, y, px, py = data
    model = keras_cnn()
    store = tmp_path / "interrupted.zarr"
    callback = tt.CaptureCallback((px, py), store, every_n_batches=3, policy="full")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=BATCH, verbose=0, callbacks=[callback, _Interrupt(14)])
    run = tt.open_run(store)  # what is committed now is whole
    for step in run.step_values:
        assert run.activation("conv2", step=int(step)).notnull().all()
        assert run.stats("conv2", step=int(step))["count"].sum() > 0
    callback.close("failed")  # what an interrupted script's cleanup does; queued steps commit
    run = tt.open_run(store)
    np.testing.assert_array_equal(run.step_values, [0, 3, 6, 9, 12])
    assert run.status == "failed"
    # a second fit with the same callback appends its steps to the same run
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[callback])
    run = tt.open_run(store)
    assert run.status == "complete" and run.step_values[-1] > 12
    assert len(set(run.step_values)) == len(run.step_values)


def test_fine_tuning_a_nested_applications_base(tmp_path, data):
    x, y, px, py = data
    images = np.repeat(np.kron(x[:128], np.ones((1, 4, 4, 1), np.float32)), 3, axis=-1)
    probe = images[:16]
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False, alpha=0.35
    )
    for layer in base.layers[:-20]:
        layer.trainable = False  # fine-tune the top of the base only
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="head"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    store = tmp_path / "finetune.zarr"
    inner = f"{base.name}.block_16_project"
    callback = tt.CaptureCallback(
        (probe, y[:16]),
        store,
        every_n_batches=2,
        layers=[inner, "head"],
        policy=tt.Policy(gradients=True, dtype="float16"),
    )
    model.fit(images, y[:128], epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    run = tt.open_run(store)
    assert run.layers == (inner, "head")
    np.testing.assert_array_equal(run.step_values, [0, 2, 3])
    act = run.activation(inner, step=3)
    assert act.dtype == np.float16 and act.shape == (16, 1, 1, 112)
    # reference: the base's own sub-model (the Sequential feeds its input straight to it)
    inner_model = keras.Model(base.inputs, base.get_layer("block_16_project").output)
    np.testing.assert_allclose(
        act.values.astype(np.float32), inner_model.predict(probe, verbose=0), rtol=2e-3, atol=2e-3
    )
    head = keras.Model(model.inputs, model.get_layer("head").output)
    np.testing.assert_allclose(
        run.activation("head", step=3).values, head.predict(probe, verbose=0), rtol=2e-3, atol=2e-3
    )
    assert run.gradient("head", step=3).shape == (16, 10)


def test_bad_input_is_one_clear_line(tmp_path, data):
    x, y, px, py = data
    model = keras_cnn()
    with pytest.raises(DataError, match="every_n_batches=0"):
        tt.CaptureCallback(px, tmp_path / "a.zarr", every_n_batches=0)
    with pytest.raises(DataError, match="every_n_epochs=-2"):
        tt.CaptureCallback(px, tmp_path / "a.zarr", every_n_epochs=-2)
    with pytest.raises(DataError, match="policy='sometimes'"):
        tt.CaptureCallback(px, tmp_path / "a.zarr", policy="sometimes")
    bad = tt.CaptureCallback(np.zeros((4, 9, 9, 1), np.float32), tmp_path / "bad.zarr")
    with pytest.raises(InputMismatchError) as err:
        model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[bad])
    assert "\n" not in str(err.value) and "9" in str(err.value)
    assert not (tmp_path / "bad.zarr").exists()
    # a store holding another model's training run
    store = tmp_path / "one.zarr"
    model.fit(
        x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[tt.CaptureCallback(px, store)]
    )
    other = keras_cnn(extra=keras.layers.Dropout(0.1, name="drop"))
    with pytest.raises(ResumeMismatchError, match="another model") as err:
        other.fit(
            x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[tt.CaptureCallback(px, store)]
        )
    assert "\n" not in str(err.value)
    # a store holding a capture run
    tt.capture(model, px, store=tmp_path / "capture.zarr", progress=False)
    with pytest.raises(RunExistsError, match="capture run"):
        model.fit(
            x,
            y,
            epochs=1,
            batch_size=BATCH,
            verbose=0,
            callbacks=[tt.CaptureCallback(px, tmp_path / "capture.zarr")],
        )


def test_weight_and_weight_gradient_statistics(tmp_path, data):
    import tensorflow as tf

    x, y, px, py = data
    model = keras_cnn()
    store = tmp_path / "weights.zarr"
    callback = tt.CaptureCallback(
        (px, py), store, every_n_epochs=1, policy=tt.Policy(tensors="never", weights=True)
    )
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[callback])
    run = tt.open_run(store)
    stats = run.weight_stats().isel(step=-1)  # the last step: the final weights
    assert list(stats["parameter"].values) == [v.path for v in model.weights]
    with tf.GradientTape() as tape:  # the reference: an explicit tape on the probe's loss
        loss = model.loss(py, model(px, training=False))
    grads = tape.gradient(loss, [v.value for v in model.weights])
    grad_stats = run.weight_stats(of="gradients").isel(step=-1)
    for variable, grad in zip(model.weights, grads, strict=True):
        value = np.asarray(variable, np.float64)
        assert float(stats["mean"].sel(parameter=variable.path)) == pytest.approx(value.mean())
        assert float(stats["std"].sel(parameter=variable.path)) == pytest.approx(value.std())
        g = np.asarray(grad, np.float64)
        assert float(grad_stats["std"].sel(parameter=variable.path)) == pytest.approx(
            g.std(), rel=1e-4
        )
