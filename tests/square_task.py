"""The localisation toy task of the CAM and explanation tests: one bright square in noise.

A small CNN learns "is there a square"; a method that localises puts its peak on the
square, whose box each image records (the pointing game's independent fact).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE, SQUARE = 32, 6


def squares(n: int, rng: np.random.Generator, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; where ``present``, one bright square at a random place. Returns x, boxes."""
    x = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE, 1)).astype("float32")
    boxes = np.zeros((n, 2), dtype=int)
    for i in np.flatnonzero(present):
        top, left = rng.integers(0, SIZE - SQUARE + 1, size=2)
        x[i, top : top + SQUARE, left : left + SQUARE] = 1.0
        boxes[i] = top, left
    return x, boxes


def trained_keras_cnn(seed: int, **compile_options: Any) -> tuple[Any, np.random.Generator]:
    """The Keras CNN trained 6 epochs on 1,200 images (about half with a square).

    Returns the model and the generator, which goes on to draw the held-out images.
    """
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    present = rng.random(1200) < 0.5
    x, _ = squares(len(present), rng, present)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, name="logits"),  # linear: Grad-CAM of a logit
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_options,
    )
    model.fit(x, present.astype("int64"), epochs=6, batch_size=32, verbose=0)
    return model, rng
