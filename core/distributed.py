"""Scale-out capture on Dask distributed: ``tensortap.capture_distributed`` (docs/design.md §6).

The coordinator (the process that calls :func:`capture_distributed`) builds the model once
to resolve the capture graph, the layer selection and the fingerprint, creates the run
with every array pre-sized to the data's known length, computes and writes the **first
block** itself (its values fix each layer's histogram edges, exactly as
:func:`tensortap.capture` does, so both give bit-identical runs), then splits the remaining
blocks into disjoint, block-aligned ranges and hands them to the Dask workers.

Each worker builds the model **once** (cached per worker process, keyed by a token of the
factory) and captures its ranges into the same run through the ordinary
:class:`~tensortap.core.pipeline.WritePipeline`.  One block is one chunk (or shard) of every
array and one entry of the commit record, so workers never share an object and nobody
resizes while workers write (docs/design.md §4 commit rule).  Per-block statistics partials are
the store's design already: ``open_run(...).stats`` reduces over every writer's blocks.
Input attributions computed at capture (``attributions=``) travel the same way: each worker
computes those of its blocks in its capture step (SmoothGrad's noise is seeded per global
sample index, so which worker took a block does not change a value).

A worker that dies mid-range (its process killed, its machine lost) is replaced by Dask,
which re-runs its task elsewhere; the re-run skips the blocks the dead worker committed
(:func:`_capture_range`), so every sample is captured once.  Before the run is created, one
task per worker checks that it can build the model, read the data files and reach the store
(:mod:`tensortap.core.distributed_checks`).

Data must have a known length: NumPy arrays (each range's slice is shipped with its task)
or ``.npy`` paths (memory-mapped; the workers open them by path, so no sample travels
through the scheduler — the path must be readable by every worker).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tensortap.core.backend import Backend
from tensortap.core.block_size import BlockRule
from tensortap.core.blocks import array_creator, capture_blocks, n_classes
from tensortap.core.capture_attributions import (
    AttributionSpec,
    check_attributions,
    parse_attributions,
)
from tensortap.core.data import Batch, _as_inputs, _is_arraylike, as_source
from tensortap.core.distributed_checks import WorkerCheck, check_client, check_workers
from tensortap.core.engine import _Progress, resolve_backend
from tensortap.core.errors import (
    ClusterError,
    CorruptRunError,
    DataError,
    EmptyDataError,
    ResumeMismatchError,
    StorageError,
    TensortapError,
)
from tensortap.core.graph import CaptureGraph, CaptureNode
from tensortap.core.registry import get_backend
from tensortap.core.run import Run
from tensortap.core.store import layout
from tensortap.core.store.checksums import input_digest
from tensortap.core.store.new_run import NewRunPlacement, open_new_run
from tensortap.core.store.storage import open_location
from tensortap.core.store.writer import RunSettings, RunWriter
from tensortap.core.targets import Target, resolve_target
from tensortap.core.validation import NonFiniteInputs, check_int, check_storage_dtype

__all__ = ["capture_distributed", "plan_ranges"]

#: Ranges handed to each worker when ``ranges_per_worker`` is not given: more than one lets
#: a fast worker take over a slow one's share, and a failure loses less work.
DEFAULT_RANGES_PER_WORKER = 2


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True, slots=True)
class _Column:
    """One model input: the opened array, and its ``.npy`` path when it came from one."""

    array: np.ndarray
    path: str | None = None


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


def _load(value: Any, paths: dict[int, str]) -> Any:
    """Open ``.npy`` paths as memory maps (remembering them), keep arrays as they are."""
    if _is_path(value):
        path = os.fspath(value)
        if not path.endswith(".npy"):
            raise DataError(
                f"capture_distributed reads data from .npy files or NumPy arrays, not {path!r}; "
                "save the inputs with numpy.save"
            )
        try:
            array = np.load(path, mmap_mode="r")
        except OSError as err:
            raise DataError(f"cannot open the data file {path!r}: {err}") from err
        # Absolute: the workers may run in another working directory.
        paths[id(array)] = str(Path(path).resolve())
        return array
    return value


def _open_data(data: Any, labels: Any) -> tuple[Any, Any, dict[int, str]]:
    """``(x, labels, paths)`` with paths opened; refuses data of unknown length."""
    paths: dict[int, str] = {}
    if isinstance(data, tuple):
        if len(data) not in (1, 2):
            raise DataError(
                f"a data tuple holds (x,) or (x, y), got {len(data)} items; put multiple "
                "inputs in a list or dict: ([x1, x2], y)"
            )
        if len(data) == 2:
            if labels is not None:
                raise DataError("labels were given twice (labels= and (x, y) data); give one")
            labels = data[1]
        data = data[0]
    if isinstance(data, Mapping):
        x: Any = {name: _load(value, paths) for name, value in data.items()}
    elif isinstance(data, list):
        x = [_load(value, paths) for value in data]
    else:
        x = _load(data, paths)
    if not _is_arraylike(x):
        raise DataError(
            f"capture_distributed needs data of known length (NumPy arrays or .npy paths, "
            f"alone, in a dict or list, or as (x, y)), not {type(data).__name__}; "
            "save a stream with numpy.save, or use tensortap.capture for iterables"
        )
    if labels is not None:
        labels = np.asarray(_load(labels, {}))
    return x, labels, paths


def plan_ranges(blocks: Sequence[int], n_ranges: int) -> list[tuple[int, int]]:
    """Split block indices into at most ``n_ranges`` runs of consecutive blocks.

    Parameters
    ----------
    blocks : sequence of int
        The blocks to capture, increasing (the uncommitted ones when resuming).
    n_ranges : int
        How many ranges are wanted (the workers times ``ranges_per_worker``).

    Returns
    -------
    list of (first_block, stop_block)
        Disjoint half-open block ranges covering ``blocks`` exactly once, as even in size
        as the gaps between committed blocks allow.
    """
    runs: list[list[int]] = []
    for block in blocks:
        if runs and runs[-1][-1] + 1 == block:
            runs[-1].append(block)
        else:
            runs.append([block])
    size = max(1, -(-len(blocks) // max(1, n_ranges)))  # ceil: at most n_ranges pieces
    ranges: list[tuple[int, int]] = []
    for run in runs:
        for i in range(0, len(run), size):
            piece = run[i : i + size]
            ranges.append((piece[0], piece[-1] + 1))
    return ranges


# ---------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class _RangeJob:
    """Everything a worker needs to capture samples ``[start, stop)`` (pickled to it)."""

    token: str
    factory: Callable[[], Any]
    backend: str
    store: str
    storage_options: dict[str, Any] | None
    settings: RunSettings
    target: Target
    start: int
    stop: int
    # Per input: a path (opened on the worker) or the range's slice of the array.
    inputs: dict[str, str | np.ndarray]
    labels: np.ndarray | None
    example: Any = None
    depth: int = 1
    threads: int | None = None
    strict: bool = False
    #: Input attributions computed in the capture step, as by the coordinator's block 0.
    attributions: AttributionSpec | None = None


@dataclass
class _Model:
    model: Any
    backend: Backend
    graph: CaptureGraph
    nodes: list[CaptureNode]
    fingerprint: str


# One model per worker process (and factory): built by the first range, reused by the rest.
_MODELS: dict[str, _Model] = {}
_MODELS_LOCK = threading.Lock()


def _graph_for(backend: Backend, model: Any, example: Any) -> CaptureGraph:
    if backend.needs_example_inputs:
        return backend.graph(model, inputs=example)
    return backend.graph(model)


def _worker_model(job: _RangeJob) -> _Model:
    """The worker's model for ``job.token``, built on first use (one build per process)."""
    with _MODELS_LOCK:  # several worker threads must not build it twice
        cached = _MODELS.get(job.token)
        if cached is None:
            model = job.factory()
            backend = get_backend(job.backend)
            graph = _graph_for(backend, model, job.example)
            by_key = {node.key: node for node in graph.select(list(job.settings.layers))}
            nodes = [by_key[key] for key in job.settings.layers]
            cached = _Model(model, backend, graph, nodes, backend.fingerprint(model))
            _MODELS[job.token] = cached
    if cached.fingerprint != job.settings.fingerprint:
        raise ResumeMismatchError(
            f"the model built on this worker has fingerprint {cached.fingerprint}, the run's is "
            f"{job.settings.fingerprint}: the model factory must return the same weights on "
            "every machine (load them from a file, or seed the initialisers)"
        )
    return cached


def _job_batches(
    job: _RangeJob,
    committed: frozenset[int] = frozenset(),
    nonfinite: NonFiniteInputs | None = None,
) -> Iterator[tuple[int, Batch]]:
    """The range's batches, without those of ``committed`` blocks (a retried range).

    ``nonfinite`` counts every batch of the range, the committed ones too: a range re-run
    after its worker died returns the counts of the whole range (the dead one returned none).
    """
    b = job.settings.batch_size
    block = job.settings.block_size or b  # ranges are whole blocks of the run's block size
    columns = {
        name: np.load(value, mmap_mode="r") if isinstance(value, str) else value
        for name, value in job.inputs.items()
    }
    for i in range(job.start, job.stop, b):
        j = min(i + b, job.stop)
        inputs = {}
        for name, column in columns.items():
            # Paths are whole files (global indices); shipped slices start at job.start.
            offset = 0 if isinstance(job.inputs[name], str) else job.start
            inputs[name] = np.ascontiguousarray(column[i - offset : j - offset])
        if nonfinite is not None:
            nonfinite.check(i, inputs)  # strict: raises before this batch is computed
        if i // block in committed:
            continue
        labels = None if job.labels is None else job.labels[i - job.start : j - job.start]
        yield i, Batch(inputs, labels)


def _capture_range(job: _RangeJob) -> tuple[int, int, dict[str, Any]]:
    """Worker task: capture ``[job.start, job.stop)``; returns ``(samples, bytes, record)``,
    ``record`` the range's non-finite input counts (:meth:`NonFiniteInputs.record`)."""
    built = _worker_model(job)
    location = open_location(job.store, job.storage_options, read_only=False)
    writer = RunWriter.attach(location, job.settings)
    if writer.capacity < job.stop:  # a resize now would race the other workers
        raise CorruptRunError(
            f"the run at {location.url!r} holds {writer.capacity} samples, fewer than the "
            f"range {job.start}:{job.stop}; the coordinator must size it first"
        )
    written = [0]

    def count(samples: int, nbytes: int) -> None:
        written[0] += nbytes

    # Dask re-runs a range whose worker died (docs/design.md §6, issue 18): the blocks the dead
    # worker committed are whole and stay, so each sample is captured into the run once.
    counts = writer.committed_counts()
    b = writer.block_size
    done = frozenset(
        k for k in range(job.start // b, -(-job.stop // b)) if k < len(counts) and counts[k]
    )
    nonfinite = NonFiniteInputs(strict=job.strict)

    capture_blocks(
        built.backend,
        built.model,
        built.graph,
        built.nodes,
        writer,
        job.target,
        _job_batches(job, done, nonfinite),
        gradients=job.settings.gradients,
        depth=job.depth,
        threads=job.threads,
        on_committed=count,
        attributions=job.attributions,
    )
    return job.stop - job.start, written[0], nonfinite.record()


# ---------------------------------------------------------------------------- coordinator
def _token(factory: Callable[[], Any]) -> str:
    """A key naming the factory on every worker (the same factory reuses its model)."""
    from dask.base import tokenize

    return f"{getattr(factory, '__qualname__', type(factory).__name__)}-{tokenize(factory)}"


def _client(client: Any) -> tuple[Any, Callable[[], None]]:
    """The client to use, and how to clean up what was started for this call."""
    from distributed import Client, LocalCluster, default_client

    if client is not None:
        check_client(client)
        return client, lambda: None
    try:
        return default_client(), lambda: None  # type: ignore[no-untyped-call]
    except ValueError:  # no client yet: a local cluster for this capture only
        cluster = LocalCluster()  # type: ignore[no-untyped-call]
        started = Client(cluster)  # type: ignore[no-untyped-call]

        def close() -> None:
            started.close()  # type: ignore[no-untyped-call]
            cluster.close()

        return started, close


def _store_url(store: Any) -> str:
    if not _is_path(store):
        raise StorageError(
            "capture_distributed writes to a folder or URL every worker can reach (a path "
            f"or s3://...), not a {type(store).__name__}"
        )
    text = str(os.fspath(store))
    if "://" in text and not text.startswith("file://"):
        return text
    # Absolute: workers may run in another working directory.
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


def capture_distributed(
    model_factory: Callable[[], Any],
    data: Any,
    store: Any,
    *,
    client: Any = None,
    layers: Any = "*",
    gradients: bool = False,
    target: Any = "predicted",
    labels: Any = None,
    batch_size: int = 32,
    dtype: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    storage_options: dict[str, Any] | None = None,
    ranges_per_worker: int | None = None,
    progress: bool = True,
    keep_inputs: bool = True,
    codec: Any = None,
    sharded: bool = False,
    depth: int = 1,
    threads: int | None = None,
    block_size: int | None = None,
    chunk_bytes: int | None = None,
    strict: bool = False,
    attributions: Any = None,
    attribution_options: Mapping[str, Any] | None = None,
) -> Run:
    """Capture a run with Dask workers, each capturing disjoint block-aligned sample ranges.

    Parameters
    ----------
    model_factory : callable
        A picklable function of no argument returning the model (e.g. a module-level function
        that loads a ``.keras`` file, or ``functools.partial(keras.saving.load_model,
        path)``).  Called once here and once per worker process; it must return the same
        weights every time (checked by fingerprint).
    data : array, dict, list or tuple of arrays or ``.npy`` paths
        Data of known length.  ``.npy`` paths are memory-mapped and opened by path on the
        workers (no data is shipped); arrays are sliced and each range's slice travels with
        its task.
    store : str or os.PathLike
        A folder every worker can reach, or an ``s3://`` (fsspec) URL.
    client : distributed.Client, optional
        The cluster's client; default: the current client, else a ``LocalCluster`` started
        for this call.
    layers, gradients, target, labels, batch_size, dtype, overwrite, resume, storage_options,
    progress, keep_inputs, codec, sharded, depth, threads, block_size, chunk_bytes
        As for :func:`tensortap.capture`.  The coordinator captures block 0 itself, which
        decides the block size by the same rule; the ranges are whole blocks.  ``progress`` advances per finished range.
    strict : bool
        As for :func:`tensortap.capture`: NaN or infinite input values are counted on the
        workers, where the batches are, and merged here into one
        :class:`~tensortap.core.errors.NonFiniteInputWarning` at the end and the run's
        ``nonfinite_inputs`` attr; ``strict=True`` refuses them instead, with
        :class:`~tensortap.core.errors.DataError`: before the run exists when the first
        batch holds one, else when the range holding it reaches it (the run ends
        ``failed`` with the committed blocks kept).
    attributions, attribution_options
        As for :func:`tensortap.capture`: every worker computes the input attributions of
        its blocks in the same compiled step as their activations and stores them in
        ``/attributions/<method>``; SmoothGrad's noise is seeded by each sample's global
        index, so the run equals a single-process capture whichever worker took a block.
    ranges_per_worker : int, optional
        Ranges per worker (default 2).  More ranges balance uneven workers and lose less
        work to a failure, at the cost of one task each.

    Returns
    -------
    Run
        The run: ``complete`` when every range succeeded.

    Raises
    ------
    DataError
        Data of unknown length (an iterator, a ``tf.data.Dataset``): save it with
        ``numpy.save`` first, or use :func:`tensortap.capture`.
    Exception
        The first failure of a range, re-raised after every other range ended; the run is
        then ``failed`` with every committed block kept, and ``resume=True`` captures only
        the blocks not committed.
    """
    if resume and overwrite:
        raise ResumeMismatchError(
            "resume=True and overwrite=True contradict each other; choose one"
        )
    # Options are checked as tt.capture checks them, before anything is built or written.
    batch_size = cast(int, check_int("batch_size", batch_size, minimum=1))
    depth = cast(int, check_int("depth", depth, minimum=1))
    threads = check_int("threads", threads, minimum=1, optional=True)
    block_size = check_int("block_size", block_size, minimum=1, optional=True)
    chunk_bytes = check_int("chunk_bytes", chunk_bytes, minimum=1, optional=True)
    ranges_per_worker = check_int("ranges_per_worker", ranges_per_worker, minimum=1, optional=True)
    dtype = check_storage_dtype(dtype)
    x, label_array, paths = _open_data(data, labels)
    url = _store_url(store)
    model = model_factory()
    backend = resolve_backend(model)
    example = None
    if backend.needs_example_inputs:  # torch: traced on the first samples, here and on workers
        example = (
            {k: np.array(v[:2]) for k, v in x.items()}  # copies: memory maps are read-only
            if isinstance(x, Mapping)
            else [np.array(v[:2]) for v in x]
            if isinstance(x, list)
            else np.array(x[:2])
        )
    graph = _graph_for(backend, model, example)
    nodes = graph.select(layers)
    if gradients and not backend.supports_gradients:
        raise TensortapError(f"the {backend.name} backend cannot capture gradients")
    spec = parse_attributions(attributions, **dict(attribution_options or {}))
    if spec is not None:
        check_attributions(backend, graph, target)
    rule = BlockRule.from_options(block_size, chunk_bytes, int(batch_size))
    input_names = tuple(item.name for item in graph.inputs)
    source = as_source(x, input_names=input_names, batch_size=batch_size, labels=label_array)
    total = source.length
    if not total:
        raise EmptyDataError("the data holds no sample; nothing to capture")
    columns = {
        name: _Column(array, paths.get(id(array)))
        for name, array in _as_inputs(x, input_names).items()
    }
    resolved = resolve_target(target, n_samples=total)
    resolved.check_classes(n_classes(graph))
    settings = RunSettings(
        framework=backend.name,
        model=backend.model_info(model),
        fingerprint=backend.fingerprint(model),
        layers=tuple(n.key for n in nodes),
        gradients=bool(gradients),
        dtype=dtype,
        batch_size=int(batch_size),
        target=resolved.describe(),
        codec=layout.parse_codec(codec),
        sharded=sharded,
        keep_inputs=keep_inputs,
        total=total,
        inputs=input_names,
        outputs=tuple(output.name for output in graph.outputs),
        block_size=rule.block_size,
        attributions={} if spec is None else spec.describe(),
    )
    dask_client, close = _client(client)
    try:
        # Before the run exists: a cluster that cannot run the capture leaves nothing behind.
        check_workers(
            dask_client,
            functools.partial(_worker_model, _probe_job(model_factory, backend, settings, example)),
            WorkerCheck(
                url,
                storage_options,
                {n: (c.path, c.array.shape) for n, c in columns.items() if c.path is not None},
            ),
        )
        run, nonfinite = _capture_on(
            dask_client,
            model_factory,
            model,
            backend,
            graph,
            nodes,
            settings,
            resolved,
            columns,
            label_array,
            example,
            url,
            storage_options,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            ranges_per_worker=ranges_per_worker,
            depth=depth,
            threads=threads,
            rule=rule,
            strict=strict,
            attributions=spec,
        )
    finally:
        close()
    nonfinite.warn(stacklevel=3)  # at the caller of capture_distributed
    return run


def _probe_job(
    factory: Callable[[], Any], backend: Backend, settings: RunSettings, example: Any
) -> _RangeJob:
    """A job of no sample: what a worker needs to build (and cache) the model."""
    return _RangeJob(
        token=_token(factory),
        factory=factory,
        backend=backend.name,
        store="",
        storage_options=None,
        settings=settings,
        target=resolve_target("predicted"),
        start=0,
        stop=0,
        inputs={},
        labels=None,
        example=example,
    )


def _capture_on(
    dask_client: Any,
    model_factory: Callable[[], Any],
    model: Any,
    backend: Backend,
    graph: CaptureGraph,
    nodes: Sequence[CaptureNode],
    settings: RunSettings,
    resolved: Target,
    columns: Mapping[str, _Column],
    label_array: Any,
    example: Any,
    url: str,
    storage_options: dict[str, Any] | None,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    ranges_per_worker: int | None,
    depth: int,
    threads: int | None,
    rule: BlockRule,
    strict: bool = False,
    attributions: AttributionSpec | None = None,
) -> tuple[Run, NonFiniteInputs]:
    """Create (or reopen) the run, write block 0, hand the other blocks to the workers.

    Returns the run and this call's non-finite input counts (the coordinator's block 0
    and every range's, merged)."""
    total = settings.total
    assert total is not None
    nonfinite = NonFiniteInputs(strict=strict)
    location = open_location(url, storage_options, read_only=False)
    # A local folder that does not exist yet is not touched (reading would create it).
    absent = location.is_local and not Path(str(getattr(location.store, "root", ""))).exists()
    placement: NewRunPlacement | None = None
    resuming = resume and not absent and RunWriter.holds_run(location)
    if resuming:
        writer = RunWriter.open(
            location,
            settings,
            resume=True,
            check_data=functools.partial(_check_digests, columns=columns),
        )
        stored = writer.group.attrs.get(layout.ATTRS_KEY, {})
        stored_total = stored.get("total") if isinstance(stored, dict) else None
        if writer.has_arrays and stored_total not in (None, total):
            raise ResumeMismatchError(
                f"cannot resume {location.url!r}: it was captured from {stored_total} samples, "
                f"the data now has {total}; resume with the same data"
            )
    else:
        # As tt.capture: strict refuses a non-finite first batch before the run exists.
        first_stop = min(settings.batch_size, total)
        nonfinite.check(
            0, {n: np.ascontiguousarray(c.array[:first_stop]) for n, c in columns.items()}
        )
        # As tt.capture: the old run stays untouched until block 0 is committed.
        writer, placement = open_new_run(location, settings, overwrite=overwrite, absent=absent)
    bar = _Progress(total, int(writer.committed_counts().sum()), progress)
    try:
        if not writer.has_arrays:
            _first_block(
                backend,
                model,
                graph,
                nodes,
                writer,
                resolved,
                columns,
                label_array,
                total,
                depth,
                threads,
                bar,
                rule,
                nonfinite,
                checked_first=not resuming,
                attributions=attributions,
            )
        if placement is not None:  # the workers write to the published run
            writer.relocate(placement.publish())
            placement = None
        settings = writer.settings  # block 0 decided the block size; a resume keeps the run's
        n_blocks = -(-total // writer.block_size)
        # A run trimmed by an earlier failed capture is grown back here, by the coordinator
        # alone, before any worker writes.
        writer.ensure_capacity(total)
        counts = writer.committed_counts()
        todo = [k for k in range(n_blocks) if k >= len(counts) or counts[k] == 0]
        errors: list[BaseException] = []
        if todo:
            errors = _run_ranges(
                dask_client,
                todo,
                ranges_per_worker,
                model_factory,
                backend,
                url,
                storage_options,
                settings,
                resolved,
                columns,
                label_array,
                example,
                total,
                depth,
                threads,
                bar,
                nonfinite,
                attributions,
            )
    except BaseException:
        bar.close()
        if placement is not None:
            placement.discard()  # block 0 failed: the old run (if any) is untouched
        elif not resuming and not writer.committed_counts().any():
            _remove(writer)  # a refused capture leaves no run behind
        else:
            # No trimming (finish would resize): a worker of a failed range may still write.
            _set_failed(writer, _nonfinite_attrs(writer, nonfinite, resuming))
        raise
    bar.close()
    if errors:
        _set_failed(writer, _nonfinite_attrs(writer, nonfinite, resuming))
        raise errors[0]
    # Every range ended: trimming the last block is safe now.
    writer.finish("complete", **_nonfinite_attrs(writer, nonfinite, resuming))
    return Run(location), nonfinite


def _nonfinite_attrs(
    writer: RunWriter, nonfinite: NonFiniteInputs, resuming: bool
) -> dict[str, Any]:
    """The run's ``nonfinite_inputs`` attr: this call's counts, plus the run's earlier ones
    when resuming (a resume captures only blocks the earlier calls did not commit)."""
    merged = NonFiniteInputs()
    merged.add(nonfinite.record())
    if resuming and merged.values:
        try:
            merged.add({"nonfinite_inputs": writer.stored_attr("nonfinite_inputs")})
        except Exception:  # noqa: BLE001 - a failing capture's own error matters more
            pass
    return merged.record()


def _check_digests(writer: RunWriter, *, columns: Mapping[str, _Column]) -> None:
    """Before a resume writes anything: the data's first and last committed blocks must
    have the CRC-32C the run stored for them (``input_digest``), as ``tt.capture`` checks."""
    counts = writer.committed_counts()
    committed = np.flatnonzero(counts)
    size = writer.block_size
    for block in sorted({int(committed[0]), int(committed[-1])} if committed.size else ()):
        stored = writer.input_digest(block)
        if stored is None:
            return  # a run of the previous release: no digests
        start, stop = block * size, block * size + int(counts[block])
        inputs = {n: np.ascontiguousarray(c.array[start:stop]) for n, c in columns.items()}
        if any(len(v) != stop - start for v in inputs.values()) or input_digest(inputs) != stored:
            raise ResumeMismatchError(
                f"cannot resume {writer.location.url!r}: the data's samples {start}-{stop - 1} "
                f"differ from those the run committed (input digest of block {block}); resume "
                "with the data the run was captured on, or pass overwrite=True"
            )


def _remove(writer: RunWriter) -> None:
    try:
        writer.remove()
    except Exception:  # noqa: BLE001 - the capture's own error matters more
        pass


def _set_failed(writer: RunWriter, extra: Mapping[str, Any] | None = None) -> None:
    try:
        samples = int(writer.committed_counts().sum())
        writer.set_status("failed", samples=samples, **(extra or {}))
    except Exception:  # noqa: BLE001 - the capture's own error matters more
        pass


def _first_block(
    backend: Backend,
    model: Any,
    graph: CaptureGraph,
    nodes: Sequence[CaptureNode],
    writer: RunWriter,
    target: Target,
    columns: Mapping[str, _Column],
    labels: Any,
    total: int,
    depth: int,
    threads: int | None,
    bar: _Progress,
    rule: BlockRule,
    nonfinite: NonFiniteInputs,
    *,
    checked_first: bool,
    attributions: AttributionSpec | None = None,
) -> None:
    """Capture block 0 here: it decides the block size, creates the arrays (pre-sized to
    ``total``) and fixes the histogram edges from its values, exactly as the single-process
    engine does.  ``nonfinite`` counts its batches (the first one only when not
    ``checked_first``: a new run's first batch was counted before the run was created)."""
    b = writer.batch_size

    def batches() -> Iterator[tuple[int, Batch]]:  # computed only as far as block 0 needs
        for start in range(0, total, b):
            stop = min(start + b, total)
            inputs = {n: np.ascontiguousarray(c.array[start:stop]) for n, c in columns.items()}
            if start or not checked_first:
                nonfinite.check(start, inputs)
            yield start, Batch(inputs, None if labels is None else np.asarray(labels[start:stop]))

    capture_blocks(
        backend,
        model,
        graph,
        nodes,
        writer,
        target,
        batches(),
        gradients=writer.settings.gradients,
        depth=depth,
        threads=threads,
        on_first=array_creator(writer, graph, nodes, total),
        on_committed=bar.update,
        rule=rule,
        total=total,
        max_blocks=1,
        attributions=attributions,
    )


def _run_ranges(
    client: Any,
    todo: Sequence[int],
    ranges_per_worker: int | None,
    factory: Callable[[], Any],
    backend: Backend,
    url: str,
    storage_options: dict[str, Any] | None,
    settings: RunSettings,
    target: Target,
    columns: Mapping[str, _Column],
    labels: Any,
    example: Any,
    total: int,
    depth: int,
    threads: int | None,
    bar: _Progress,
    nonfinite: NonFiniteInputs,
    attributions: AttributionSpec | None = None,
) -> list[BaseException]:
    """Submit one task per range and wait for **all** of them; returns their errors.

    A failed range does not cancel the others: a cancelled task that already runs keeps
    writing in its worker, and the coordinator could not know when it stops.
    """
    from distributed import as_completed

    b = settings.block_size or settings.batch_size
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    per_worker = ranges_per_worker or DEFAULT_RANGES_PER_WORKER
    token = _token(factory)
    futures = []
    spans: dict[Any, tuple[int, int]] = {}
    for first, stop_block in plan_ranges(todo, n_workers * per_worker):
        start, stop = first * b, min(stop_block * b, total)
        inputs: dict[str, str | np.ndarray] = {
            name: c.path if c.path is not None else np.ascontiguousarray(c.array[start:stop])
            for name, c in columns.items()
        }
        job = _RangeJob(
            token=token,
            factory=factory,
            backend=backend.name,
            store=url,
            storage_options=storage_options,
            settings=settings,
            target=target,
            start=start,
            stop=stop,
            inputs=inputs,
            labels=None if labels is None else np.asarray(labels[start:stop]),
            example=example,
            depth=depth,
            threads=threads,
            strict=nonfinite.strict,
            attributions=attributions,
        )
        # pure=False: a fresh key per call, so a resume never reuses an earlier erred task.
        futures.append(client.submit(_capture_range, job, pure=False))
        spans[futures[-1].key] = (start, stop)
    errors: list[BaseException] = []
    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        if future.status == "error":
            errors.append(_explained(future.exception(), spans[future.key]))
        else:
            samples, nbytes, record = future.result()
            bar.update(samples, nbytes)
            nonfinite.add(record)  # counted on the worker, where the batches are
    return errors


def _explained(error: BaseException, span: tuple[int, int]) -> BaseException:
    """A range's error; a range that killed worker after worker gets one line with the fix.

    Dask re-runs a range whose worker died on another worker by itself, up to
    ``distributed.scheduler.allowed-failures`` times; past that the range's own samples
    are the likely cause (memory, a crash in native code), so the run ends ``failed``.
    """
    from distributed import KilledWorker

    if not isinstance(error, KilledWorker):
        return error
    import dask.config

    allowed = dask.config.get("distributed.scheduler.allowed-failures")
    cluster_error = ClusterError(
        f"samples {span[0]}:{span[1]} were lost with their worker more than {allowed} times "
        "(distributed.scheduler.allowed-failures): the range itself kills workers (out of "
        "memory? a crash in the model?); the run is 'failed' with its committed blocks kept: "
        "fix the cause, then capture_distributed(..., resume=True)"
    )
    cluster_error.__cause__ = error
    return cluster_error
