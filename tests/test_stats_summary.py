"""Run.stats: the finished run's summary, the per-block partials and the cache agree."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import tensortap as tt

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

BACKEND = FakeBackend()
KEYS = (
    "count",
    "mean",
    "std",
    "min",
    "max",
    "zero_fraction",
    "nonfinite",
    "histogram",
    "underflow",
    "overflow",
    "zeros",
)


def _capture(model, data, store, **kw):
    return tt.capture(
        model,
        data,
        store=store,
        backend=BACKEND,
        progress=False,
        batch_size=16,
        block_size=16,
        **kw,
    )


def _assert_same(a, b) -> None:
    for name in KEYS:
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-12, equal_nan=True)


@pytest.fixture(autouse=True)
def _summaries_for_short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs have 2–5 blocks: ask for summaries anyway (the default skips them)."""
    from tensortap.core.store.writer import RunWriter

    monkeypatch.setattr(RunWriter, "SUMMARY_MIN_BLOCKS", 1)


def test_short_runs_have_no_summary_and_the_same_stats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensortap.core.store.writer import RunWriter

    model, x = FakeModel(), images(40)
    with_summary = _capture(model, x, tmp_path / "a.zarr")
    monkeypatch.setattr(RunWriter, "SUMMARY_MIN_BLOCKS", 4)  # this run has 3 blocks
    without = _capture(model, x, tmp_path / "b.zarr")
    group = zarr.open_group(tmp_path / "b.zarr", path="stats", mode="r")
    assert "summary_moments" not in group and "summary_moments" in zarr.open_group(
        tmp_path / "a.zarr", path="stats", mode="r"
    )
    for key in with_summary.layers:
        _assert_same(
            tt.open_run(with_summary.path).stats(key), tt.open_run(without.path).stats(key)
        )


def test_summary_equals_partials_and_stale_summary_is_ignored(tmp_path: Path) -> None:
    model, x = FakeModel(), images(70)
    path = tmp_path / "r.zarr"
    model.fail_at_call = 3
    with pytest.raises(RuntimeError, match="boom"):
        _capture(model, x, path)
    failed = tt.open_run(path)  # its summary covers the 32 committed samples
    group = zarr.open_group(path, path="stats", mode="r")
    assert group["summary_moments"].attrs["committed"] == 32
    part = failed.stats("block.conv")
    assert failed.samples == 32 and int(part["count"].sum()) > 0
    model.fail_at_call = None
    run = _capture(model, x, path, resume=True)
    stale_reader = failed.stats("block.conv")  # cached for the old commit state
    _assert_same(stale_reader, part)
    full = run.stats("block.conv")
    assert int(full["count"].sum()) == 70 * int(part["count"].sum()) // 32
    failed.refresh()  # new commit state: the cache is dropped
    _assert_same(failed.stats("block.conv"), full)
    for key in run.layers:  # summary path == reduction of every committed partial
        fresh = tt.open_run(path)
        from_summary = fresh.stats(key)
        reduced = fresh._reduce_stats_partials(key)
        np.testing.assert_array_equal(from_summary["count"].values, reduced.count)
        np.testing.assert_array_equal(from_summary["histogram"].values, reduced.histogram)
        np.testing.assert_allclose(from_summary["mean"].values, reduced.mean, rtol=1e-12)
        np.testing.assert_allclose(from_summary["std"].values, reduced.std, rtol=1e-12)
