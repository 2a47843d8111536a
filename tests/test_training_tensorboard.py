"""``tensortap export RUN --tensorboard DIR``, read back with TensorBoard's own reader."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

import tensortap as tt  # noqa: E402
from tensortap.cli.main import main  # noqa: E402

from .training_models import digits, torch_cnn  # noqa: E402


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    x, y, px, py = digits(n_probe=32)
    x = x[:256].transpose(0, 3, 1, 2).copy()
    px = px.transpose(0, 3, 1, 2).copy()
    model = torch_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    store = tmp_path_factory.mktemp("tb") / "loop.zarr"
    with tt.Monitor(model, (px, py), store, every=2, policy=tt.Policy(gradients=True)) as mon:
        for start in range(0, len(x), 32):
            optimizer.zero_grad()
            out = model(torch.from_numpy(x[start : start + 32]))
            loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y[start : start + 32]))
            loss.backward()
            optimizer.step()
            mon.step(loss)
    return tt.open_run(store)


def _read(folder):
    acc = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.HISTOGRAMS: 0, event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    return acc


def test_histogram_counts_match_the_run(tmp_path, training_run):
    run = training_run
    result = CliRunner().invoke(main, ["export", run.path, "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    acc = _read(tmp_path / "tb")
    tags = acc.Tags()
    assert "0/activation" in tags["histograms"] and "0/gradient" in tags["histograms"]
    assert "0/activation_mean" in tags["scalars"]
    for key in run.layers:
        for of in ("activation", "gradient"):
            events = acc.Histograms(f"{key}/{of}")
            assert [e.step for e in events] == list(run.step_values)
            stats = run.stats(key, of=of)
            for position, event in enumerate(events):
                at = stats.isel(step=position)
                value = event.histogram_value
                counts = np.asarray(value.bucket)
                limits = np.asarray(value.bucket_limit)
                under, over = int(at["underflow"]), int(at["overflow"])
                inner = counts[int(under > 0) : len(counts) - int(over > 0)]
                # the exact stored bins: same counts, upper edges as bucket limits
                np.testing.assert_array_equal(inner, at["histogram"].values)
                np.testing.assert_array_equal(
                    limits[int(under > 0) : len(limits) - int(over > 0)], at["bin_edges"].values[1:]
                )
                assert counts.sum() == at["count"].sum() == value.num
                assert value.min == pytest.approx(float(at["min"].min()))
                assert value.max == pytest.approx(float(at["max"].max()))
    # a scalar, against the stored tensor it summarises
    step = int(run.tensor_steps[-1])
    values = run.activation("3", step=step).values.astype(np.float64)
    scalars = {e.step: e.value for e in acc.Scalars("3/activation_mean")}
    assert scalars[step] == pytest.approx(values.mean(), rel=1e-5)
    zeros = {e.step: e.value for e in acc.Scalars("3/activation_zero_fraction")}
    assert zeros[step] == pytest.approx((values == 0).mean(), rel=1e-5)


def test_bad_export_arguments_exit_2(tmp_path, training_run):
    result = CliRunner().invoke(main, ["export", training_run.path])
    assert result.exit_code == 2 and "--tensorboard DIR" in result.output
    result = CliRunner().invoke(main, ["export", str(tmp_path / "nothing"), "--tensorboard", "x"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_info_describes_a_training_run(training_run):
    result = CliRunner().invoke(main, ["info", training_run.path])
    assert result.exit_code == 0, result.output
    n = len(training_run.step_values)
    assert f"steps:      {n} committed" in result.output and "training run" in result.output
    assert "trigger:    none" in result.output
