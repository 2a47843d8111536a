"""``tensortap demo``: the main job on the embedded default data.

Trains a small CNN on scikit-learn's bundled 8×8 digits for a few seconds, prints its
capture graph, captures every layer with gradients into a run on disk, prints a
per-layer summary read back from the run (shape, mean, fraction of zeros, gradient
norm), exports a feature-map grid and a Grad-CAM overlay next to the run, writes one
self-contained HTML report, and serves the app on 127.0.0.1 (``DEMO_SERVE=0`` skips it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import numpy as np

from tensortap.cli._tensorflow import import_tensorflow_quietly

__all__ = ["DIGIT_NAMES", "demo", "digits_model", "load_digits_images", "run_demo"]

#: The digits' class names, stored in the run and shown wherever a label or prediction is.
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 images ``(n, 8, 8, 1)`` in [0, 1] and int labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return x, digits.target.astype("int64")


def digits_model(seed: int = 0):  # noqa: ANN201 (keras is imported lazily)
    """A small CNN for 8×8 digits ending in a softmax, as users write them."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="digit"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(10, activation="softmax", name="scores"),
        ],
        name="digits_cnn",
    )


def run_demo(
    out: str | os.PathLike[str] = "runs/demo.zarr",
    epochs: int = 10,
    *,
    serve: bool = False,
    port: int = 5006,
) -> Path:
    """Train, capture, summarise, draw and report; then serve the app when ``serve`` is set.

    Returns the run's path (after the server stops, when it was started).
    """
    import tensortap as tt

    x, y = load_digits_images()
    split = int(0.8 * len(x))
    model = digits_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x[:split], y[:split], epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x[split:], y[split:], verbose=0)
    print(
        f"trained {model.name} in {time.perf_counter() - start:.1f} s: "
        f"held-out accuracy {accuracy:.1%}\n"
    )
    print(tt.graph(model), "\n")

    run = tt.capture(
        model,
        x[split:],
        labels=y[split:],
        store=out,
        layers="*",
        gradients=True,
        # Both targets' gradients: a misclassified digit is explained for either offline.
        target=["predicted", "label"],
        class_names=DIGIT_NAMES,
        batch_size=64,
        overwrite=True,
    )
    print(f"\ncaptured {run.samples} samples into {out} ({run.attrs.get('score', 'scores')})\n")
    print(f"{'layer':<10} {'shape':<16} {'mean':>9} {'zeros':>7} {'|grad|':>10}")
    for key in run.layers:
        stats = run.stats(key)
        count = stats["count"].values
        mean = float((stats["mean"].values * count).sum() / max(count.sum(), 1))
        zeros = float((stats["zero_fraction"].values * count).sum() / max(count.sum(), 1))
        shape = "×".join(str(s) for s in run.activation(key).shape[1:])
        grad = run.gradient(key) if run.has_gradient(key) else None
        norm = f"{float(np.linalg.norm(grad.values)):.3e}" if grad is not None else "-"
        print(f"{key:<10} {shape:<16} {mean:>9.4f} {zeros:>7.1%} {norm:>10}")

    try:  # pictures need the viz extra; the capture above does not
        from tensortap import viz
        from tensortap.viz.report import report
    except ImportError:
        return Path(out)
    folder = Path(out).parent
    pictures = [folder / "demo_feature_maps.png", folder / "demo_gradcam.png"]
    viz.save(viz.feature_maps(run, "conv2", sample=0), pictures[0])
    viz.save(viz.cam_figure(run, "conv2", sample=0, method="gradcam"), pictures[1])
    page = report(run, folder / "demo_report.html", title="tensortap demo: digits CNN")
    print(f"\npictures: {pictures[0]}, {pictures[1]}")
    print(f"report:   {page} (self-contained: opens offline)")
    print(f"look further: tensortap info {out}   |   tensortap serve {folder}")
    if serve:
        viz.serve(folder, address="127.0.0.1", port=port)
    return Path(out)


@click.command()
@click.option("--port", default=5006, show_default=True, type=click.IntRange(0, 65535))
def demo(port: int) -> None:
    """Train a small CNN on scikit-learn's digits, capture every layer, draw and report it,
    then serve the app on 127.0.0.1 (set DEMO_SERVE=0 to skip serving)."""
    import_tensorflow_quietly()
    run_demo(serve=os.environ.get("DEMO_SERVE", "1") != "0", port=port)
