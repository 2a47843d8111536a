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

PyTorch: the settings alternate within each repetition (plain, stats, full, plain, ...).
Keras: each capture setting is timed in a pair with its own plain ``fit``, the order inside
the pair flipped every pair, so a load that changes during the run weighs on both sides.
Every run starts from the same initial weights, and the figure is the median of the
ratios.  Keras' own train function is compiled once before timing (a warm-up epoch), as it
is in any real training after its first step, and so is the callback's probe step (traced
once per model: a second ``fit`` of the same model reuses it).

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
from pathlib import Path
from typing import Any

from benchmarks._results import write_section

MODELS = Path(__file__).resolve().parents[1] / "tests" / "training_models.py"


def _models() -> Any:
    # The benchmark measures the very models the tests check, so they are loaded from there.
    spec = importlib.util.spec_from_file_location("training_models", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("training_models", module)
    spec.loader.exec_module(module)
    return module


def _keras(epochs: int, repeats: int, folder: Path) -> list[str]:
    """Keras rows from interleaved (plain, capture) pairs, the order flipped every pair.

    Each capture setting is timed next to its own plain ``fit`` and the order inside the
    pair alternates (plain first, then capture first), so a load that rises or falls
    during the benchmark weighs on both sides alike; the figure is the median pair ratio.
    """
    import tensortap as tt

    models = _models()
    x, y, px, py = models.digits()
    model = models.keras_cnn()
    initial = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # compiles the train function
    settings = {
        "stats every 50": lambda: [
            tt.CaptureCallback(
                (px, py),
                folder / "keras_stats.zarr",
                every_n_batches=50,
                every_n_epochs=None,
                policy="stats",
                overwrite=True,
            )
        ],
        "full every epoch": lambda: [
            tt.CaptureCallback(
                (px, py), folder / "keras_full.zarr", every_n_epochs=1, overwrite=True
            )
        ],
    }

    def timed(callbacks: list[Any]) -> tuple[float, float]:
        model.set_weights(initial)
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
        return time.perf_counter() - start, time.process_time() - cpu

    for callbacks in settings.values():  # traces the probe steps (once per model), as above
        model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0, callbacks=callbacks())
    plain: list[tuple[float, float]] = []
    pairs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in settings}
    for rep in range(repeats):
        for index, (name, callbacks) in enumerate(settings.items()):
            if (rep + index) % 2 == 0:
                base, with_capture = timed([]), timed(callbacks())
            else:
                with_capture, base = timed(callbacks()), timed([])
            plain.append(base)
            pairs[name].append((*with_capture, *base))
    rows = [
        f"| Keras `fit` | plain | {statistics.median(t for t, _ in plain):.2f} | 1.000 | "
        f"{len(plain)} runs, each paired with one capture run below | 1.000 |"
    ]
    for name, timings in pairs.items():
        ratios = [t / p for t, _, p, _ in timings]
        cpu_ratios = [c / pc for _, c, _, pc in timings]
        rows.append(
            f"| Keras `fit` | {name} | {statistics.median(t for t, *_ in timings):.2f} | "
            f"{statistics.median(ratios):.3f} | {', '.join(f'{r:.2f}' for r in ratios)} | "
            f"{statistics.median(cpu_ratios):.3f} |"
        )
    return rows


def _torch(epochs: int, repeats: int, folder: Path) -> dict[str, list[float]]:
    import torch

    import tensortap as tt

    torch.set_num_threads(1)
    models = _models()
    x, y, px, py = models.digits()
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(y)
    px = px.transpose(0, 3, 1, 2).copy()
    model = models.torch_cnn()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = torch.nn.CrossEntropyLoss()

    def train(monitor: Any) -> None:
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

    settings = {
        "plain": lambda: None,
        "stats every 50": lambda: tt.Monitor(
            model, (px, py), folder / "torch_stats.zarr", every=50, policy="stats", overwrite=True
        ),
        "full every epoch": lambda: tt.Monitor(
            model, (px, py), folder / "torch_full.zarr", every=None, every_n_epochs=1,
            overwrite=True,
        ),
    }  # fmt: skip
    train(None)  # warm-up
    times: dict[str, list[float]] = {n: [] for name in settings for n in (name, f"{name} cpu")}
    for _ in range(repeats):
        for name, make in settings.items():
            model.load_state_dict(initial)
            start, cpu = time.perf_counter(), time.process_time()
            monitor = make()
            if monitor is None:
                train(None)
            else:
                with monitor:
                    train(monitor)
            times[name].append(time.perf_counter() - start)
            times[f"{name} cpu"].append(time.process_time() - cpu)
    return times


def _rows(framework: str, times: dict[str, list[float]]) -> list[str]:
    plain, plain_cpu = times["plain"], times["plain cpu"]
    rows = []
    for name in [n for n in times if not n.endswith(" cpu")]:
        values, cpu = times[name], times[f"{name} cpu"]
        ratios = [v / p for v, p in zip(values, plain, strict=True)]
        cpu_ratios = [v / p for v, p in zip(cpu, plain_cpu, strict=True)]
        rows.append(
            f"| {framework} | {name} | {statistics.median(values):.2f} | "
            f"{statistics.median(ratios):.3f} | {', '.join(f'{r:.2f}' for r in ratios)} | "
            f"{statistics.median(cpu_ratios):.3f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["keras", "torch"], default=None)
    parser.add_argument(
        "--no-write", action="store_true", help="print the section; leave RESULTS.md as it is"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="tt-bench-training-"))
    rows: list[str] = []
    try:
        if args.only in (None, "keras"):
            rows += _keras(args.epochs, args.repeats, folder)
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
            f"64-sample probe; median of {args.repeats} alternating repetitions "
            f"({platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end). Bars (issue 14): stats every 50 "
            "≤ 1.05, full every epoch ≤ 1.10. The CPU-time ratio (the process's CPU seconds, "
            "the writer thread's included) is steadier than wall time on a loaded machine.",
            "",
            "| framework | setting | median s | median ratio to plain | ratios per repetition "
            "| median CPU-time ratio |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    if not args.no_write:
        write_section("## Training runs", section)
    print(section)


if __name__ == "__main__":
    main(sys.argv[1:])
