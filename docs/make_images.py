"""Make the example pictures of docs/views.md from a real run of a trained model.

``python docs/make_images.py`` trains a small CNN on scikit-learn's 8×8 digits (upscaled to
16×16), captures a run of 64 test images with gradients, and writes under docs/images/:
feature maps, distributions (per layer, per channel), dead units, a CAM grid, a CAM of a
misclassified digit for its prediction and for its label (both targets were captured),
and the top samples of a channel.
Takes about a minute on a laptop CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

IMAGES = Path(__file__).with_name("images")
#: Class names stored in the run and shown in the captions.
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as 16×16×1 floats in [0, 1] (nearest upscaling keeps the strokes crisp)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).repeat(2, axis=1).repeat(2, axis=2)[..., None].astype("float32")
    return train_test_split(x, data.target.astype("int64"), test_size=0.2, random_state=0)


def train(x: np.ndarray, y: np.ndarray):  # noqa: ANN201 - a keras.Model
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    return model


def main(out: Path = IMAGES) -> list[Path]:
    import tensortap as tt
    from tensortap import viz

    x_train, x_test, y_train, y_test = digits()
    model = train(x_train, y_train)
    accuracy = float((np.asarray(model(x_test)).argmax(axis=1) == y_test).mean())
    print(f"test accuracy {accuracy:.1%}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run = tt.capture(
            model,
            (x_test[:64], y_test[:64]),
            store=Path(scratch) / "digits.zarr",
            gradients=True,
            # Both targets' gradients: any of them can be explained offline.
            target=["predicted", "label"],
            class_names=NAMES,
            batch_size=32,
            progress=False,
        )
        wrong = np.flatnonzero(run.predictions.values != run.labels.values)
        # A misclassified sample if there is one: its CAM of the label and of the prediction.
        shown = int(wrong[0]) if wrong.size else 0
        views = {
            "feature_maps.png": viz.feature_maps(run, "conv1", sample=0, order="energy"),
            "distribution.png": viz.distribution(run, "conv2"),
            "unit_distributions.png": viz.unit_distributions(run, "conv2"),
            "distributions.png": viz.distributions(run),
            "dead_units.png": viz.dead_units(run),
            "cam_grid.png": viz.cam_grid(run, "conv2", samples=range(8), method="gradcam", cols=4),
            "cam_figure.png": viz.cam_figure(run, "conv2", sample=shown),
            "cam_figure_label.png": viz.cam_figure(
                run, "conv2", sample=shown, class_index=int(run.labels.values[shown])
            ),
            "top_samples.png": viz.top_samples(
                run,
                "conv2",
                channel=int(run.stats("conv2")["sample_max"].mean("sample").argmax()),
                k=8,
            ),
        }
        written = [viz.save(obj, out / name, width=900) for name, obj in views.items()]
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES)
