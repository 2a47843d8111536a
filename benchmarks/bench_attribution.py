"""Benchmark of issue 17: offline CAMs from a stored run, and Integrated Gradients.

1. *Offline CAM per sample*: MobileNetV2 (``keras.applications``, ``weights=None``, 224x224)
   is captured once with gradients of its ``Conv_1`` layer (7x7x1280) into a local run;
   then each CAM method runs ``tt.cam(run, "Conv_1", method=m)`` over every stored sample
   (read from Zarr, computed, normalised, resized to 224x224).  The figure is the wall
   time of that call divided by the number of samples, the best of ``--repeats``.
2. *Integrated Gradients, 32 steps*: one torch CNN (plain torch, MobileNetV2-like
   inverted-residual blocks at toy width, 3x64x64) and one batch, attributed with
   ``tt.attribute(..., "integrated_gradients")`` and with Captum's ``IntegratedGradients``
   (same steps, same Gauss-Legendre rule, same internal batch of path points); both
   results are checked equal before the times are reported.

Run: ``python -m benchmarks.bench_attribution [--samples N] [--ig-batch B]``; it writes
its own ``## Attribution`` section in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_section

#: Issue 17: the slowest offline CAM method, end to end, per sample.
CAM_TARGET_MS = 5.0


def _best(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def offline_cams(samples: int, repeats: int, folder: Path) -> dict[str, float]:
    """Milliseconds per sample of every CAM method on MobileNetV2's Conv_1."""
    import keras

    import tensortap as tt
    from tensortap.core.cam import CAM_METHODS

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    x = np.random.default_rng(0).random((samples, 224, 224, 3)).astype("float32")
    run = tt.capture(
        model, x, store=folder / "mobilenet.zarr", layers=["Conv_1"], gradients=True,
        batch_size=16, progress=False,
    )  # fmt: skip
    run = tt.open_run(run.path)
    tt.cam(run, "Conv_1")  # warm-up: first reads of the arrays, thread pools, page cache
    out = {}
    for method in CAM_METHODS:
        seconds = _best(lambda m=method: tt.cam(run, "Conv_1", method=m), repeats)
        out[method] = 1000.0 * seconds / samples
    seconds = _best(lambda: tt.cam(run, "Conv_1", method="gradcam", eigen_smooth=True), repeats)
    out["gradcam + eigen_smooth"] = 1000.0 * seconds / samples
    return out


def _torch_model() -> Any:
    import torch
    from torch import nn

    class InvertedResidual(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.block = nn.Sequential(
                nn.Conv2d(channels, 4 * channels, 1), nn.ReLU6(),
                nn.Conv2d(4 * channels, 4 * channels, 3, padding=1, groups=4 * channels),
                nn.ReLU6(), nn.Conv2d(4 * channels, channels, 1),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.block(x)

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU6(),
        InvertedResidual(16), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU6(),
        InvertedResidual(32), InvertedResidual(32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


def integrated_gradients(batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Seconds for one batch: tensortap and Captum, same model, batch, steps and rule."""
    import torch
    from captum.attr import IntegratedGradients

    import tensortap as tt

    model = _torch_model()
    x = np.random.default_rng(1).random((batch, 3, 64, 64)).astype("float32")
    with torch.no_grad():
        target = model(torch.from_numpy(x)).argmax(1)
    rows = batch * steps  # one compiled step over every path point, for both
    ours = tt.attribute(model, x, "integrated_gradients", steps=steps, batch_size=rows, store=False)
    theirs = IntegratedGradients(model).attribute(
        torch.from_numpy(x), target=target, n_steps=steps, internal_batch_size=rows
    )
    np.testing.assert_allclose(ours.values, theirs.detach().numpy(), rtol=1e-3, atol=1e-5)
    return {
        "tensortap": _best(
            lambda: tt.attribute(
                model, x, "integrated_gradients", steps=steps, batch_size=rows, store=False
            ),
            repeats,
        ),
        "captum": _best(
            lambda: IntegratedGradients(model).attribute(
                torch.from_numpy(x), target=target, n_steps=steps, internal_batch_size=rows
            ),
            repeats,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="MobileNetV2 samples in the run")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--ig-batch", type=int, default=8, help="images attributed with IG")
    parser.add_argument("--steps", type=int, default=32, help="IG path points")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a shared machine: single-threaded ratios are steadier
    folder = Path(tempfile.mkdtemp(prefix="bench_attribution_"))
    try:
        cams = offline_cams(args.samples, args.repeats, folder)
        ig = integrated_gradients(args.ig_batch, args.steps, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = "\n".join(f"| {m} | {ms:.2f} |" for m, ms in cams.items())
    slowest = max(cams, key=cams.__getitem__)
    verdict = "met" if cams[slowest] <= CAM_TARGET_MS else "**missed**"
    command = (
        f"python -m benchmarks.bench_attribution --samples {args.samples} "
        f"--repeats {args.repeats} --ig-batch {args.ig_batch} --steps {args.steps}"
    )
    section = f"""## Attribution

Issue 17. `{command}` on {platform.machine()}, {os.cpu_count()} CPUs
({platform.python_version()}).

Offline CAM from a stored run, MobileNetV2 `Conv_1` (7x7x1280, gradients stored), {args.samples}
samples, `tt.cam(run, "Conv_1", method=m)` end to end (read, compute, normalise, resize to
224x224), best of {args.repeats}; target ≤ {CAM_TARGET_MS:g} ms per sample:

| method | ms per sample |
|---|---|
{rows}

| measure | value | target | |
|---|---|---|---|
| slowest offline CAM ({slowest}), ms per sample | **{cams[slowest]:.2f} ms** | ≤ {CAM_TARGET_MS:g} ms | {verdict} |

Integrated Gradients, {args.steps} steps (Gauss-Legendre), one batch of {args.ig_batch}
3x64x64 images through the same plain-torch MobileNetV2-like CNN, all path points in one
batch, results checked equal (rtol 1e-3), torch on 1 thread, best of {args.repeats}:

| implementation | seconds per batch |
|---|---|
| tensortap `tt.attribute` | {ig["tensortap"]:.3f} |
| Captum `IntegratedGradients` | {ig["captum"]:.3f} |
"""
    write_section("## Attribution", section)
    print(section)


if __name__ == "__main__":
    main()
