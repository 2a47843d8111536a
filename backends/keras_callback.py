"""A Keras callback that captures a fixed probe batch while a model trains."""

from __future__ import annotations

import os
from typing import Any

import keras

__all__ = ["CaptureCallback"]


class CaptureCallback(keras.callbacks.Callback):
    """Capture ``probe`` into ``{directory}/epoch_{epoch:03d}.zarr`` every ``every`` epochs.

    Parameters
    ----------
    probe : array, dict or (x, y) tuple
        The same few samples at every capture, so runs compare across epochs
        (``viz.compare``, ``viz.distributions``).
    directory : str or os.PathLike
        Folder that receives one run per captured epoch (an ``s3://`` prefix works too).
    layers : selection
        Which layers to capture (``tensortap.graph(model)`` lists the keys).
    gradients : bool
        Also capture gradients of ``target``.
    target : str, int, array or callable
        The gradient target (see :func:`tensortap.capture`).
    every : int
        Capture after every ``every``-th epoch (and never more often).
    batch_size : int
        Batch size of the capture.
    class_names : sequence of str, optional
        One name per class, stored in every run (see :func:`tensortap.capture`).

    Examples
    --------
    >>> model.fit(x, y, epochs=10, callbacks=[tt.CaptureCallback(x[:64], "runs/train")])
    """

    def __init__(
        self,
        probe: Any,
        directory: str | os.PathLike[str],
        layers: Any = "*",
        gradients: bool = False,
        target: Any = "predicted",
        every: int = 1,
        batch_size: int = 32,
        class_names: Any = None,
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every}")
        self.probe = probe
        self.directory = os.fspath(directory)
        self.layers = layers
        self.gradients = gradients
        self.target = target
        self.every = every
        self.batch_size = batch_size
        self.class_names = class_names
        #: Paths of the runs written so far, in epoch order.
        self.runs: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        from tensortap.core.engine import capture  # the engine imports no framework itself

        store = f"{self.directory.rstrip('/')}/epoch_{epoch:03d}.zarr"
        capture(
            self.model,
            self.probe,
            store=store,
            layers=self.layers,
            gradients=self.gradients,
            target=self.target,
            batch_size=self.batch_size,
            overwrite=True,
            progress=False,
            class_names=self.class_names,
        )
        self.runs.append(store)
