"""Benchmark of training runs (issue 14): training time with the capture / plain training time.

The model is the small digits CNN of the training tests (``tests/training_models.py``:
Conv-ReLU-Pool-Conv-ReLU-GAP-Dense on scikit-learn's 8×8 digits, 1,733 training samples,
batch 32, so 55 steps an epoch; the last 64 samples are the probe).  Three settings, each
timed end to end (the whole ``fit`` call / the whole loop, so the callback's start — the
probe step's trace, the run's creation — and its end are included):

- *plain*: ``model.fit`` (or the PyTorch loop) without tensortap;
- *stats every 50*: ``CaptureCallback(probe, store, every_n_batches=50,
  every_n_epochs=None, policy="stats")`` (``Monitor(..., every=50, policy="stats")``);
- *full every epoch*: ``CaptureCallback(probe, store, every_n_epochs=1, policy="full")``,
  the 64-sample probe's tensors of every layer stored at each epoch's end
  (``Monitor(..., every=None, every_n_epochs=1)``).

Method (made robust for issue 14, where three repetitions spread 1.02-1.33): every capture
run is timed in a pair with a plain run, the order inside the pair flipped every pair, so a
load that rises or falls during the benchmark weighs on both sides alike; the figure is the
median of the pair ratios, reported with their spread and with the median ratio of CPU
seconds (the process's, the writer thread's included), which a shared machine disturbs
less than wall time.  Every timed run trains the same model from the same state: PyTorch
builds a fresh model with the same seed (and a fresh optimizer) for each run; Keras builds
a fresh model with the same seed for each repetition, compiles its train function and the
callbacks' probe steps in a short warm-up ``fit`` (as any real training has after its first
step), then starts each run from the model's initial weights with the optimizer's
variables zeroed.  The capture path is warmed up once per process too (the statistics
kernel's and the store's first use).

Run: ``python -m benchmarks.bench_training [--epochs E] [--repeats R] [--only keras|torch]``;
it writes its own ``## Training runs`` section in ``benchmarks/RESULTS.md`` (``--no-write``:
only prints it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._results import write_section

MODELS = Path(__file__).resolve().parents[1] / "tests" / "training_models.py"
#: Issue 14's bars: capture / plain training time.
BARS = {"stats every 50": 1.05, "full every epoch": 1.10}


def _models() -> Any:
    # The benchmark measures the very models the tests check, so they are loaded from there.
    spec = importlib.util.spec_from_file_location("training_models", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("training_models", module)
    spec.loader.exec_module(module)
    return module


def _timed(function: Any) -> tuple[float, float]:
    """Wall and process CPU seconds of ``function()``."""
    start, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - start, time.process_time() - cpu


def _pairs(
    repeats: int, settings: Sequence[str], run: Any, fresh: Any = None
) -> dict[str, list[tuple[float, float, float, float]]]:
    """``repeats`` interleaved (plain, capture) pairs per setting, the order flipped every
    pair: ``{setting: [(wall, cpu, plain wall, plain cpu), ...]}``.  ``run(setting)`` runs
    one timed training (``None``: plain); ``fresh()`` prepares a repetition."""
    pairs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in settings}
    for rep in range(repeats):
        if fresh is not None:
            fresh()
        for index, name in enumerate(settings):
            if (rep + index) % 2 == 0:
                base, captured = run(None), run(name)
            else:
                captured, base = run(name), run(None)
            pairs[name].append((*captured, *base))
    return pairs


def _keras(epochs: int, repeats: int, folder: Path) -> dict[str, Any]:
    import keras
    import numpy as np

    import tensortap as tt

    models = _models()
    x, y, px, py = models.digits()
    callbacks = {
        "stats every 50": lambda: tt.CaptureCallback(
            (px, py), folder / "keras_stats.zarr", every_n_batches=50, every_n_epochs=None,
            policy="stats", overwrite=True,
        ),
        "full every epoch": lambda: tt.CaptureCallback(
            (px, py), folder / "keras_full.zarr", every_n_epochs=1, overwrite=True
        ),
    }  # fmt: skip
    state: dict[str, Any] = {}

    def fresh() -> None:
        model = models.keras_cnn(seed=0)
        initial = model.get_weights()
        model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)  # the train function
        for make in callbacks.values():  # the probe steps (traced once per model)
            model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0, callbacks=[make()])
        state.update(model=model, initial=initial)

    def run(name: str | None) -> tuple[float, float]:
        model = state["model"]
        model.set_weights(state["initial"])
        for variable in model.optimizer.variables:  # Adam's moments and step count
            if not variable.path.endswith("learning_rate"):
                dtype = keras.backend.standardize_dtype(variable.dtype)
                variable.assign(np.zeros(variable.shape, dtype))
        used = [] if name is None else [callbacks[name]()]
        return _timed(
            lambda: model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=used)
        )

    return _pairs(repeats, list(callbacks), run, fresh)


def _torch(epochs: int, repeats: int, folder: Path) -> dict[str, Any]:
    import torch

    import tensortap as tt

    torch.set_num_threads(1)
    models = _models()
    x, y, px, py = models.digits()
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(y)
    px = px.transpose(0, 3, 1, 2).copy()
    loss_fn = torch.nn.CrossEntropyLoss()
    monitors = {
        "stats every 50": lambda model: tt.Monitor(
            model, (px, py), folder / "torch_stats.zarr", every=50, policy="stats", overwrite=True
        ),
        "full every epoch": lambda model: tt.Monitor(
            model, (px, py), folder / "torch_full.zarr", every=None, every_n_epochs=1,
            overwrite=True,
        ),
    }  # fmt: skip

    def train(model: Any, monitor: Any, epochs: int) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _epoch in range(epochs):
            for start in range(0, len(x), 32):
                optimizer.zero_grad()
                loss = loss_fn(model(x[start : start + 32]), y[start : start + 32])
                loss.backward()
                optimizer.step()
                if monitor is not None:
                    monitor.step(loss)
            if monitor is not None:
                monitor.end_epoch()

    def run(name: str | None, epochs: int = epochs) -> tuple[float, float]:
        def body() -> None:
            model = models.torch_cnn(seed=0)  # a fresh model, the same initial weights
            if name is None:
                train(model, None, epochs)
            else:
                with monitors[name](model) as monitor:
                    train(model, monitor, epochs)

        return _timed(body)

    for name in (None, *monitors):  # warm-up: kernels, the statistics kernel, the store
        run(name, epochs=1)
    return _pairs(repeats, list(monitors), run)


def _rows(framework: str, pairs: dict[str, list[tuple[float, float, float, float]]]) -> list[str]:
    plain = [p for timings in pairs.values() for _, _, p, _ in timings]
    rows = [
        f"| {framework}, plain | {statistics.median(plain):.2f} s | {len(plain)} runs, each "
        "paired with one capture run below | | | | | |"
    ]
    for name, timings in pairs.items():
        ratios = [t / p for t, _, p, _ in timings]
        cpu = statistics.median(c / pc for _, c, _, pc in timings)
        median = statistics.median(ratios)
        bar = BARS[name]
        rows.append(
            f"| {framework}, {name} / plain | {statistics.median(t for t, *_ in timings):.2f} s "
            f"| {', '.join(f'{r:.2f}' for r in ratios)} | {min(ratios):.2f}-{max(ratios):.2f} "
            f"| {cpu:.3f} | **{median:.3f}** | ≤ {bar:.2f} | "
            f"{'met' if median <= bar else '**missed**'} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--only", choices=["keras", "torch"], default=None)
    parser.add_argument(
        "--no-write", action="store_true", help="print the section; leave RESULTS.md as it is"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="tt-bench-training-"))
    started = time.perf_counter()
    rows: list[str] = []
    try:
        if args.only in (None, "keras"):
            rows += _rows("Keras `fit`", _keras(args.epochs, args.repeats, folder))
        if args.only in (None, "torch"):
            rows += _rows("PyTorch loop", _torch(args.epochs, args.repeats, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python -m benchmarks.bench_training" + (
        f" --epochs {args.epochs} --repeats {args.repeats}"
        + (f" --only {args.only}" if args.only else "")
    )
    section = "\n".join(
        [
            "## Training runs",
            "",
            f"`{command}` — digits CNN, batch 32, 55 steps an epoch, {args.epochs} epochs, "
            f"64-sample probe; {args.repeats} interleaved (plain, capture) pairs per setting, "
            f"the order flipped every pair, each run from the same initial state "
            f"({platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the "
            f"end; {time.perf_counter() - started:.0f} s in all). The figure is the median of "
            "the pair ratios (capture / plain, wall time); the CPU-time ratio (the process's "
            "CPU seconds, the writer thread's included) is steadier than wall time on a "
            "shared machine. Bars (issue 14): stats every 50 ≤ 1.05, full every epoch ≤ 1.10.",
            "",
            "| measure | median s | ratios per pair | spread | median CPU-time ratio "
            "| median ratio | target | |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    if not args.no_write:
        write_section("## Training runs", section)
    print(section)


if __name__ == "__main__":
    main(sys.argv[1:])
