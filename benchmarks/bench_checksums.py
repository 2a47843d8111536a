"""What the CRC-32C on every chunk costs a capture (issue 20).

Two captures, each run with checksums and without (the codec left out of every array, as
before issue 20), alternating so that the load of a shared machine falls on both alike:

- **W1**: MobileNetV2 (``weights=None``) at 224×224, batch 32, every Conv2D and
  DepthwiseConv2D output (~855 MB of float32 a batch): the large-chunk, ``O_DIRECT`` path.
- **small layers**: a 48-layer MLP (Dense 32 units), batch 32: ~250 small chunks a block,
  where a per-chunk cost would show.

Each case runs ``--pairs`` (off, on) captures back to back, alternating the order; reported
are the median of the per-pair on/off ratios of the process's CPU time (all threads) and of
the wall time, their range, and the noise (median change between consecutive captures
without checksums), plus the CRC-32C throughput on one core.  Defaults (2 W1 batches, 16
MLP batches, 6 pairs) take ~2–3 minutes on a quiet 2-core machine.

Run: ``python -m benchmarks.bench_checksums [--batches N] [--small-batches M] [--pairs P]``;
it rewrites its own ``## Checksums`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_section

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SECTION = "## Checksums"
#: "A few percent" of CPU (issue 20).
COST_BAR = 0.05
BATCH = 32
TYPES = ("Conv2D", "DepthwiseConv2D")


@contextlib.contextmanager
def checksums_off() -> Iterator[None]:
    """Create arrays without the ``crc32c`` codec, as runs were written before issue 20."""
    from tensortap.core.store import commit, writer

    def without(compressors: Any) -> Any:
        return compressors

    saved = writer.with_checksum, commit.with_checksum
    writer.with_checksum = commit.with_checksum = without  # type: ignore[assignment]
    try:
        yield
    finally:
        writer.with_checksum, commit.with_checksum = saved


def _w1() -> tuple[Any, Any]:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    return model, lambda node: node.layer_type in TYPES


def _mlp() -> tuple[Any, Any]:
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.Input((64,))] + [
        keras.layers.Dense(32, activation="relu", name=f"d{i}") for i in range(48)
    ]
    return keras.Sequential([*layers, keras.layers.Dense(10)]), "d*"


def _timed(model: Any, x: np.ndarray, layers: Any, folder: Path, *, checksum: bool) -> tuple:
    import tensortap as tt

    context = contextlib.nullcontext() if checksum else checksums_off()
    wall, cpu = time.perf_counter(), time.process_time()
    with context:
        tt.capture(
            model,
            x,
            store=folder / "run.zarr",
            layers=layers,
            batch_size=BATCH,
            progress=False,
            overwrite=True,
        )
    return time.perf_counter() - wall, time.process_time() - cpu


def crc_throughput() -> float:
    """GB/s of CRC-32C on one core over 256 MB (the speed the writer threads see)."""
    import google_crc32c

    data = np.random.default_rng(0).integers(0, 255, 256 << 20, np.uint8)
    google_crc32c.value(data[: 1 << 20])
    start = time.perf_counter()
    google_crc32c.value(data)
    return data.nbytes / (time.perf_counter() - start) / 1e9


def _ratios(on: list[float], off: list[float]) -> list[float]:
    return [a / b for a, b in zip(on, off, strict=True)]


def measure(name: str, build: Any, n_samples: int, pairs: int) -> dict[str, Any]:
    """``pairs`` (off, on) captures back to back, the order alternating (off-on, on-off...)
    so that a drift of the machine's load falls on both sides alike; the cost is the median
    of the per-pair ratios, the noise the median change between consecutive "off" runs."""
    model, layers = build()
    shape = (n_samples, *model.inputs[0].shape[1:])
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    rows: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="tt-bench-crc-") as tmp:
        folder = Path(tmp)
        _timed(model, x, layers, folder, checksum=True)  # tracing, first calls
        for i in range(pairs):
            for checksum in (False, True) if i % 2 == 0 else (True, False):
                rows[checksum].append(_timed(model, x, layers, folder, checksum=checksum))
    result: dict[str, Any] = {"name": name, "samples": n_samples, "pairs": pairs}
    for k, what in ((0, "wall"), (1, "cpu")):
        on, off = [r[k] for r in rows[True]], [r[k] for r in rows[False]]
        ratios = _ratios(on, off)
        result[f"{what}_on"], result[f"{what}_off"] = statistics.median(on), statistics.median(off)
        result[f"{what}_ratio"] = statistics.median(ratios)
        result[f"{what}_range"] = (min(ratios), max(ratios))
        result[f"{what}_noise"] = statistics.median(
            abs(b / a - 1) for a, b in itertools.pairwise(off)
        )
    return result


def _cell(c: dict[str, Any], what: str) -> str:
    low, high = c[f"{what}_range"]
    return (
        f"{(c[f'{what}_ratio'] - 1) * 100:+.1f} % ({(low - 1) * 100:+.0f}…{(high - 1) * 100:+.0f}) "
        f"| ±{c[f'{what}_noise'] * 100:.1f} %"
    )


def _verdict(cases: list[dict[str, Any]]) -> list[str]:
    """The bar (issue 20): checksums cost a few percent of CPU at most.  A case meets it when
    its median cost is at most ``COST_BAR``, or inside the noise (not measurable here)."""
    met = all(c["cpu_ratio"] - 1 <= max(COST_BAR, c["cpu_noise"]) for c in cases)
    value = ", ".join(
        f"{c['name'].split(' (')[0]} {(c['cpu_ratio'] - 1) * 100:+.1f} %" for c in cases
    )
    return [
        "| measure | value | target | |",
        "|---|---|---|---|",
        f"| crc32c on / off, CPU time, median cost | {value} "
        f"| ≤ {COST_BAR * 100:.0f} % or inside the noise | {'met' if met else '**missed**'} |",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="W1 batches per capture")
    parser.add_argument("--small-batches", type=int, default=16, help="MLP batches per capture")
    parser.add_argument("--pairs", type=int, default=6, help="(off, on) pairs per case")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    speed = crc_throughput()
    cases = [
        measure("W1 (MobileNetV2, 224², batch 32)", _w1, args.batches * BATCH, args.pairs),
        measure("small layers (48× Dense 32)", _mlp, args.small_batches * BATCH, args.pairs),
    ]
    lines = [
        SECTION,
        "",
        f"Command: `python -m benchmarks.bench_checksums --batches {args.batches} "
        f"--small-batches {args.small_batches} --pairs {args.pairs}` "
        f"({platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end).  Each pair captures the same data without "
        "and with the `crc32c` codec back to back (order alternating); *cost* is the median "
        "of the pairs' on/off ratios (their range in brackets), *noise* the median change "
        "between consecutive captures without checksums: a cost inside the noise is not "
        "measurable here.  CPU is the process's CPU time (all threads), wall the elapsed time.",
        "",
        f"CRC-32C (`google-crc32c`) on one core: {speed:.1f} GB/s.",
        "",
        "| capture | samples | CPU-s off / on (median) | CPU cost | CPU noise "
        "| wall off / on | wall cost | wall noise |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c['name']} | {c['samples']} | {c['cpu_off']:.2f} / {c['cpu_on']:.2f} | "
            f"{_cell(c, 'cpu')} | {c['wall_off']:.2f} s / {c['wall_on']:.2f} s | "
            f"{_cell(c, 'wall')} |"
        )
    lines += ["", *_verdict(cases), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
