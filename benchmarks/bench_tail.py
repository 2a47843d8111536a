"""Distribution tails (issue 15): the fraction of values outside each layer's histogram edges.

A capture fixes every layer's histogram edges from its first block (``choose_edges``: the
block's range widened by half its span each side, 0 kept as the lower edge of a ReLU
output); later values outside them are counted, not binned, and the distribution view
draws them as labelled bars outside the edges.  The bar: ≤ 0.1 % of a layer's values
outside the edges, on two runs:

- *demo*: the ``tensortap demo`` run (digits CNN trained 10 epochs, 360 held-out samples,
  batch 64, every layer);
- *W1*: MobileNetV2 (``weights=None``) at 224×224 on random inputs, every Conv2D and
  DepthwiseConv2D output, ``--batches`` batches of ``--batch`` (the first block is one batch).

The fractions are read from the runs' stored ``underflow`` / ``overflow`` / ``count``.

Run: ``python -m benchmarks.bench_tail [--batches N] [--batch B]`` (about a minute); it
writes its own ``## Distribution tails`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_section

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SECTION = "## Distribution tails"
BAR = 1e-3
TYPES = ("Conv2D", "DepthwiseConv2D")


def outside_fractions(run: Any) -> dict[str, float]:
    """Each layer's values below the first or at/above the last edge / its finite values."""
    fractions = {}
    for key in run.layers:
        stats = run.stats(key)
        total = float(np.asarray(stats["count"].values).sum())
        outside = float(stats["underflow"].values) + float(stats["overflow"].values)
        fractions[key] = outside / total if total else 0.0
    return fractions


def _demo_run(folder: Path, block_size: int | None) -> Any:
    import tensortap as tt
    from tensortap.cli.demo import DIGIT_NAMES, digits_model, load_digits_images

    x, y = load_digits_images()
    split = int(0.8 * len(x))
    model = digits_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:split], y[:split], epochs=10, batch_size=64, verbose=0)  # as the demo does
    return tt.capture(
        model,
        x[split:],
        labels=y[split:],
        store=folder / f"demo{block_size}.zarr",
        class_names=DIGIT_NAMES,
        batch_size=64,
        block_size=block_size,
        progress=False,
    )


def _w1_run(folder: Path, batches: int, batch: int) -> Any:
    import keras

    import tensortap as tt

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    x = np.concatenate(
        [
            np.random.default_rng(i).random((batch, 224, 224, 3), dtype=np.float32)
            for i in range(batches)
        ]
    )
    return tt.capture(
        model,
        x,
        store=folder / "w1.zarr",
        layers=lambda node: node.layer_type in TYPES,
        batch_size=batch,
        block_size=batch,  # the edges come from the first batch alone: the hard case
        progress=False,
    )


def _row(name: str, fractions: dict[str, float], seconds: float) -> str:
    worst = max(fractions, key=fractions.__getitem__)
    over = sum(f > BAR for f in fractions.values())
    return (
        f"| {name} | {len(fractions)} | {100 * fractions[worst]:.4f} % (`{worst}`) | "
        f"{100 * float(np.median(list(fractions.values()))):.4f} % | {over} | {seconds:.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="tt-bench-tail-"))
    rows, worst = [], 0.0
    try:
        for block_size, blocks in (
            (None, "blocks sized by bytes, as the demo"),
            (64, "one batch a block"),
        ):
            start = time.perf_counter()
            demo = outside_fractions(_demo_run(folder, block_size))
            name = f"demo (digits CNN, 360 samples, batch 64, {blocks})"
            rows.append(_row(name, demo, time.perf_counter() - start))
            worst = max(worst, *demo.values())
        start = time.perf_counter()
        w1 = outside_fractions(_w1_run(folder, args.batches, args.batch))
        worst = max(worst, *w1.values())
        rows.append(
            _row(
                f"W1 (MobileNetV2, {args.batches}×{args.batch} samples, one batch a block)",
                w1,
                time.perf_counter() - start,
            )
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    command = f"python -m benchmarks.bench_tail --batches {args.batches} --batch {args.batch}"
    section = "\n".join(
        [
            SECTION,
            "",
            f"`{command}` — fraction of each layer's values outside its histogram edges "
            "(fixed from the first block; counted as underflow/overflow and drawn as labelled "
            f"bars outside the edges by `viz.distribution`). Bar (issue 15): ≤ {100 * BAR:.1f} % "
            "per layer, or the outside mass drawn and labelled.",
            "",
            "| run | layers | worst layer | median layer | layers over the bar | s |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "| measure | value | target | |",
            "|---|---|---|---|",
            f"| values outside the edges, worst layer of any run above | **{100 * worst:.4f} %** "
            f"| ≤ {100 * BAR:.1f} % | {'met' if worst <= BAR else '**missed**'} |",
            "",
        ]
    )
    write_section(SECTION, section)
    print(section)


if __name__ == "__main__":
    main(sys.argv[1:])
