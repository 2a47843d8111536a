"""A run larger than the memory of the whole cluster, analysed on it (issue 18).

Two worker processes with a 448 MiB memory limit each (Dask's nanny kills a worker at 95 %
of it) analyse a 1 GiB run: statistics, quantiles (within their stated bound: exact ones read the
run three times, too slow for this shared test machine; tests/test_analysis.py checks them
bit-equal on a small run) and the top samples must finish with the same two
worker processes (none restarted for memory) and agree with NumPy on channels loaded one at
a time here.  The run is captured with the NumPy test backend: the memory behaviour under
test is the analysis', not a framework's.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensortap as tt
from tensortap.core import analysis

distributed = pytest.importorskip("distributed")

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel  # noqa: E402
from worker_probes import current_rss  # noqa: E402

N, B, SIZE, CHANNELS = 1024, 8, 64, 64  # 1 MiB of float32 activations per sample
LIMIT = 448 * 2**20  # per worker: 896 MiB for the cluster, the run holds 1 GiB
KEY = "block.conv"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("big") / "run.zarr"
    x = np.random.default_rng(0).normal(size=(N, SIZE, SIZE, 3)).astype(np.float32)
    tt.capture(
        FakeModel(size=SIZE, channels=CHANNELS),
        x,
        store=path,
        backend=FakeBackend(),
        layers=[KEY],
        batch_size=B,
        block_size=B,  # one batch a block: the ranges and blocks below count batches
        keep_inputs=False,
        progress=False,
    )
    del x
    yield tt.open_run(path)


def test_run_larger_than_the_cluster_memory(big_run: Any) -> None:
    run = big_run
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=LIMIT,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        assert sum(limits) < run.logical_bytes()  # the run does not fit in the cluster
        pids = client.run(os.getpid)
        peaks: dict[str, int] = {}
        done = threading.Event()

        def watch() -> None:  # the workers' resident memory, sampled every 0.5 s
            while not done.wait(0.5):
                for worker, rss in client.run(current_rss).items():
                    peaks[worker] = max(peaks.get(worker, 0), rss)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            stats = analysis.subset_stats(run, KEY, client=client)
            q = [0.05, 0.5, 0.95]
            found = analysis.quantiles(run, KEY, q, exact=False, bins=1024, client=client)
            top = analysis.top_samples(run, KEY, 3, client=client)
        finally:
            done.set()
            watcher.join()
        assert client.run(os.getpid) == pids  # no worker was killed (for memory or else)
    print(f"peak worker memory: {max(peaks.values()) / 2**20:.0f} MiB of {LIMIT / 2**20:.0f}")
    assert max(peaks.values()) < 0.95 * LIMIT, peaks  # below the nanny's kill threshold
    # References, one channel at a time (4 MiB each), in this process.
    for channel in (0, CHANNELS - 1):
        values = run.activation(KEY)[..., channel].values.astype(np.float64)
        bound = float(found["error_bound"][channel])
        assert np.all(np.abs(found.values[:, channel] - np.quantile(values, q)) <= bound)
        assert int(stats["count"][channel]) == values.size
        np.testing.assert_allclose(float(stats["mean"][channel]), values.mean(), rtol=1e-9)
        assert float(stats["max"][channel]) == values.max()
        best = np.argsort(-values.mean(axis=(1, 2)), kind="stable")[:3]
        np.testing.assert_array_equal(top["sample"].values[:, channel], best)
