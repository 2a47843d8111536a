"""Views benchmark: Grad-CAM against tf-keras-vis, and views on a run of more than 2 GB.

``python -m benchmarks.bench_views`` (or ``python -m benchmarks views``) measures, in one run:

1. Grad-CAM on MobileNetV2 (``weights=None``, 224×224, batch 8): tensortap's capture of the
   last convolution (``Conv_1``) with gradients into an in-memory run, then ``tt.cam``,
   against tf-keras-vis ``Gradcam`` on the same batch, layer and class (the predicted one).
   Both are timed warm (after one call), interleaved (each repeat calls every measure in
   turn, so a change of load on a shared machine hits them alike), median of ``repeats``;
   wall time decides, CPU time of all the process's threads is recorded beside it.  Target:
   ratio ≤ 0.10 (issue 12; ≤ 0.25 before).  For reference, the compiled step alone, and the
   model's own compiled forward pass on the same batch (the floor any Grad-CAM stands on).
2. One feature-map element (reading one sample of one layer and building the
   ``hv.Image`` of one channel) from a run of at least 2 GB, median over random samples.
   Target: ≤ 50 ms.
3. The whole-layer distribution element (``viz.distribution``) on that run, from the stored
   statistics.  Target: ≤ 50 ms.

Writes its own ``## Views`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_section

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SECTION = "## Views"


def _interleaved(functions: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median wall (``name``) and CPU (``name_cpu``) seconds, one call of each in turn."""
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    medians = {name: statistics.median(times) for name, times in wall.items()}
    medians |= {f"{name}_cpu": statistics.median(times) for name, times in cpu.items()}
    return medians


def _median_time(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_gradcam(repeats: int = 7, batch: int = 8) -> dict[str, Any]:
    """Seconds per Grad-CAM batch: tensortap (capture + cam) and tf-keras-vis."""
    import keras
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    import tensortap as tt

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    # Linear scores for both sides: tf-keras-vis differentiates the model output as is.
    model.layers[-1].activation = keras.activations.linear
    x = np.random.default_rng(0).random((batch, 224, 224, 3)).astype("float32")
    key = next(k for k in tt.graph(model).keys if k.endswith("Conv_1"))
    classes = np.asarray(model(x)).argmax(axis=1)

    def ours() -> np.ndarray:
        run = tt.capture(
            model,
            x,
            store=None,
            layers=[key],
            gradients=True,
            target=classes,
            batch_size=batch,
            progress=False,
        )
        return tt.cam(run, key, method="gradcam").values

    gradcam = Gradcam(model, clone=False)

    def theirs() -> np.ndarray:
        return np.asarray(gradcam(CategoricalScore(list(classes)), x, penultimate_layer="Conv_1"))

    # For the record: the backend's compiled step alone, opened once and reused, plus the
    # CAM math on its arrays — what a capture costs once tracing is cached across calls.
    from tensortap.core.cam import cam_maps
    from tensortap.core.registry import get_backend
    from tensortap.core.targets import resolve_target

    backend = get_backend("tensorflow")
    nodes = backend.graph(model).select([key])
    session = backend.session(model, nodes, gradients=True, target=resolve_target(classes))
    input_name = backend.graph(model).inputs[0].name

    def step() -> np.ndarray:
        result = session.run({input_name: x}, classes=classes)
        return cam_maps(result.activations[key], result.gradients[key], "gradcam")

    # The floor of any Grad-CAM: the model's own compiled forward pass on the same batch
    # (a Grad-CAM needs it and a backward pass to the layer on top).
    import tensorflow as tf

    forward_fn = tf.function(lambda batch_x: model(batch_x, training=False), autograph=False)
    x_tensor = tf.constant(x)

    def forward() -> np.ndarray:
        return np.asarray(forward_fn(x_tensor))

    with session:
        a, b, _, _ = ours(), theirs(), step(), forward()  # warm all (tracing, building)
        assert a.shape == b.shape == (batch, 224, 224)
        load = os.getloadavg()[0]
        t = _interleaved(
            {"ours": ours, "theirs": theirs, "step": step, "forward": forward}, repeats
        )
    return {
        "tensortap_s": t["ours"],
        "tf_keras_vis_s": t["theirs"],
        "ratio": t["ours"] / t["theirs"],
        "step_s": t["step"],
        "forward_s": t["forward"],
        "tensortap_cpu_s": t["ours_cpu"],
        "tf_keras_vis_cpu_s": t["theirs_cpu"],
        "forward_cpu_s": t["forward_cpu"],
        "load": load,
        "layer": key,
    }


def _big_run(path: Path, gigabytes: float) -> Any:
    """A run of at least ``gigabytes`` of activations: one wide 64×64×64 convolution."""
    import keras

    import tensortap as tt

    if (path / "zarr.json").exists():
        run = tt.open_run(path)
        if run.status == "complete" and run.logical_bytes() >= gigabytes * 1e9:
            return run
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(64, 3, padding="same", name="wide"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
        ]
    )
    per_sample = 64 * 64 * 64 * 4
    n = int(np.ceil(gigabytes * 1e9 / per_sample / 8) * 8)
    x = np.random.default_rng(0).random((n, 64, 64, 3)).astype("float32")
    return tt.capture(
        model, x, store=path, layers=["wide"], batch_size=8, overwrite=True, progress=False
    )


def bench_big_run(path: Path, gigabytes: float = 2.0, repeats: int = 21) -> dict[str, Any]:
    """Median seconds of one feature-map element and the distribution element on a big run."""
    import tensortap as tt
    from tensortap import viz

    _big_run(path, gigabytes)
    run = tt.open_run(path)
    rng = np.random.default_rng(1)
    dmap = viz.feature_map(run)
    viz.distribution(run, "wide")  # import and first-render costs are not the point

    def element() -> Any:
        return dmap["wide", int(rng.integers(run.samples)), int(rng.integers(64))]

    def grid() -> Any:
        return viz.feature_maps(run, "wide", sample=int(rng.integers(run.samples)))

    cold = tt.open_run(path)
    start = time.perf_counter()
    cold.stats("wide")
    stats_cold_s = time.perf_counter() - start
    cold._stats_cache.clear()
    start = time.perf_counter()
    cold._reduce_stats_partials("wide")
    stats_partials_s = time.perf_counter() - start
    return {
        "stats_cold_s": stats_cold_s,
        "stats_partials_s": stats_partials_s,
        "blocks": int(np.count_nonzero(cold._counts)),
        "samples": run.samples,
        "logical_gb": run.logical_bytes() / 1e9,
        "stored_gb": run.stored_bytes() / 1e9,
        "element_s": _median_time(element, repeats),
        "grid_s": _median_time(grid, 5),
        "distribution_s": _median_time(lambda: viz.distribution(run, "wide"), repeats),
    }


def main(big_run: str | None = None, gigabytes: float = 2.0, write: bool = True) -> dict[str, Any]:
    """Run every measure; update the ``## Views`` section of RESULTS.md when ``write``."""
    import tensorflow as tf

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "tf": tf.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    results.update(bench_gradcam())
    with tempfile.TemporaryDirectory(prefix="tt-bench-views-") as scratch:
        path = Path(big_run) if big_run else Path(scratch) / "big.zarr"
        results.update(bench_big_run(path, gigabytes))
    if write:
        _write(results)
    return results


def _write(r: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        SECTION,
        "",
        f"`python -m benchmarks.bench_views` on {r['machine']}, TensorFlow {r['tf']}, {r['date']}; "
        "all rows from one run, times are medians of warm calls "
        f"(1-minute load average {r['load']:.1f} when Grad-CAM's timing began).",
        "",
        "| measure | value | target | |",
        "|---|---|---|---|",
        f"| Grad-CAM, MobileNetV2 224², batch 8, layer `{r['layer']}`: tensortap capture + "
        f"`tt.cam` / tf-keras-vis `Gradcam` | {r['tensortap_s']:.3f} s / {r['tf_keras_vis_s']:.3f} s"
        f" = **{r['ratio']:.2f}** | ≤ 0.10 (issue 12; ≤ 0.25 before) | "
        f"{verdict(r['ratio'] <= 0.10)} (≤ 0.25: {verdict(r['ratio'] <= 0.25)}) |",
        f"| (for reference) the backend's compiled step reused across batches + CAM math / "
        f"tf-keras-vis | {r['step_s']:.3f} s / {r['tf_keras_vis_s']:.3f} s = "
        f"{r['step_s'] / r['tf_keras_vis_s']:.2f} | | |",
        f"| (for reference) the model's own forward pass alone (`tf.function` of "
        f"`model(x, training=False)`, batch 8) / tf-keras-vis | {r['forward_s']:.3f} s / "
        f"{r['tf_keras_vis_s']:.3f} s = {r['forward_s'] / r['tf_keras_vis_s']:.2f} | | |",
        f"| (for reference) CPU time, all threads: tensortap / tf-keras-vis; forward pass alone "
        f"/ tf-keras-vis | {r['tensortap_cpu_s']:.3f} s / {r['tf_keras_vis_cpu_s']:.3f} s = "
        f"{r['tensortap_cpu_s'] / r['tf_keras_vis_cpu_s']:.2f}; {r['forward_cpu_s']:.3f} s / "
        f"{r['tf_keras_vis_cpu_s']:.3f} s = {r['forward_cpu_s'] / r['tf_keras_vis_cpu_s']:.2f} "
        "| | |",
        f"| one feature-map element (read one sample + `hv.Image`), run of "
        f"{r['logical_gb']:.2f} GB | **{r['element_s'] * 1000:.1f} ms** | ≤ 50 ms | "
        f"{verdict(r['element_s'] <= 0.05)} |",
        f"| whole-layer distribution element (stored histogram) on that run | "
        f"**{r['distribution_s'] * 1000:.1f} ms** | ≤ 50 ms | {verdict(r['distribution_s'] <= 0.05)} |",
        f"| (for reference) 64-channel feature-map grid of one sample | {r['grid_s'] * 1000:.0f} ms | | |",
        "",
        f"The big run: {r['samples']:,} samples of one 64×64×64 float32 convolution, "
        f"{r['logical_gb']:.2f} GB of activations, {r['stored_gb']:.2f} GB on disk, chunks of 8 samples. "
        f"`Run.stats()` on a freshly opened run (first call, no cache): "
        f"{r['stats_cold_s'] * 1000:.1f} ms; reducing the {r['blocks']} per-block partials "
        f"(a run still capturing): {r['stats_partials_s'] * 1000:.1f} ms.",
        "",
    ]
    lines += [
        "Grad-CAM: both sides are warmed once and timed as the median of several calls, "
        "interleaved (each round calls every measure once); "
        "the TensorFlow backend reuses its traced step across captures, so the rest is "
        "the in-memory run (writing, statistics, reading back) and the CAM math; the "
        "reference row is the compiled step alone.",
        "",
    ]
    floor = r["forward_s"] / r["tf_keras_vis_s"]
    if r["ratio"] > 0.10:
        lines += [
            f"Issue 12's ≤ 0.10 against this machine's floor: the model's forward pass alone "
            f"is {floor:.2f} of tf-keras-vis ({r['forward_s'] * 1000:.0f} ms), "
            + (
                "already above 0.10, so no capture with its backward pass can meet it here."
                if floor > 0.10
                else f"which leaves {(0.10 - floor) * r['tf_keras_vis_s'] * 1000:.0f} ms for "
                "the backward pass to the layer and everything the capture adds."
            ),
            "",
        ]
    if r["ratio"] > 0.25:
        budget = 0.25 * r["tf_keras_vis_s"] - r["step_s"]
        lines += [
            f"Why Grad-CAM misses: the compiled step alone (forward and backward through "
            f"MobileNetV2 for {8} images) is already {r['step_s'] / r['tf_keras_vis_s']:.2f} of "
            f"tf-keras-vis, which leaves {budget * 1000:.0f} ms for everything a capture adds "
            f"— creating the in-memory run, writing and committing the block with its "
            f"statistics, reading it back and the CAM — and those take "
            f"{(r['tensortap_s'] - r['step_s']) * 1000:.0f} ms here.",
            "",
        ]
    if r["distribution_s"] > 0.05:
        lines += [
            "Distribution: `Run.stats()` reads the finished run's stored summary (one small "
            "chunk) and caches the reduction per commit state; the rest is the element.",
            "",
        ]
    section = "\n".join(lines) + "\n"
    write_section(SECTION, section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-run", default=None, help="reuse (or create) the big run here")
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    print(main(args.big_run, args.gigabytes, write=not args.no_write))
