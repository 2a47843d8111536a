"""Training runs from a hand-written PyTorch loop with ``tt.Monitor`` (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensortap as tt  # noqa: E402
from tensortap.core.errors import DataError, InputMismatchError, ResumeMismatchError  # noqa: E402

from .training_models import digits, torch_cnn  # noqa: E402

BATCH = 64


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ...]:
    x, y, px, py = digits()
    # channels first for torch; 10 steps an epoch
    return x[:640].transpose(0, 3, 1, 2).copy(), y[:640], px.transpose(0, 3, 1, 2).copy(), py


def _train(model, x, y, epochs, monitor=None, nan_after=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    step = 0
    for _epoch in range(epochs):
        for start in range(0, len(x), BATCH):
            optimizer.zero_grad()
            loss = loss_fn(model(xs[start : start + BATCH]), ys[start : start + BATCH])
            loss.backward()
            optimizer.step()
            if monitor is not None:
                monitor.step(loss)
            step += 1
        if monitor is not None:
            monitor.end_epoch()


def test_loop_three_epochs_one_run_with_steps(tmp_path, data):
    x, y, px, py = data
    model = torch_cnn()
    store = tmp_path / "loop.zarr"
    with tt.Monitor(
        model,
        (px, py),
        store,
        every=4,
        every_n_epochs=1,
        policy=tt.Policy(tensors="epochs", weights=True),
    ) as monitor:
        _train(model, x, y, 3, monitor)
    run = tt.open_run(store)
    assert isinstance(run, tt.TrainingRun) and run.status == "complete"
    expected = sorted({s for s in range(30) if s % 4 == 0} | {9, 19, 29})
    np.testing.assert_array_equal(run.step_values, expected)
    np.testing.assert_array_equal(run.steps["epoch"], np.asarray(expected) // 10)
    np.testing.assert_array_equal(run.steps["batch"], np.asarray(expected) % 10)
    np.testing.assert_array_equal(run.tensor_steps, [9, 19, 29])
    # the stored activations at the last step are the trained model's (hand-made reference)
    model.eval()
    with torch.no_grad():
        conv = model[0](torch.from_numpy(px))
        logits = model(torch.from_numpy(px))
    np.testing.assert_allclose(
        run.activation("0", step=29).values, conv.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        run.activation("7", step=29).values, logits.numpy(), rtol=1e-5, atol=1e-6
    )
    assert run.activation("0").dims == ("step", "sample", "channel", "height", "width")
    # statistics equal those computed from the stored tensors (channels first here)
    for key in ("0", "1", "3", "7"):
        for step in run.tensor_steps:
            values = run.activation(key, step=int(step)).values.astype(np.float64)
            stats = run.stats(key, step=int(step))
            axis = 1 if values.ndim == 4 else -1
            flat = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
            edges = stats["bin_edges"].values
            hist, _ = np.histogram(flat[(flat >= edges[0]) & (flat < edges[-1])], bins=edges)
            np.testing.assert_allclose(stats["mean"].values, flat.mean(0), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(stats["std"].values, flat.std(0), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(stats["zero_fraction"].values, (flat == 0).mean(0))
            np.testing.assert_array_equal(stats["histogram"].values, hist)
    # weight and weight-gradient statistics per step, against the parameters themselves
    weights = run.weight_stats()
    assert list(weights["parameter"].values) == [n for n, _ in model.named_parameters()]
    last = weights.sel(step=29)
    for name, param in model.named_parameters():
        value = param.detach().numpy().astype(np.float64)
        np.testing.assert_allclose(last["mean"].sel(parameter=name), value.mean(), rtol=1e-9)
        np.testing.assert_allclose(last["std"].sel(parameter=name), value.std(), rtol=1e-9)
    grads = run.weight_stats(of="gradients").sel(step=29)
    assert np.isfinite(grads["std"].values).all() and (grads["std"].values > 0).all()


def test_statistics_only_loop_holds_no_tensors(tmp_path, data):
    x, y, px, py = data
    model = torch_cnn()
    store = tmp_path / "stats.zarr"
    with tt.Monitor(model, px, store, every=5, policy="stats") as monitor:
        _train(model, x, y, 2, monitor)
    run = tt.open_run(store)
    np.testing.assert_array_equal(run.step_values, [0, 5, 10, 15])
    assert len(run.tensor_steps) == 0
    import zarr

    for key in run.layers:
        assert "activation" not in zarr.open_group(store, path=f"layers/{key}", mode="r")


class _TurnsNaN(torch.nn.Module):
    """NaN everywhere from training step ``after`` on, through ``where`` (zero gradient to
    the layers before it, so they stay finite)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.calls += 1
        return torch.where(self.calls > self.after, torch.full_like(x, float("nan")), x)


def test_nonfinite_trigger_and_unchanged_training(tmp_path, data):
    x, y, px, py = data
    k = 12

    def build():
        model = torch_cnn(seed=5)
        model.insert(2, _TurnsNaN(k))
        return model

    reference = build()
    _train(reference, x, y, 2)
    model = build()
    store = tmp_path / "nan.zarr"
    with tt.Monitor(model, (px, py), store, every=None, every_n_epochs=1, policy="stats") as mon:
        _train(model, x, y, 2, mon)
    run = tt.open_run(store)
    assert run.trigger == {"step": k, "layer": "2", "where": "activation"}
    assert mon.trigger == run.trigger
    assert np.isnan(run.activation("2", step=k).values).all()
    assert np.isfinite(run.activation("1", step=k).values).all()
    assert run.gradient("0", step=k).shape == run.activation("0", step=k).shape
    for (name, ours), theirs in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=name)


def test_bad_input(tmp_path, data):
    x, y, px, py = data
    model = torch_cnn()
    with pytest.raises(DataError, match="every=0"):
        tt.Monitor(model, px, tmp_path / "a.zarr", every=0)
    with pytest.raises(InputMismatchError) as err:
        tt.Monitor(model, np.zeros((4, 3, 8, 8), np.float32), tmp_path / "b.zarr").open()
    assert "\n" not in str(err.value)
    store = tmp_path / "one.zarr"
    with tt.Monitor(model, px, store, every=1) as monitor:
        monitor.step()
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ResumeMismatchError, match="another model"):
        tt.Monitor(other, px, store, every=1).open()
