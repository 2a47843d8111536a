"""Training runs: capture policies and the step recorder behind the Keras callback and the
PyTorch monitor (issue 14; store layout in :mod:`tensortap.core.store.steps`).

Framework-free: a framework adapter tells the :class:`StepRecorder` when a training step
ended (its global step, epoch and batch, whether the training loss was finite, and the
weights if wanted); the recorder runs the fixed probe batch through the backend's capture
session at once — the model must not change under it — and hands the results to one
writer thread, which creates the run, computes the statistics, writes the step and
commits it while training goes on.  Statistics-only steps go there too: their statistics
are one compiled call a layer that releases the GIL (:mod:`tensortap.core.step_stats`)
and their writes are a dozen small files whose system calls release it, so the thread
works beside training instead of inside it (in the training thread they cost the digits
CNN's loop ~7 ms a captured step on a slow disk, issue 14).
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from tensortap.core.backend import Backend, BatchResult, CaptureSession
from tensortap.core.blocks import labels_for_store, n_classes
from tensortap.core.data import as_source
from tensortap.core.errors import DataError, InputMismatchError, TensortapError
from tensortap.core.graph import CaptureNode
from tensortap.core.registry import backend_for, get_backend
from tensortap.core.stats import BlockStats, to_channels_last
from tensortap.core.step_stats import step_edges, step_stats
from tensortap.core.store.steps import StepRecord, StepSettings, StepWriter, WeightStats
from tensortap.core.store.storage import open_location
from tensortap.core.targets import resolve_target

__all__ = [
    "Policy",
    "StepRecorder",
    "check_every",
    "parameter_moments",
    "resolve_policy",
    "step_edges",
]

TensorsWhen = Literal["always", "epochs", "never"]


@dataclass(frozen=True, slots=True)
class Policy:
    """What a training run stores at each captured step.  Parts combine freely.

    Parameters
    ----------
    tensors : {"always", "epochs", "never"}
        Store the probe's full tensors at every captured step, only at the steps the
        epoch schedule (``every_n_epochs``) captures — the batch schedule then records
        statistics only — or never (a statistics-only run holds no tensor array).
    gradients : bool
        Also capture the gradients of the target on the probe (and their statistics).
    dtype : str, optional
        Storage dtype of stored tensors (``"float16"``); statistics always come from the
        full-precision values.
    weights : bool
        Per-parameter weight and weight-gradient statistics at every captured step
        (PyTorch: ``.grad`` of the training step; Keras: the loss on the labelled probe).
    nonfinite : bool
        The non-finite trigger: when the training loss or any watched layer's activation
        or gradient on the probe is NaN or infinite, store the probe's full tensors and
        gradients at that step and record the step and the first layer in model order
        that showed it (``run.trigger``).  The training batches are checked through
        their loss only (every step); layers are checked on the probe, at captured steps
        (docs/store-format.md, "The non-finite trigger").
    """

    tensors: TensorsWhen = "always"
    gradients: bool = False
    dtype: str | None = None
    weights: bool = False
    nonfinite: bool = True

    def __post_init__(self) -> None:
        if self.tensors not in ("always", "epochs", "never"):
            raise DataError(
                f"Policy(tensors={self.tensors!r}) is not allowed; use 'always', 'epochs' "
                "or 'never'"
            )
        if self.dtype is not None:
            try:
                kind = np.dtype(self.dtype).kind
            except TypeError as err:
                raise DataError(
                    f"Policy(dtype={self.dtype!r}) is not a dtype; use e.g. 'float16'"
                ) from err
            if kind != "f":
                raise DataError(
                    f"Policy(dtype={self.dtype!r}) is not a floating dtype; use e.g. 'float16'"
                )

    def describe(self) -> dict[str, Any]:
        """The policy as stored in the run's attrs."""
        return asdict(self)


#: The policies ``policy="..."`` names.
NAMED_POLICIES = {
    "full": Policy(tensors="always"),
    "stats": Policy(tensors="never"),
    "epochs": Policy(tensors="epochs"),
}


def resolve_policy(policy: Policy | str | None) -> Policy:
    """A :class:`Policy` from a policy or one of the names in :data:`NAMED_POLICIES`."""
    if policy is None:
        return NAMED_POLICIES["full"]
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str) and policy in NAMED_POLICIES:
        return NAMED_POLICIES[policy]
    raise DataError(
        f"policy={policy!r} is not allowed; use one of {sorted(NAMED_POLICIES)} or "
        "tensortap.Policy(tensors=..., gradients=..., dtype=..., weights=..., nonfinite=...)"
    )


def check_every(name: str, value: int | None) -> int | None:
    """Validate a schedule (``every_n_batches=``...): ``None`` or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(
            f"{name}={value!r} is not allowed: give a positive number of steps (1, 50, ...) "
            "or None to turn that schedule off"
        )
    return int(value)


def parameter_moments(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``(parameter, 7)`` rows of :data:`~tensortap.core.stats.MOMENTS`, one per array."""
    rows = np.full((len(arrays), 7), np.nan)
    for row, value in zip(rows, arrays, strict=True):
        v = np.asarray(value, np.float64).ravel()
        finite = np.isfinite(v)
        good = v[finite] if not finite.all() else v
        count = good.size
        mean = good.mean() if count else np.nan
        row[:] = (
            count,
            mean,
            ((good - mean) ** 2).sum() if count else np.nan,
            good.min() if count else np.nan,
            good.max() if count else np.nan,
            (good == 0).sum(),
            v.size - count,
        )
    return rows


def _all_finite(values: Mapping[str, np.ndarray], keys: Sequence[str]) -> str | None:
    """The first key (in ``keys`` order) whose values hold NaN or infinity, else ``None``."""
    for key in keys:
        if key in values and not np.isfinite(values[key]).all():
            return key
    return None


@dataclass(slots=True)
class _Pending:
    step: int
    epoch: int
    batch: int
    wall_time: float
    result: BatchResult
    store_tensors: bool
    weights: WeightStats | None
    trigger: dict[str, Any] | None


class StepRecorder:
    """Captures the probe at training steps into one training run.

    Parameters
    ----------
    model : object
        The model being trained (Keras, torch...).
    probe : array, dict, list or (x, y) tuple
        The fixed probe batch (the same samples at every step).
    store : str, os.PathLike or zarr Store
        Where the training run goes (a folder, an ``s3://`` URL, a zarr store).
    layers : selection
        Watched layers (``tensortap.graph(model)`` lists the keys).
    policy : Policy or str
        What each captured step stores (:class:`Policy`).
    target : str, int, array or callable, optional
        Gradient target; ``"label"`` when the probe has labels, else ``"predicted"``.
    labels : array, optional
        The probe's labels (or give ``(x, y)`` as the probe).
    class_names : sequence of str, optional
        Names of the classes, stored in the run's attrs.
    overwrite : bool
        Replace a training run of another model at ``store``.
    storage_options : dict, optional
        fsspec options for URLs.
    backend : Backend or str, optional
        Force a backend.
    parameters : sequence of str
        Names of the parameters whose statistics :meth:`record` receives (``Policy.weights``).
    """

    def __init__(
        self,
        model: Any,
        probe: Any,
        store: Any,
        *,
        layers: Any = "*",
        policy: Policy | str | None = None,
        target: Any = None,
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        backend: Backend | str | None = None,
        parameters: Sequence[str] = (),
    ) -> None:
        self.policy = resolve_policy(policy)
        if isinstance(backend, Backend):
            backend_obj = backend
        else:
            backend_obj = get_backend(backend) if backend else backend_for(model)
        self.backend = backend_obj
        self.model = model
        x = probe[0] if isinstance(probe, tuple) else probe
        example = x[:2] if hasattr(x, "__getitem__") and not isinstance(x, dict) else x
        try:
            if backend_obj.needs_example_inputs:
                graph = backend_obj.graph(model, inputs=example)
            else:
                graph = backend_obj.graph(model)
        except TensortapError:
            raise
        except Exception as err:
            raise InputMismatchError(
                f"the probe does not fit the model ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); give samples shaped like "
                "the model's training inputs"
            ) from err
        self.graph = graph
        self.nodes: list[CaptureNode] = list(graph.select(layers))
        self.keys = tuple(node.key for node in self.nodes)
        input_names = tuple(spec.name for spec in graph.inputs)
        source = as_source(probe, input_names=input_names, batch_size=1 << 30, labels=labels)
        if source.length is None:
            raise DataError(
                "the probe must be arrays (x, or (x, y)), not a stream; give a fixed batch"
            )
        batch = next(source.batches(0))
        self.probe_inputs = batch.inputs
        self.probe_labels = batch.labels
        if target is None:
            target = "label" if batch.labels is not None else "predicted"
        self.target = resolve_target(target, n_samples=len(batch))
        self.target.check_classes(n_classes(graph))
        self._classes = self.target.batch_classes(0, len(batch), batch.labels)
        gradients = self.policy.gradients
        self._session: CaptureSession = backend_obj.session(
            model, self.nodes, gradients=gradients, target=self.target
        )
        self._gradient_session: CaptureSession | None = self._session if gradients else None
        first = self._run(self._session)  # fails now, in one line, when the probe does not fit
        self.settings = StepSettings(
            framework=backend_obj.name,
            model=backend_obj.model_info(model),
            layers=self.keys,
            inputs=input_names,
            outputs=tuple(spec.name for spec in graph.outputs),
            gradients=gradients,
            dtype=self.policy.dtype and str(np.dtype(self.policy.dtype)),
            target=self.target.describe(),
            policy=self.policy.describe(),
            probe_samples=len(batch),
            class_names=None if class_names is None else tuple(map(str, class_names)),
            parameters=tuple(parameters) if self.policy.weights else (),
            info=dict(self._session.info),
        )
        self._warm: BatchResult | None = (
            first  # the writer thread computes its statistics first: JIT warm-up
        )
        location = open_location(store, storage_options, read_only=False)
        self.location = location
        StepWriter.check(location, self.settings, overwrite=overwrite)  # fails here, at once
        # The writer thread creates the run (~50 arrays) while training starts.
        self._open_writer = functools.partial(
            StepWriter.open,
            location,
            self.settings,
            overwrite=overwrite,
            nodes=self.nodes,
            probe_inputs=self.probe_inputs,
            labels=labels_for_store(batch.labels),
        )
        self.writer: StepWriter | None = None
        self._dims = {node.key: tuple(node.dims) for node in self.nodes}
        self._channel = {node.key: node.channel_dim for node in self.nodes}
        self.trigger: dict[str, Any] | None = None
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._closed = False
        self._submitted = self._written = 0
        #: (statistics, write) seconds of each step written, for benchmarks.
        self.timings: list[tuple[float, float]] = []
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._write_loop, name="tt-steps", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ capturing
    def _run(self, session: CaptureSession) -> BatchResult:
        try:
            return session.run(self.probe_inputs, classes=self._classes, labels=self.probe_labels)
        except TensortapError:
            raise
        except Exception as err:
            raise InputMismatchError(
                f"the probe does not fit the model ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); give samples shaped like "
                "the model's training inputs"
            ) from err

    def record(
        self,
        step: int,
        epoch: int,
        batch: int,
        *,
        tensors: bool,
        loss: float | None = None,
        weights: Sequence[np.ndarray] | None = None,
        weight_gradients: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Capture the probe now, as training step ``step``; returns once it is queued.

        The writer thread commits it (after creating the run, for the first steps);
        :meth:`flush` waits for that.

        Parameters
        ----------
        step, epoch, batch : int
            Global step, epoch and batch within the epoch.
        tensors : bool
            Store full tensors (else statistics only); the non-finite trigger may upgrade.
        loss : float, optional
            The training loss of this step (a non-finite one fires the trigger).
        weights, weight_gradients : sequence of ndarray, optional
            The parameters (and their gradients) in ``parameters`` order, for
            ``Policy.weights``.
        """
        self._raise_writer_error()
        result = self._run(self._session)
        trigger = None
        if self.policy.nonfinite and self.trigger is None:
            trigger = self._check_nonfinite(step, result, loss)
            if trigger is not None:
                tensors = True
                if self._gradient_session is None:
                    self._gradient_session = self.backend.session(
                        self.model, self.nodes, gradients=True, target=self.target
                    )
                if self._gradient_session is not self._session:
                    result = self._run(self._gradient_session)
                    trigger = self._check_nonfinite(step, result, loss) or trigger
                self.trigger = trigger
        weight_stats = None
        if self.policy.weights and weights is not None:
            weight_stats = WeightStats(
                parameter_moments(weights),
                None if weight_gradients is None else parameter_moments(weight_gradients),
            )
        pending = _Pending(step, epoch, batch, time.time(), result, tensors, weight_stats, trigger)
        while True:  # wait for room, but notice a writer that died meanwhile
            self._raise_writer_error()
            try:
                self._queue.put(pending, timeout=0.5)
                self._submitted += 1
                return
            except queue.Full:
                continue

    def _check_nonfinite(
        self, step: int, result: BatchResult, loss: float | None
    ) -> dict[str, Any] | None:
        layer = _all_finite(result.activations, self.keys)
        where = "activation"
        if layer is None and result.gradients:
            layer, where = _all_finite(result.gradients, self.keys), "gradient"
        if layer is None and loss is not None and not math.isfinite(loss):
            where = "training loss"
        elif layer is None:
            return None
        return {"step": int(step), "layer": layer, "where": where}

    # ------------------------------------------------------------------ writing
    def _stats(
        self, values: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, BlockStats], dict[str, np.ndarray]]:
        stats, edges = {}, {}
        for key in self.keys:
            x3 = to_channels_last(np.asarray(values[key]), self._dims[key], self._channel[key])
            stats[key], edges[key] = step_stats(x3)
        return stats, edges

    def _write_loop(self) -> None:
        try:
            self.writer = self._open_writer()
        except BaseException as err:  # noqa: BLE001 - reported by record() / close()
            self._error = err
        warm, self._warm = self._warm, None
        if warm is not None:  # compiles the statistics kernel while training starts
            try:
                self._stats(warm.activations)
            except BaseException as err:  # noqa: BLE001 - reported by record() / close()
                self._error = err
        del warm
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                with self._done:
                    self._written += 1
                    self._done.notify_all()
                continue  # drain: the error is reported to the training thread
            try:
                self._write(item)
            except BaseException as err:  # noqa: BLE001 - reported by record() / close()
                self._error = err
            finally:
                with self._done:
                    self._written += 1
                    self._done.notify_all()

    def _prepare(self, item: _Pending) -> StepRecord:
        """One step's record: statistics (and tensors) of the probe's values."""
        result = item.result
        stats, edges = self._stats(result.activations)
        record = StepRecord(
            item.step, item.epoch, item.batch, item.wall_time, stats, edges, weights=item.weights
        )
        if result.gradients:
            record.gradient_stats, record.gradient_edges = self._stats(result.gradients)
        if item.store_tensors:
            record.activations = dict(result.activations)
            record.gradients = dict(result.gradients) if result.gradients else None
        return record

    def _write(self, item: _Pending) -> None:
        started = time.perf_counter()
        record = self._prepare(item)
        computed = time.perf_counter()
        assert self.writer is not None
        self.writer.write(record, self._dims)
        self.timings.append((computed - started, time.perf_counter() - computed))
        if item.trigger is not None:
            self.writer.record_trigger(item.trigger)

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # ------------------------------------------------------------------ ending
    def flush(self) -> None:
        """Wait until every queued step is committed."""
        with self._done:
            while self._written < self._submitted and self._thread.is_alive():
                self._done.wait(0.5)
        self._raise_writer_error()

    def close(self, status: str = "complete") -> None:
        """Write the queued steps, mark the run ``status`` and close the sessions."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._raise_writer_error()
        finally:
            if self.writer is not None:
                self.writer.finish(status)
            if self._gradient_session is not None and self._gradient_session is not self._session:
                self._gradient_session.close()
            self._session.close()
