"""Benchmark of the PyTorch backend (issue 6): capture-to-run time / plain forward time.

The model is the small ResNet-like network of the torch tests (``tests/torch_models.py``:
ResNet-18's layout, a stem and two stages of two basic blocks, at toy width) on random
32×32 RGB images.  Both figures come from the same process, one after the other:

- *plain forward*: the model in eval mode under ``torch.no_grad``, the same batches;
- *capture*: ``tt.capture(model, x, store=<local folder>)`` end to end — the trace of the
  capture graph, hooks, copying every activation out, statistics, compression and the
  writes of a local Zarr run — for every node (``layers="*"``), then again with gradients
  of the predicted class for the block outputs (``layer1.*``, ``layer2.*``), whose plain
  counterpart is forward + ``torch.autograd.grad``.

The split, to tell the backend's, the engine's and the store's shares apart: the backend
alone (``session.run`` into NumPy), the engine's statistics alone over those arrays, and
the disk's floor (the same bytes written raw).

One thread for torch (``torch.set_num_threads(1)``): the machine is shared, and a ratio
of two single-threaded timings is steadier than one of two contended ones.

The headline ratio is the median of interleaved (forward, capture) pairs, the order
flipped every pair (``--repeats``, 5 by default): on a shared machine one pass of either
side swings by tens of percent.

Run: ``python -m benchmarks.bench_torch [--samples N] [--batch-size B] [--repeats R]``; it writes its
own ``## PyTorch`` section in ``benchmarks/RESULTS.md``.
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

import numpy as np

from benchmarks._results import write_section

MODELS = Path(__file__).resolve().parents[1] / "tests" / "torch_models.py"
#: Issue 12: every node of the TinyResNet to a local run / the plain forward.
RATIO_TARGET = 8.0


def _tiny_resnet() -> Any:
    # The benchmark measures the very model the tests check, so it is loaded from there.
    spec = importlib.util.spec_from_file_location("torch_models", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("torch_models", module)
    spec.loader.exec_module(module)
    return module


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _forward_s(model: Any, x: np.ndarray, batch_size: int, gradients: bool) -> float:
    import torch

    started = time.perf_counter()
    for i in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[i : i + batch_size])
        if gradients:
            scores = model(batch)
            picked = scores.gather(1, scores.argmax(dim=1, keepdim=True)).sum()
            torch.autograd.grad(picked, [p for p in model.parameters()][:1])
        else:
            with torch.no_grad():
                model(batch)
    return time.perf_counter() - started


def _session_s(model: Any, x: np.ndarray, batch_size: int) -> float:
    """The backend alone: every node captured into NumPy arrays, nothing stored."""
    from tensortap.backends.torch import TorchBackend

    backend = TorchBackend()
    started = time.perf_counter()
    graph = backend.graph(model, x[:batch_size])
    with backend.session(model, graph.nodes) as session:
        for i in range(0, len(x), batch_size):
            session.run({"x": x[i : i + batch_size]})
    return time.perf_counter() - started


def _stats_s(model: Any, x: np.ndarray, batch_size: int) -> float:
    """The engine's statistics alone: every node's activations reduced as the write
    pipeline reduces them (channels-last view, fixed edges, one thread), nothing stored."""
    from tensortap.backends.torch import TorchBackend
    from tensortap.core.stats import block_stats, choose_edges, to_channels_last

    backend = TorchBackend()
    graph = backend.graph(model, x[:batch_size])
    with backend.session(model, graph.nodes) as session:
        results = [session.run({"x": x[i : i + batch_size]}) for i in range(0, len(x), batch_size)]
    views = {
        node.key: [
            to_channels_last(r.activations[node.key], node.dims, node.channel_dim) for r in results
        ]
        for node in graph.nodes
    }
    edges = {key: choose_edges(blocks[0]) for key, blocks in views.items()}
    started = time.perf_counter()
    for key, blocks in views.items():
        for x3 in blocks:
            block_stats(x3, edges[key])
    return time.perf_counter() - started


def _raw_write_s(folder: Path, nbytes: int) -> float:
    """The disk's floor: ``nbytes`` written to one file and fsync-ed (then deleted)."""
    chunk = np.ones(8 * 2**20 // 4, np.float32)
    path = folder / "raw.bin"
    started = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // chunk.nbytes)):
            chunk.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def main(
    samples: int = 256, batch_size: int = 32, write: bool = True, repeats: int = 5
) -> dict[str, Any]:
    """Time a plain forward pass and a capture of the same data into a local run.

    Parameters
    ----------
    samples
        Random 3×32×32 images.
    batch_size
        Samples per batch, for the forward pass and the capture alike.
    write
        Update the ``## PyTorch`` section of ``benchmarks/RESULTS.md``.
    repeats
        Interleaved (forward, every-node capture) pairs behind the headline ratio.

    Returns
    -------
    dict
        Timings in seconds, the ratios, the number of layers and the run's size.
    """
    import torch

    import tensortap as tt
    from tensortap.backends.torch import TorchBackend

    torch.set_num_threads(1)
    models = _tiny_resnet()
    torch.manual_seed(0)
    model = models.TinyResNet(width=8, classes=10).eval()
    x = np.random.default_rng(0).normal(size=(samples, 3, 32, 32)).astype(np.float32)
    _forward_s(model, x[:batch_size], batch_size, gradients=True)  # warm-up: allocator, kernels

    folder = Path(tempfile.mkdtemp(prefix="tt-bench-torch-"))
    try:
        # Both sides warmed on one batch: the capture's first call in a process loads the
        # statistics kernel and the store's codecs (seconds), as the forward's first call
        # sets up its kernels.
        tt.capture(model, x[:batch_size], store=str(folder / "warm.zarr"), progress=False)
        graph = TorchBackend().graph(model, x[:batch_size])

        def capture_all(index: int) -> float:
            started = time.perf_counter()
            # What capture does with its first batch (needs_example_inputs), timed with it.
            TorchBackend().graph(model, x[:batch_size])
            run = tt.capture(
                model,
                x,
                store=str(folder / f"all{index}.zarr"),
                layers="*",
                batch_size=batch_size,
                progress=False,
            )
            assert run.samples == samples
            return time.perf_counter() - started

        # Interleaved (forward, capture) pairs, the order flipped every pair: the figure is
        # the median pair ratio, so a load that changes during the run weighs on both.
        pairs = []
        for index in range(repeats):
            if index % 2 == 0:
                forward = _forward_s(model, x, batch_size, gradients=False)
                pairs.append((forward, capture_all(index)))
            else:
                captured = capture_all(index)
                pairs.append((_forward_s(model, x, batch_size, gradients=False), captured))
        ratios = [c / f for f, c in pairs]
        forward_s = statistics.median(f for f, _ in pairs)
        capture_s = statistics.median(c for _, c in pairs)
        session_s = _session_s(model, x, batch_size)
        stats_s = _stats_s(model, x, batch_size)

        backward_s = _forward_s(model, x, batch_size, gradients=True)
        blocks = ["layer1.*", "layer2.*"]
        started = time.perf_counter()
        TorchBackend().graph(model, x[:batch_size])
        with_gradients = tt.capture(
            model,
            x,
            store=str(folder / "grad.zarr"),
            layers=blocks,
            gradients=True,
            batch_size=batch_size,
            progress=False,
        )
        gradient_capture_s = time.perf_counter() - started
        stored = sum(int(np.prod(node.shape)) * 4 * samples for node in graph.nodes)
        raw_write_s = _raw_write_s(folder, stored)
        result = {
            "samples": samples,
            "batch_size": batch_size,
            "layers": len(graph.nodes),
            "gradient_layers": len(with_gradients.layers),
            "activation_mb": stored / 1e6,
            "on_disk_mb": _folder_bytes(folder / "all0.zarr") / 1e6,
            "forward_s": forward_s,
            "capture_s": capture_s,
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "session_s": session_s,
            "session_ratio": session_s / forward_s,
            "stats_s": stats_s,
            "stats_ratio": stats_s / forward_s,
            "raw_write_s": raw_write_s,
            "raw_write_ratio": raw_write_s / forward_s,
            "forward_backward_s": backward_s,
            "gradient_capture_s": gradient_capture_s,
            "gradient_ratio": gradient_capture_s / backward_s,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if write:
        _write_results(result)
    return result


def _write_results(r: dict[str, Any]) -> None:
    """Replace (or add) the ``## PyTorch`` section of RESULTS.md, leaving the others alone."""
    section = "\n".join(
        [
            "## PyTorch",
            "",
            f"`python -m benchmarks.bench_torch` on {platform.machine()}, {os.cpu_count()} "
            f"CPUs (shared), torch {_torch_version()} with 1 thread, {time.strftime('%Y-%m-%d')}. "
            f"Model: the tests' ResNet-like `TinyResNet` (width 8, 10 classes) on "
            f"{r['samples']} random 3×32×32 images, batch {r['batch_size']}, one run.",
            "",
            "| measure | plain | capture to a local run | ratio | target | |",
            "|---|---|---|---|---|---|",
            f"| every node ({r['layers']} layers, {r['activation_mb']:.0f} MB float32, "
            f"{r['on_disk_mb']:.0f} MB on disk) vs forward (eval, no_grad) "
            f"| {r['forward_s']:.2f} s | {r['capture_s']:.2f} s | **{r['ratio']:.1f}×** "
            f"(pairs: {', '.join(f'{q:.1f}' for q in r['ratios'])}) "
            f"| ≤ {RATIO_TARGET:g} | {'met' if r['ratio'] <= RATIO_TARGET else '**missed**'} |",
            f"| every node, the backend alone (`session.run` into NumPy, nothing stored) "
            f"| {r['forward_s']:.2f} s | {r['session_s']:.2f} s | {r['session_ratio']:.1f}× | | |",
            f"| every node, the engine's statistics alone (one thread, over the backend's "
            f"arrays) | {r['forward_s']:.2f} s | {r['stats_s']:.2f} s | {r['stats_ratio']:.1f}× | | |",
            f"| the disk's floor: the activation bytes written as one raw file, fsync-ed "
            f"| {r['forward_s']:.2f} s | {r['raw_write_s']:.2f} s | {r['raw_write_ratio']:.1f}× | | |",
            f"| block outputs ({r['gradient_layers']} layers) with gradients of the predicted "
            f"class vs forward + autograd.grad | {r['forward_backward_s']:.2f} s "
            f"| {r['gradient_capture_s']:.2f} s | {r['gradient_ratio']:.1f}× | | |",
            "",
            f"The first row is the median of {len(r['ratios'])} interleaved (forward, capture) "
            "pairs, the order flipped every pair (its times are the medians of each side); the "
            "other rows are one run each. "
            "Both sides are warmed on one batch first. The capture time includes tracing the "
            "graph, statistics, compression and writing; the backend, the statistics and the "
            "writes overlap (the engine computes the next batch while the pipeline's threads "
            "reduce and write the last), so the split rows do not add up to the capture. With "
            "a model this small the run store's work dominates — each sample yields far more "
            "activation bytes than its forward pass costs — and the ratio is an upper bound "
            "for models with more compute per byte.",
            "",
        ]
    )
    write_section("## PyTorch", section)


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="(forward, capture) pairs")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    print(main(args.samples, args.batch_size, write=not args.no_write, repeats=args.repeats))
