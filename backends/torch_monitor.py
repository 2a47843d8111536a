"""``tt.Monitor``: one training run from a hand-written PyTorch loop, or any trainer with a
per-step hook (issue 14).

>>> with tt.Monitor(model, (x_probe, y_probe), "runs/fit.zarr", every=50) as monitor:
...     for epoch in range(3):
...         for xb, yb in loader:
...             loss = loss_fn(model(xb), yb)
...             optimizer.zero_grad(); loss.backward(); optimizer.step()
...             monitor.step(loss)
...         monitor.end_epoch()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch

from tensortap.core.errors import DataError
from tensortap.core.training import Policy, StepRecorder, check_every, resolve_policy

__all__ = ["Monitor"]


class Monitor:
    """Capture a probe batch at training steps of a PyTorch model into one training run.

    Call :meth:`step` once after every optimizer step (a trainer's per-step hook works:
    Lightning's ``on_train_batch_end``, a 🤗 ``TrainerCallback.on_step_end``) and
    :meth:`end_epoch` after every epoch; use it as a context manager (or call
    :meth:`open` and :meth:`close`).  The probe runs in eval mode, with no gradient
    left on the model, and every module's training flag restored.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained.
    probe : array, tensor or (x, y) tuple
        The fixed probe batch.
    store : str, os.PathLike or zarr Store
        Where the training run goes.
    every : int, optional
        Capture at global steps 0, N, 2N, ... (``None``: no step schedule).
    every_n_epochs : int, optional
        Capture at the last step of every N-th epoch (at :meth:`end_epoch`).
    policy : Policy or {"full", "stats", "epochs"}
        What a captured step stores (:class:`tensortap.Policy`).
    labels, class_names, layers, target, overwrite, storage_options
        As for :class:`tensortap.CaptureCallback`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        probe: Any,
        store: Any,
        every: int | None = 50,
        every_n_epochs: int | None = None,
        policy: Policy | str | None = "full",
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        *,
        layers: Any = "*",
        target: Any = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.every = check_every("every", every)
        self.every_n_epochs = check_every("every_n_epochs", every_n_epochs)
        if self.every is None and self.every_n_epochs is None:
            raise DataError(
                "every=None and every_n_epochs=None capture nothing; give at least one "
                "schedule (e.g. every=50)"
            )
        self.model = model
        self.policy = resolve_policy(policy)
        self._options = {
            "layers": layers,
            "policy": self.policy,
            "target": target,
            "labels": labels,
            "class_names": class_names,
            "overwrite": overwrite,
            "storage_options": storage_options,
        }
        self.probe = tuple(_numpy(p) for p in probe) if isinstance(probe, tuple) else _numpy(probe)
        self.store = store
        self.recorder: StepRecorder | None = None
        #: The global step the next :meth:`step` call records.
        self.global_step = 0
        self.epoch = 0
        self._batch = 0
        self._recorded: int | None = None
        self._last_trigger: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> Monitor:
        """Open the training run (a store of the same model is appended to)."""
        if self.recorder is None:
            names = [name for name, _ in self.model.named_parameters()]
            self.recorder = StepRecorder(
                self.model, self.probe, self.store, parameters=names, **self._options
            )
            self._options["overwrite"] = False
        return self

    def close(self, status: str = "complete") -> None:
        """Commit the queued steps and mark the run ``status``."""
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            self._last_trigger = recorder.trigger
            recorder.close(status)

    def __enter__(self) -> Monitor:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close("complete" if exc_type is None else "failed")

    # ------------------------------------------------------------------ steps
    def step(self, loss: Any = None) -> None:
        """One optimizer step ended; capture the probe if the schedule (or a non-finite
        ``loss``, with the trigger on) says so.

        Parameters
        ----------
        loss : tensor or float, optional
            The step's training loss; only read (one device sync) when the trigger is on.
        """
        if self.recorder is None:
            self.open()
        assert self.recorder is not None
        step = self.global_step
        loss_value = None
        if loss is not None and self.policy.nonfinite and self.recorder.trigger is None:
            loss_value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        fires = loss_value is not None and not math.isfinite(loss_value)
        if fires or (self.every is not None and step % self.every == 0):
            self._record(step, self.policy.tensors == "always", loss_value)
        self.global_step += 1
        self._batch += 1

    def end_epoch(self) -> None:
        """An epoch ended: the epoch schedule captures its last step."""
        last = self.global_step - 1
        due = self.every_n_epochs is not None and (self.epoch + 1) % self.every_n_epochs == 0
        if due and last >= 0 and self._recorded != last:
            self._batch -= 1
            self._record(last, self.policy.tensors != "never", None)
            self._batch += 1
        self.epoch += 1
        self._batch = 0

    def _record(self, step: int, tensors: bool, loss: float | None) -> None:
        assert self.recorder is not None
        weights = grads = None
        if self.policy.weights:
            params = [p for _, p in self.model.named_parameters()]
            weights = [p.detach().cpu().numpy() for p in params]
            grads = [
                np.full(p.shape, np.nan) if p.grad is None else p.grad.detach().cpu().numpy()
                for p in params
            ]
        self.recorder.record(
            step,
            self.epoch,
            self._batch,
            tensors=tensors,
            loss=loss,
            weights=weights,
            weight_gradients=grads,
        )
        self._recorded = step

    @property
    def trigger(self) -> dict[str, Any] | None:
        """The non-finite trigger, once it fired."""
        return self._last_trigger if self.recorder is None else self.recorder.trigger


def _numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value
