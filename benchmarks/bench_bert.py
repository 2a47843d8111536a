"""A small Hugging Face BERT (issue 12): every module captured, against the plain forward.

``BertForSequenceClassification`` from a small config (4 layers, hidden 256, 4 heads,
intermediate 1024, 2 labels), untrained, random token ids of length 128, batch 32 (torch, 1
thread).  Reported: capture to a local run / plain forward (eval, ``no_grad``), and capture /
the floor, ``max(forward, activation bytes / the disk's sequential write speed)`` — the
write speed measured here by writing and ``fsync``-ing a 512 MiB file.  Target: ≤ 2× the floor.

Both sides are warmed once on one batch.  ``transformers`` is a benchmark-only dependency
(the ``bench`` extra).  Nothing is downloaded: the model is built from its config.

Run: ``python -m benchmarks.bench_bert [--samples N] [--no-write]``; it rewrites its own
``## BERT`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_section

SECTION = "## BERT"
BATCH = 32
SEQUENCE = 128


def bert() -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def tokens(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 30522, size=(n, SEQUENCE)).astype(np.int64)


def time_forward(model: Any, x: np.ndarray) -> float:
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            model(torch.from_numpy(x[i : i + BATCH])).logits.numpy()
    return time.perf_counter() - start


def write_speed(folder: Path, nbytes: int = 512 * 2**20) -> float:
    """Sequential write speed of ``folder``'s disk in bytes/s (written, fsync-ed, deleted)."""
    block = np.ones(16 * 2**20 // 4, np.float32)
    path = folder / "speed.bin"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(nbytes // block.nbytes):
            block.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return nbytes / elapsed


def run(samples: int) -> dict[str, Any]:
    import torch

    import tensortap as tt

    torch.set_num_threads(1)
    model, x = bert(), tokens(samples)
    folder = Path(tempfile.mkdtemp(prefix="tt-bench-bert-"))
    try:
        speed = write_speed(folder)
        time_forward(model, x[:BATCH])  # warm-up, both sides alike
        tt.capture(model, x[:BATCH], store=folder / "warm.zarr", progress=False)
        forward = time_forward(model, x)
        start = time.perf_counter()
        captured = tt.capture(model, x, store=folder / "bert.zarr", progress=False)
        capture = time.perf_counter() - start
        activation_bytes = captured.logical_bytes()
        modules = len(captured.layers)
        files = sum(1 for f in (folder / "bert.zarr").rglob("*") if f.is_file())
        block_size = captured.block_size
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    floor = max(forward, activation_bytes / speed)
    return {
        "samples": samples,
        "modules": modules,
        "forward_s": forward,
        "capture_s": capture,
        "activation_gb": activation_bytes / 1e9,
        "write_mb_s": speed / 1e6,
        "floor_s": floor,
        "files": files,
        "block_size": block_size,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
    }


def _write_results(r: dict[str, Any]) -> None:
    to_floor = r["capture_s"] / r["floor_s"]
    verdict = "met" if to_floor <= 2 else "**missed**"
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks.bench_bert --samples {r['samples']}` on {r['machine']}, "
        f"{r['cpus']} CPUs, torch {r['torch']} with 1 thread, "
        f"{r['date']}. `BertForSequenceClassification` (4 layers, hidden 256, sequence "
        f"{SEQUENCE}, untrained), every module ({r['modules']}), batch {BATCH}, default "
        f"options (blocks of {r['block_size']}), one run.",
        "",
        "| measure | value | target | |",
        "|---|---|---|---|",
        f"| capture to a local run / plain forward | {r['capture_s']:.2f} s / "
        f"{r['forward_s']:.2f} s = **{r['capture_s'] / r['forward_s']:.2f}** | reported | |",
        f"| capture / floor = max(forward, {r['activation_gb']:.2f} GB / "
        f"{r['write_mb_s']:,.0f} MB/s) | {r['capture_s']:.2f} s / {r['floor_s']:.2f} s = "
        f"**{to_floor:.2f}** | ≤ 2 | {verdict} |",
        f"| files | {r['files']:,} for {r['samples']:,} samples | | |",
        "",
    ]
    write_section(SECTION, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    r = run(args.samples)
    print(json.dumps(r, indent=2))
    if not args.no_write:
        _write_results(r)


if __name__ == "__main__":
    main()
