"""A Keras callback that captures a fixed probe batch into one training run (issue 14).

>>> cb = tt.CaptureCallback((x[:64], y[:64]), "runs/fit.zarr", every_n_batches=50)
>>> model.fit(x, y, epochs=10, callbacks=[cb])
>>> run = tt.open_run("runs/fit.zarr")  # a TrainingRun: run.steps, run.stats(key, step=...)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tensortap.core.errors import DataError
from tensortap.core.training import Policy, StepRecorder, check_every, resolve_policy

__all__ = ["CaptureCallback"]


class CaptureCallback(keras.callbacks.Callback):
    """Capture ``probe`` at training steps into one training run at ``store``.

    Parameters
    ----------
    probe : array, dict or (x, y) tuple
        The same few samples at every captured step, so steps compare.
    store : str, os.PathLike or zarr Store
        Where the training run goes (a folder, an ``s3://`` URL).  A second ``fit`` with
        the same model appends its steps; a store holding another model's run is refused.
    every_n_batches : int, optional
        Capture at global steps 0, N, 2N, ... (``None``: no batch schedule).
    every_n_epochs : int, optional
        Capture at the last step of every N-th epoch (``None``: no epoch schedule).
    policy : Policy or {"full", "stats", "epochs"}
        What a captured step stores (:class:`tensortap.Policy`): ``"full"`` tensors and
        statistics, ``"stats"`` statistics only, ``"epochs"`` tensors at epoch captures
        and statistics at batch captures.  The non-finite trigger is on by default.
    labels : array, optional
        The probe's labels (or give ``(x, y)`` as the probe); gradients then default to
        the label's score.
    class_names : sequence of str, optional
        Names of the classes, stored in the run.
    layers : selection
        Watched layers (``tensortap.graph(model)`` lists the keys).
    target : str, int, array or callable, optional
        Gradient target (see :func:`tensortap.capture`).
    overwrite : bool
        Replace what ``store`` holds (a tensortap run) instead of appending or refusing.
    storage_options : dict, optional
        fsspec options for URLs.

    Attributes
    ----------
    recorder : tensortap.core.training.StepRecorder or None
        The open recorder while ``fit`` runs.
    """

    def __init__(
        self,
        probe: Any,
        store: Any,
        every_n_batches: int | None = None,
        every_n_epochs: int | None = 1,
        policy: Policy | str | None = "full",
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        *,
        layers: Any = "*",
        target: Any = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.every_n_batches = check_every("every_n_batches", every_n_batches)
        self.every_n_epochs = check_every("every_n_epochs", every_n_epochs)
        if self.every_n_batches is None and self.every_n_epochs is None:
            raise DataError(
                "every_n_batches=None and every_n_epochs=None capture nothing; give at "
                "least one schedule (e.g. every_n_epochs=1)"
            )
        self.policy = resolve_policy(policy)
        self.probe = probe
        self.store = store
        self.labels = labels
        self.class_names = class_names
        self.layers = layers
        self.target = target
        self.overwrite = overwrite
        self.storage_options = storage_options
        self.recorder: StepRecorder | None = None
        self._step = 0
        self._epoch = 0
        self._recorded: int | None = None  # the last step recorded, and whether with tensors
        self._recorded_tensors = False

    # ------------------------------------------------------------------ lifecycle
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.close("failed")  # an earlier fit that was interrupted
        params = [v.path for v in self.model.weights] if self.policy.weights else []
        self.recorder = StepRecorder(
            self.model,
            self.probe,
            self.store,
            layers=self.layers,
            policy=self.policy,
            target=self.target,
            labels=self.labels,
            class_names=self.class_names,
            overwrite=self.overwrite,
            storage_options=self.storage_options,
            parameters=params,
        )
        self.overwrite = False  # a later fit appends to this run
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        self._step = int(np.asarray(iterations)) if iterations is not None else 0
        self._recorded = None

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close("complete")

    def close(self, status: str = "complete") -> None:
        """Commit the queued steps and mark the run ``status`` (``fit`` calls it)."""
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close(status)

    # ------------------------------------------------------------------ schedule
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def _record(self, step: int, batch: int, tensors: bool, loss: float | None) -> None:
        assert self.recorder is not None
        weights = grads = None
        if self.policy.weights:
            weights = [np.asarray(v) for v in self.model.weights]
            grads = self._weight_gradients()
        self.recorder.record(
            step,
            self._epoch,
            batch,
            tensors=tensors,
            loss=loss,
            weights=weights,
            weight_gradients=grads,
        )
        self._recorded, self._recorded_tensors = step, tensors

    def _weight_gradients(self) -> list[np.ndarray] | None:
        """Gradients of the compiled loss on the labelled probe w.r.t. every weight (NaN
        for weights without one), with an explicit ``GradientTape``: ``fit`` keeps no
        gradients a callback could read.  TensorFlow backend, probes with labels only."""
        recorder = self.recorder
        if recorder is None or recorder.probe_labels is None:
            return None
        if keras.backend.backend() != "tensorflow" or self.model.loss is None:
            return None
        import tensorflow as tf

        try:
            loss_fn = keras.losses.get(self.model.loss)
        except (ValueError, TypeError):
            return None  # a loss dict or list per output: not summarised
        inputs = [recorder.probe_inputs[spec.name] for spec in recorder.graph.inputs]
        with tf.GradientTape() as tape:
            prediction = self.model(inputs[0] if len(inputs) == 1 else inputs, training=False)
            value = loss_fn(recorder.probe_labels, prediction)
        found = tape.gradient(value, [v.value for v in self.model.weights])
        return [
            np.full(v.shape, np.nan) if g is None else np.asarray(g)
            for v, g in zip(self.model.weights, found, strict=True)
        ]

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.recorder is None:
            return
        step = self._step
        self._step += 1
        loss = (logs or {}).get("loss")
        loss = float(loss) if isinstance(loss, (int, float, np.floating)) else None
        steps_per_epoch = self.params.get("steps") if self.params else None
        last = steps_per_epoch is not None and batch == steps_per_epoch - 1
        by_epoch = bool(
            self.every_n_epochs and last and (self._epoch + 1) % self.every_n_epochs == 0
        )
        by_batch = bool(self.every_n_batches and step % self.every_n_batches == 0)
        fires = (
            self.policy.nonfinite
            and self.recorder.trigger is None
            and loss is not None
            and not math.isfinite(loss)
        )
        if by_epoch or by_batch or fires:
            tensors = self.policy.tensors == "always" or (
                by_epoch and self.policy.tensors == "epochs"
            )
            self._record(step, batch, tensors, loss)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Epochs of unknown length: the epoch schedule captures here, at the last step.
        steps_per_epoch = self.params.get("steps") if self.params else None
        if self.recorder is None or steps_per_epoch is not None or not self.every_n_epochs:
            return
        if (epoch + 1) % self.every_n_epochs or self._recorded == self._step - 1:
            return
        self._record(self._step - 1, -1, self.policy.tensors != "never", None)
