"""Dask scale-out (docs/design.md §6): capture_distributed on a real multi-process LocalCluster.

One module-scoped cluster (two worker processes, one thread each: starting workers that import
TensorFlow is slow) serves every test.  Runs are compared with a single-process
``tt.capture`` of the same data: bit-equal arrays, equal stats counts, moments to rounding.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import tensortap as tt

pytest.importorskip("tensorflow")
distributed = pytest.importorskip("distributed")

TESTS = Path(__file__).parent
# Spawned worker processes inherit sys.path: they unpickle the factory from this module.
sys.path.insert(0, str(TESTS))
from distributed_models import cached_models, tiny_cnn, two_worker_client  # noqa: E402

from tensortap.core.distributed import plan_ranges  # noqa: E402

N, B = 64, 8  # 8 blocks: the coordinator writes block 0, the workers the other 7
LAYERS = ["conv", "pool", "dense"]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with two_worker_client() as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.random((N, 8, 8, 3), dtype=np.float32)
    y = np.arange(N) % 3
    folder = tmp_path_factory.mktemp("data")
    np.save(folder / "x.npy", x)
    return {"x": x, "y": y, "x_path": str(folder / "x.npy")}


@pytest.fixture(scope="module")
def reference(data: dict[str, Any]) -> Any:
    return tt.capture(
        tiny_cnn(),
        (data["x"], data["y"]),
        layers=LAYERS,
        gradients=True,
        target="label",
        batch_size=B,
        block_size=B,  # one batch a block, as these tests pin it
        progress=False,
    )


def _assert_same(run: Any, reference: Any, samples: np.ndarray | None = None) -> None:
    """``run`` holds exactly ``samples`` (default: all), equal to the reference's."""
    expected = np.arange(reference.samples) if samples is None else samples
    np.testing.assert_array_equal(run.sample_indices, expected)
    np.testing.assert_array_equal(run.tree["sample"].values, expected)  # each sample once
    for key in LAYERS:
        np.testing.assert_array_equal(
            run.activation(key).values, reference.activation(key).values[expected]
        )
        np.testing.assert_array_equal(
            run.gradient(key).values, reference.gradient(key).values[expected]
        )
    np.testing.assert_array_equal(run.outputs().values, reference.outputs().values[expected])
    np.testing.assert_array_equal(run.labels.values, reference.labels.values[expected])
    np.testing.assert_array_equal(run.predictions.values, reference.predictions.values[expected])


@pytest.mark.slow
def test_matches_single_process_capture(
    client: Any, data: dict[str, Any], reference: Any, tmp_path: Path
) -> None:
    path = tmp_path / "dist.zarr"
    run = tt.capture_distributed(
        tiny_cnn,
        (data["x_path"], data["y"]),
        path,
        client=client,
        layers=LAYERS,
        gradients=True,
        target="label",
        batch_size=B,
        block_size=B,  # one batch a block, as these tests pin it
        progress=False,
    )
    assert run.status == "complete" and run.samples == N
    _assert_same(run, reference)
    for key in LAYERS:
        got, want = run.stats(key), reference.stats(key)
        for name in ("count", "histogram", "underflow", "overflow", "zeros", "nonfinite"):
            np.testing.assert_array_equal(got[name].values, want[name].values)
        np.testing.assert_array_equal(got["bin_edges"].values, want["bin_edges"].values)
        for name in ("mean", "std", "min", "max", "zero_fraction"):
            np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-12)
        np.testing.assert_array_equal(got["sample_max"].values, want["sample_max"].values)
    # Every block committed once; the arrays are trimmed to the data, so plain xarray agrees.
    assert np.all(xr.open_zarr(path, consolidated=False)["committed"].values == B)
    tree = xr.open_datatree(path, engine="zarr", consolidated=False)
    assert tree["layers/conv/activation"].shape[0] == N
    # Each worker built the model once, however many ranges it captured.
    built = client.run(cached_models)
    assert set(built.values()) <= {0, 1} and sum(built.values()) >= 1


@pytest.mark.slow
def test_failed_range_then_resume(
    client: Any, data: dict[str, Any], reference: Any, tmp_path: Path
) -> None:
    path = tmp_path / "resume.zarr"
    poisoned = data["x"].copy()
    poisoned[5 * B + 3, 0, 0, 0] = np.nan  # block 5 fails on its worker (FiniteGuard)
    common = dict(
        client=client,
        layers=LAYERS,
        gradients=True,
        target="label",
        batch_size=B,
        block_size=B,  # one batch a block, as these tests pin it
        progress=False,
        ranges_per_worker=2,
    )
    with pytest.raises(Exception, match="poisoned sample"):
        tt.capture_distributed(tiny_cnn, (poisoned, data["y"]), path, **common)
    failed = tt.open_run(path)
    # Ranges of 2 blocks: [1, 3) [3, 5) [5, 7) [7, 8); block 5 failed, so 6 never ran.
    kept = np.concatenate([np.arange(k * B, (k + 1) * B) for k in (0, 1, 2, 3, 4, 7)])
    assert failed.status == "failed" and failed.samples == len(kept)
    _assert_same(failed, reference, kept)
    # Resume recomputes only blocks 5 and 6: poison in a committed block is never read.
    healed = data["x"].copy()
    healed[1 * B, 0, 0, 0] = np.nan
    run = tt.capture_distributed(tiny_cnn, (healed, data["y"]), path, resume=True, **common)
    assert run.status == "complete" and run.samples == N
    _assert_same(run, reference)
    for key in LAYERS:
        np.testing.assert_array_equal(
            run.stats(key)["histogram"].values, reference.stats(key)["histogram"].values
        )


@pytest.mark.slow
def test_analysis_runs_on_the_cluster(
    client: Any, data: dict[str, Any], reference: Any, tmp_path: Path
) -> None:
    import dask.array as da

    path = tmp_path / "analysis.zarr"
    tt.capture_distributed(
        tiny_cnn,
        data["x_path"],
        path,
        client=client,
        layers="conv",
        batch_size=B,
        block_size=B,
        progress=False,
    )
    activation = tt.open_run(path).activation("conv")
    assert isinstance(activation.data, da.Array) and activation.data.npartitions == N // B
    edges = np.linspace(0.0, 2.0, 21)
    flat = activation.data.ravel()
    histogram = client.compute(da.histogram(flat, bins=edges)[0])
    # Exact per-position quantiles over samples: one chunk along sample, split elsewhere.
    lazy = activation.chunk({"sample": -1, "height": 3}).quantile([0.5, 0.99], dim="sample")
    quantiles = client.compute(lazy.data)
    values = reference.activation("conv").values
    np.testing.assert_array_equal(histogram.result(), np.histogram(values.ravel(), edges)[0])
    np.testing.assert_allclose(
        quantiles.result(), np.quantile(values, [0.5, 0.99], axis=0), rtol=1e-6
    )


@pytest.mark.slow
def test_unknown_length_and_memory_store_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(tt.DataError, match="known length"):
        tt.capture_distributed(tiny_cnn, iter([data["x"]]), "unused.zarr", progress=False)
    with pytest.raises(tt.StorageError, match="every worker can reach"):
        tt.capture_distributed(tiny_cnn, data["x"], None, progress=False)


def test_plan_ranges() -> None:
    assert plan_ranges(range(1, 8), 4) == [(1, 3), (3, 5), (5, 7), (7, 8)]
    assert plan_ranges([5, 6, 9], 4) == [(5, 6), (6, 7), (9, 10)]
    assert plan_ranges([2], 8) == [(2, 3)]
    covered = [b for lo, hi in plan_ranges([0, 1, 2, 4, 5, 8], 2) for b in range(lo, hi)]
    assert covered == [0, 1, 2, 4, 5, 8]


@pytest.mark.slow
@pytest.mark.s3
def test_capture_to_s3(
    client: Any, data: dict[str, Any], reference: Any, s3: dict[str, Any]
) -> None:
    url = "s3://runs/dist.zarr"
    run = tt.capture_distributed(
        tiny_cnn,
        (data["x_path"], data["y"]),
        url,
        client=client,
        layers=LAYERS,
        gradients=True,
        target="label",
        batch_size=B,
        block_size=B,  # one batch a block, as these tests pin it
        progress=False,
        storage_options=s3,
    )
    assert run.status == "complete"
    reopened = tt.open_run(url, storage_options=s3)
    _assert_same(reopened, reference)
    np.testing.assert_array_equal(
        reopened.stats("conv")["count"].values, reference.stats("conv")["count"].values
    )
