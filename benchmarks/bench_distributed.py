"""Benchmark of the distributed capture (issue 18): samples/s with 1 and with 2 Dask workers.

The model is the tests' ResNet-like ``TinyResNet`` (``tests/torch_models.py``, width 16,
10 classes) on random 3×32×32 images stored as a ``.npy`` file (opened by path on the
workers, nothing shipped), capturing its block outputs (``layer1.*``, ``layer2.*``) into a
local run.  For each worker count a fresh ``LocalCluster(n_workers=n, threads_per_worker=1,
processes=True)`` first captures a small warm-up run (worker start, imports, the model
built once per worker), then the timed run; the time is the whole ``capture_distributed``
call, block 0 on the coordinator included.  A single-process ``tt.capture`` of the same
data, torch on one thread, is the baseline.

Run: ``python -m benchmarks.bench_distributed [--samples N] [--batch-size B]``; it writes its
own ``## Distributed capture`` section in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_section

MODELS = Path(__file__).resolve().parents[1] / "tests" / "torch_models.py"
LAYERS = ["layer1.*", "layer2.*"]


def tiny_resnet(width: int = 16) -> Any:
    """The model factory, also called on every worker (importable there: same sys.path)."""
    import torch

    spec = importlib.util.spec_from_file_location("torch_models", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("torch_models", module)
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return module.TinyResNet(width=width, classes=10).eval()


def _distributed_s(n_workers: int, x_path: str, folder: Path, batch_size: int) -> float:
    from distributed import Client, LocalCluster

    import tensortap as tt

    factory = functools.partial(tiny_resnet)
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        common = dict(client=client, layers=LAYERS, batch_size=batch_size, progress=False)
        warm = str(folder / f"warm{n_workers}.npy")
        np.save(warm, np.load(x_path, mmap_mode="r")[: 4 * batch_size])
        tt.capture_distributed(factory, warm, folder / f"warm{n_workers}.zarr", **common)
        started = time.perf_counter()
        run = tt.capture_distributed(factory, x_path, folder / f"w{n_workers}.zarr", **common)
        elapsed = time.perf_counter() - started
    assert run.status == "complete"
    return elapsed


def main(samples: int = 2048, batch_size: int = 64, write: bool = True) -> dict[str, Any]:
    """Time one capture per worker count (1, 2) and a single-process baseline.

    Parameters
    ----------
    samples
        Random 3×32×32 images.
    batch_size
        Samples per block.
    write
        Update the ``## Distributed capture`` section of ``benchmarks/RESULTS.md``.

    Returns
    -------
    dict
        Seconds and samples/s per configuration, and the speed-up of 2 workers over 1.
    """
    import tensortap as tt

    folder = Path(tempfile.mkdtemp(prefix="tt-bench-dist-"))
    load = os.getloadavg()[0]
    try:
        x = np.random.default_rng(0).normal(size=(samples, 3, 32, 32)).astype(np.float32)
        x_path = str(folder / "x.npy")
        np.save(x_path, x)
        model = tiny_resnet()
        tt.capture(model, x[:batch_size], layers=LAYERS, batch_size=batch_size, progress=False)
        started = time.perf_counter()
        tt.capture(
            model, x, store=folder / "single.zarr", layers=LAYERS, batch_size=batch_size,
            progress=False,
        )  # fmt: skip
        single_s = time.perf_counter() - started
        one_s = _distributed_s(1, x_path, folder, batch_size)
        two_s = _distributed_s(2, x_path, folder, batch_size)
        logical = tt.open_run(folder / "w2.zarr").logical_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "samples": samples,
        "batch_size": batch_size,
        "run_mb": logical / 1e6,
        "load": load,
        "single_s": single_s,
        "one_s": one_s,
        "two_s": two_s,
        "single_rate": samples / single_s,
        "one_rate": samples / one_s,
        "two_rate": samples / two_s,
        "speedup": one_s / two_s,
    }
    if write:
        _write_results(result)
    return result


def _write_results(r: dict[str, Any]) -> None:
    section = "\n".join(
        [
            "## Distributed capture",
            "",
            f"`python -m benchmarks.bench_distributed --samples {r['samples']} --batch-size "
            f"{r['batch_size']}` on {platform.machine()}, {os.cpu_count()} CPUs **shared with "
            f"other jobs** (1-min load average {r['load']:.1f} at the start), "
            f"{time.strftime('%Y-%m-%d')}. Model: the tests' `TinyResNet` (width 16) on "
            f"{r['samples']} random 3×32×32 images, block outputs ({', '.join(LAYERS)}), "
            f"{r['run_mb']:.0f} MB per run; torch on one thread per process; one run each.",
            "",
            "| configuration | time | samples/s |",
            "|---|---|---|",
            f"| `tt.capture`, one process | {r['single_s']:.1f} s | {r['single_rate']:.0f} |",
            f"| `capture_distributed`, 1 worker | {r['one_s']:.1f} s | {r['one_rate']:.0f} |",
            f"| `capture_distributed`, 2 workers | {r['two_s']:.1f} s | {r['two_rate']:.0f} |",
            "",
            f"2 workers / 1 worker: **{r['speedup']:.2f}×**; one worker writes "
            f"{r['one_rate'] * r['run_mb'] / r['samples']:.0f} MB/s. This machine has 2 cores "
            "for the coordinator, the scheduler, and both workers, "
            "so the figure says that the work divides, not what 2 machines give. A "
            "distributed call also pays, inside the timed call, the per-worker checks and "
            "block 0 computed by the coordinator before any worker starts (part of why 1 "
            "worker is slower than one process here; not measured apart).",
            "",
        ]
    )
    write_section("## Distributed capture", section)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2048, help="images to capture")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per block")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse(None)
    print(main(samples=args.samples, batch_size=args.batch_size))
