"""Dask analysis of runs (core/analysis.py, issue 18) against NumPy on a run small enough to check.

The run is a real PyTorch capture on disk (channels-first maps, a dense layer, gradients,
labels); the analysis runs on a real two-process ``LocalCluster``.  Every reference is
computed here with NumPy from the run's arrays loaded whole.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensortap as tt
from tensortap.core import analysis
from tensortap.core import exact_quantiles as eq

pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

sys.path.insert(0, str(Path(__file__).parent))
from scale_models import images_with_ids, scale_net  # noqa: E402

N, B = 200, 16  # 13 blocks, the last one short
CONV, DENSE = "1", "5"
Q = [0.0, 0.01, 0.25, 0.5, 0.9, 0.999, 1.0]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("runs")
    x = images_with_ids(N, seed=3)
    x[:, 0, 0, 0] = np.random.default_rng(4).normal(size=N)  # no id here: plain data
    y = np.random.default_rng(5).integers(0, 3, N)
    common = dict(layers=[CONV, DENSE], gradients=True, target="label", batch_size=B, block_size=B)
    tt.capture(scale_net(), (x, y), store=folder / "a.zarr", progress=False, **common)
    tt.capture(
        scale_net(), (x, y), store=folder / "b.zarr", dtype="float16", progress=False, **common
    )
    return {"a": tt.open_run(folder / "a.zarr"), "b": tt.open_run(folder / "b.zarr")}


def _per_channel(run: Any, key: str, positions: Any = slice(None), grad: bool = False) -> Any:
    """``(values, channel)`` float64 of the selected samples, with NumPy."""
    array = (run.gradient(key) if grad else run.activation(key)).values[positions]
    if array.ndim == 2:
        return array.astype(np.float64)
    return np.moveaxis(array, 1, -1).reshape(-1, array.shape[1]).astype(np.float64)


def _positions(run: Any, kind: str) -> np.ndarray:
    labels, predictions = run.labels.values, run.predictions.values
    return {
        "all": np.arange(run.samples),
        "misclassified": np.flatnonzero(labels != predictions),
        "label 1": np.flatnonzero(labels == 1),
    }[kind]


WHERE = {"all": None, "misclassified": "misclassified", "label 1": {"label": 1}}


@pytest.mark.slow  # a two-process cluster
@pytest.mark.parametrize("kind", list(WHERE))
def test_subset_stats_equal_numpy(client: Any, runs: dict[str, Any], kind: str) -> None:
    run = runs["a"]
    positions = _positions(run, kind)
    assert 0 < len(positions)
    for key in (CONV, DENSE):
        got = analysis.subset_stats(
            run, key, where=WHERE[kind], bins=40, range=(-1.0, 1.5), client=client
        )
        values = _per_channel(run, key, positions)
        np.testing.assert_array_equal(got["count"].values, np.full(values.shape[1], len(values)))
        np.testing.assert_allclose(got["mean"].values, values.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(got["std"].values, values.std(axis=0), rtol=1e-9)
        np.testing.assert_array_equal(got["min"].values, values.min(axis=0))
        np.testing.assert_array_equal(got["max"].values, values.max(axis=0))
        flat = values.ravel()
        edges = np.linspace(-1.0, 1.5, 41)
        inside = flat[(flat >= -1.0) & (flat < 1.5)]
        np.testing.assert_array_equal(got["histogram"].values, np.histogram(inside, edges)[0])
        assert int(got["underflow"]) == (flat < -1.0).sum()
        assert int(got["overflow"]) == (flat >= 1.5).sum()
        np.testing.assert_array_equal(got["bin_edges"].values, edges)
        assert got.attrs["samples"] == len(positions)


def test_stats_over_every_sample_equal_the_stored_ones(runs: dict[str, Any]) -> None:
    run = runs["a"]  # default edges: the run's own, so the reductions must agree
    got, stored = analysis.subset_stats(run, CONV), run.stats(CONV)
    for name in ("count", "histogram", "underflow", "overflow", "zeros", "bin_edges"):
        np.testing.assert_array_equal(got[name].values, stored[name].values)
    np.testing.assert_allclose(got["mean"].values, stored["mean"].values, rtol=1e-6)
    # The views read it as they read run.stats.
    from tensortap.viz.distributions import layer_summary

    assert layer_summary(got)["count"] == layer_summary(stored)["count"]


@pytest.mark.slow  # a two-process cluster
@pytest.mark.parametrize("method", ["linear", "lower", "higher", "midpoint"])
def test_exact_quantiles_equal_numpy(client: Any, runs: dict[str, Any], method: str) -> None:
    run = runs["a"]
    for key, grad, kind in ((CONV, False, "all"), (DENSE, True, "misclassified")):
        positions = _positions(run, kind)
        got = analysis.quantiles(
            run, key, Q, where=WHERE[kind], method=method, gradient=grad, client=client
        )
        want = np.quantile(_per_channel(run, key, positions, grad), Q, axis=0, method=method)
        assert got.dims == ("quantile", "channel")
        np.testing.assert_array_equal(got.values, want)
        np.testing.assert_array_equal(got["error_bound"].values, 0.0)


@pytest.mark.slow  # a two-process cluster
def test_approximate_quantiles_within_their_bound(client: Any, runs: dict[str, Any]) -> None:
    run = runs["a"]
    got = analysis.quantiles(run, CONV, Q, exact=False, bins=64, client=client)
    want = np.quantile(_per_channel(run, CONV), Q, axis=0)
    bound = got["error_bound"].values
    assert np.all(bound > 0)
    assert np.all(np.abs(got.values - want) <= bound[None, :])


def test_float16_keys_and_nan_are_exact() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(999, 3)).astype(np.float16)
    values[::7, 1] = np.nan
    values[5, 2] = -0.0
    keys = eq.to_keys(values[~np.isnan(values)])
    order = np.argsort(keys, kind="stable")
    finite = values[~np.isnan(values)]
    assert np.all(np.diff(finite[order].astype(np.float64)) >= 0)  # keys sort as values
    np.testing.assert_array_equal(eq.from_keys(keys, np.float16), finite)


@pytest.mark.slow  # a two-process cluster
@pytest.mark.parametrize("by", ["mean", "max"])
def test_top_samples_equal_numpy(client: Any, runs: dict[str, Any], by: str) -> None:
    run = runs["a"]
    positions = _positions(run, "label 1")
    got = analysis.top_samples(run, CONV, 5, where={"label": 1}, by=by, client=client)
    maps = run.activation(CONV).values[positions].astype(np.float64)
    scores = maps.mean(axis=(2, 3)) if by == "mean" else maps.max(axis=(2, 3))
    best = np.argsort(-scores, axis=0, kind="stable")[:5]
    np.testing.assert_array_equal(got["position"].values, positions[best])
    np.testing.assert_array_equal(got["sample"].values, run.sample_indices[positions[best]])
    np.testing.assert_allclose(got["score"].values, np.take_along_axis(scores, best, 0), rtol=1e-6)


@pytest.mark.slow  # a two-process cluster
def test_compare_runs_equal_numpy(client: Any, runs: dict[str, Any]) -> None:
    a, b = runs["a"], runs["b"]
    got = analysis.compare_runs(a, b, CONV, client=client)
    va, vb = _per_channel(a, CONV), _per_channel(b, CONV)
    diff = va - vb
    np.testing.assert_allclose(got["max_abs_diff"].values, np.abs(diff).max(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["mean_abs_diff"].values, np.abs(diff).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(got["rmse"].values, np.sqrt((diff**2).mean(axis=0)), rtol=1e-9)
    corr = [np.corrcoef(va[:, c], vb[:, c])[0, 1] for c in range(va.shape[1])]
    np.testing.assert_allclose(got["correlation"].values, corr, rtol=1e-9)
    np.testing.assert_allclose(got["std_b"].values, vb.std(axis=0), rtol=1e-9)
    assert np.all(got["max_abs_diff"].values > 0)  # float16 storage really differs
    assert got.attrs["samples"] == N


def test_bad_subsets_are_one_line_errors(runs: dict[str, Any]) -> None:
    run = runs["a"]
    with pytest.raises(tt.DataError, match="'wrong' is not a subset; use 'misclassified'"):
        analysis.subset_stats(run, CONV, where="wrong")
    with pytest.raises(tt.DataError, match=r"sample indices \[9999\] are not committed"):
        analysis.subset_stats(run, CONV, where=np.array([1, 9999]))
    with pytest.raises(tt.DataError, match="selects no sample"):
        analysis.subset_stats(run, CONV, where={"label": 7})
    with pytest.raises(tt.DataError, match=r"quantiles must lie in \[0, 1\]"):
        analysis.quantiles(run, CONV, [0.5, 2.0])
    with pytest.raises(tt.DataError, match="bins=10 needs range="):
        analysis.subset_stats(run, CONV, bins=10)
    with pytest.raises(tt.LayerNotFoundError):
        analysis.quantiles(run, "nope", 0.5)


def test_closed_client_is_refused(runs: dict[str, Any]) -> None:
    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
    ):
        closed = distributed.Client(cluster)
        closed.close()
        with pytest.raises(tt.ClusterError, match="is closed; pass an open one"):
            analysis.subset_stats(runs["a"], CONV, client=closed)
