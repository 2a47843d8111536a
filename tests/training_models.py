"""Models and data of the training-run tests and benchmark (issue 14): a small CNN on
scikit-learn's digits, in Keras and in plain PyTorch, and a layer that turns NaN."""

from __future__ import annotations

from typing import Any

import numpy as np


def digits(n_probe: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, probe_x, probe_y)``: digits as ``(n, 8, 8, 1)`` float32 in [0, 1]; the
    probe is the last ``n_probe`` samples (not trained on)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    return x[:-n_probe], y[:-n_probe], x[-n_probe:], y[-n_probe:]


def keras_cnn(seed: int = 0, extra: Any = None) -> Any:
    """A small Conv-ReLU-Pool-Dense classifier of 8×8 digits (``extra``: a layer inserted
    after the first convolution)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers: list[Any] = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
    ]
    if extra is not None:
        layers.append(extra)
    layers += [
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(10, name="logits"),
    ]
    model = keras.Sequential(layers, name="digits_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def keras_nan_layer(after_step: int) -> Any:
    """A layer that outputs NaN from training step ``after_step`` (0-based) on.

    It counts its training calls; from the ``after_step + 1``-th call on (and at inference
    after it) it outputs NaN everywhere through ``where``, whose gradient to its input
    is exactly zero there, so the layers before it stay finite and the first layer in
    model order that shows NaN is this one.
    """
    import keras
    from keras import ops

    class TurnsNaN(keras.layers.Layer):
        def build(self, input_shape: Any) -> None:
            self.calls = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="calls", dtype="float32"
            )

        def call(self, x: Any, training: bool | None = None) -> Any:
            if training:
                self.calls.assign(self.calls + 1.0)
            broken = ops.greater(self.calls, float(after_step))
            return ops.where(broken, ops.full_like(x, float("nan")), x)

    return TurnsNaN(name="turns_nan")


def torch_cnn(seed: int = 0) -> Any:
    """The same CNN in PyTorch, channels first: input ``(n, 1, 8, 8)``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def torch_training_run(store: Any, steps: int = 8, every: int = 2, policy: Any = "full") -> Any:
    """A short PyTorch training run on digits (probe: 32 samples), opened."""
    import torch

    import tensortap as tt

    x, y, px, py = digits(n_probe=32)
    x = x.transpose(0, 3, 1, 2).copy()
    px = px.transpose(0, 3, 1, 2).copy()
    model = torch_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tt.Monitor(model, (px, py), store, every=every, policy=policy) as monitor:
        for step in range(steps):
            xb = torch.from_numpy(x[step * 32 : (step + 1) * 32])
            yb = torch.from_numpy(y[step * 32 : (step + 1) * 32])
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            monitor.step(loss)
    return tt.open_run(store)
