"""The capture engine: ``tensortap.capture`` and ``tensortap.graph``.

Framework-free orchestration: resolve the backend, the layer selection and the target,
open the run writer, and loop over blocks of samples, computing block *k+1* while the
:class:`~tensortap.core.pipeline.WritePipeline` writes block *k* (docs/design.md §4, §6).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
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
from tensortap.core.class_names import check_class_names
from tensortap.core.data import Batch, DataSource, as_source
from tensortap.core.errors import (
    EmptyDataError,
    ResumeMismatchError,
    TargetError,
    TensortapError,
)
from tensortap.core.graph import CaptureGraph, override_dims
from tensortap.core.multi_target import MultiTarget, MultiTargetBackend, parse_targets
from tensortap.core.registry import backend_for, get_backend
from tensortap.core.run import Run
from tensortap.core.store import commit
from tensortap.core.store.checksums import input_digest
from tensortap.core.store.layout import parse_codec
from tensortap.core.store.new_run import NewRunPlacement, open_new_run
from tensortap.core.store.storage import open_location
from tensortap.core.store.writer import RunSettings, RunWriter
from tensortap.core.targets import resolve_target
from tensortap.core.validation import NonFiniteInputs, check_int, check_storage_dtype

__all__ = ["capture", "graph", "resolve_backend"]


def resolve_backend(model: Any, backend: Backend | str | None = None) -> Backend:
    """The backend for ``model``: given by name or instance, else found from its class."""
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return get_backend(backend)
    return backend_for(model)


def graph(model: Any, inputs: Any = None, backend: Backend | str | None = None) -> CaptureGraph:
    """The model's capture graph; ``print(tt.graph(model))`` lists every capturable key.

    Parameters
    ----------
    model : object
        A framework model (Keras, torch...).
    inputs : array, list, tuple or dict, optional
        An example batch, for backends whose models have no static input shape
        (``needs_example_inputs``, e.g. PyTorch); ignored by the others.
    backend : Backend or str, optional
        Force a backend instead of detecting it.
    """
    return resolve_backend(model, backend).graph(model, inputs=inputs)


def _example_inputs(data: Any, backend: Backend, batch_size: int) -> tuple[Any, Any]:
    """The first samples' inputs (``x`` only), and ``data`` unchanged or re-chained.

    Backends with ``needs_example_inputs`` trace the model on them before the graph (and
    so the input names the data are matched against) is known.  A one-shot iterator is
    put back together so no batch is lost.
    """
    native = backend.batches(data, batch_size)
    if native is not None:
        first = next(iter(native), None)
    elif isinstance(data, (np.ndarray, dict, list)) or hasattr(data, "__array__"):
        first = data
    elif isinstance(data, tuple):  # (x, y) or (x,)
        first = data[0]
    elif isinstance(data, Iterator):
        first = next(data, None)
        if first is not None:
            data = itertools.chain([first], data)
    else:  # a re-iterable collection of batches
        first = next(iter(data), None)
    if isinstance(first, tuple):
        first = first[0]
    if isinstance(first, dict):
        return {k: np.asarray(v[:2]) for k, v in first.items()}, data
    if isinstance(first, list):
        return [np.asarray(v[:2]) for v in first], data
    return (None if first is None else np.asarray(first[:2])), data


class _Progress:
    """tqdm bar over samples, with MB/s of activations written."""

    def __init__(self, total: int | None, initial: int, enabled: bool) -> None:
        self.bar = None
        self.bytes = 0
        self.started = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit="sample", desc="capture", dynamic_ncols=True
            )

    def update(self, samples: int, nbytes: int) -> None:
        self.bytes += nbytes
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.bytes / elapsed / 1e6:,.0f} MB/s", refresh=False)
            self.bar.update(samples)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def capture(
    model: Any,
    data: Any,
    store: Any = None,
    layers: Any = "*",
    gradients: bool = False,
    target: Any = "predicted",
    labels: Any = None,
    batch_size: int = 32,
    dtype: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    backend: Backend | str | None = None,
    keep_inputs: bool = True,
    *,
    codec: Any = None,
    sharded: bool = False,
    depth: int = 1,
    threads: int | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    class_names: Any = None,
    block_size: int | None = None,
    chunk_bytes: int | None = None,
    strict: bool = False,
    attributions: Any = None,
    attribution_options: Mapping[str, Any] | None = None,
) -> Run:
    """Capture activations (and gradients) of ``model`` on ``data`` into a run.

    Parameters
    ----------
    model : object
        A framework model (Keras 3 / tf.keras...).
    data : array, dict, list, tuple, iterable or framework-native data
        See :mod:`tensortap.core.data`.
    store : str, os.PathLike, zarr Store or None
        A folder, an ``s3://`` URL, a zarr store, or ``None`` for an in-memory run.
    layers : selection
        Which nodes to capture (:func:`tensortap.core.selection.select_nodes`).
    gradients : bool
        Also capture gradients of ``target`` with respect to each activation.
    target : str, int, array, callable or list
        The per-sample scalar differentiated (:mod:`tensortap.core.targets`).  Several
        targets at once (``["predicted", "label"]``, ``"top3"``, ``["label", "3", 7]``: a
        list holding a string) store gradients along a ``target`` dimension
        (:mod:`tensortap.core.multi_target`).
    labels : array, optional
        One label per sample (or give ``(x, y)`` data).
    batch_size : int
        Samples per compute batch (what the model sees at once).
    dtype : str, optional
        Storage dtype of activations and gradients (``"float16"``); statistics always
        come from the full-precision values.
    resume : bool
        Continue an interrupted run after its last committed sample.
    overwrite : bool
        Replace an existing run.
    progress : bool
        Show a progress bar (samples/s and MB/s).
    storage_options : dict, optional
        fsspec options for URLs.
    backend : Backend or str, optional
        Force a backend.
    keep_inputs : bool
        Store the model inputs (overlays need them).
    codec : str, optional
        Compression of activations: ``"none"`` (default), ``"lz4[:level]"``, ``"zstd[:level]"``,
        or ``"blosc-zstd[:level]"``.
    sharded : bool
        One shard per block with one inner chunk per sample (cheaper single-sample reads).
    depth : int
        Computed batches that may wait for the writer (memory: about ``depth + 2``
        batches, plus the first block's activations until they fix the histogram edges).
    threads : int, optional
        Writer threads per block.
    dims : dict of str to sequence of str, optional
        Dimension names by node key, for layers whose axes the backend cannot know
        (``{"block": ("height", "width", "channel")}`` declares a custom layer spatial);
        see :func:`tensortap.core.graph.override_dims`.
    class_names : sequence of str, optional
        One name per class of the model's first output, in index order; stored in the
        run's attrs and shown by the views wherever a label or prediction is.
    block_size : int, optional
        Samples per storage block (one chunk of every array, one commit), a multiple of
        ``batch_size``.  By default as many whole batches as fill ``chunk_bytes`` in the
        median array, bounded by memory and ~3 s of compute a block
        (:mod:`tensortap.core.block_size`).  A resumed run keeps its own.
    chunk_bytes : int, optional
        Target bytes of the median array's chunk when the block size is chosen (64 MiB).
    strict : bool
        Refuse input data holding NaN or infinite values (by default they are captured, with
        a :class:`~tensortap.core.errors.NonFiniteInputWarning` and a ``nonfinite_inputs``
        record in the run's attrs).
    attributions : str or sequence of str, optional
        Input attributions the capture step computes with the target's class score and
        stores as ``/attributions/<method>`` (the input's dims): ``"saliency"``,
        ``"gradient_x_input"``, ``"smoothgrad"``, ``"integrated_gradients"`` (or a comma
        list); one-input models, class targets (:mod:`tensortap.core.capture_attributions`).
    attribution_options : dict, optional
        Their parameters: ``n_samples``, ``sigma`` (input units), ``seed`` (SmoothGrad);
        ``steps``, ``baseline``, ``rule`` (Integrated Gradients).

    Returns
    -------
    Run
        The finished run, committed samples only.

    Raises
    ------
    EmptyDataError, DataError, OptionError, LayerNotFoundError, TargetError,
    RunExistsError, ResumeMismatchError, StorageError
        One line each, naming the problem and the fix.
    """
    if resume and overwrite:
        raise ResumeMismatchError(
            "resume=True and overwrite=True contradict each other; choose one"
        )
    # Arguments first: a refused capture must leave nothing behind (issue 20).
    batch_size = cast(int, check_int("batch_size", batch_size, minimum=1))
    depth = cast(int, check_int("depth", depth, minimum=1))
    threads = check_int("threads", threads, minimum=1, optional=True)
    block_size = check_int("block_size", block_size, minimum=1, optional=True)
    chunk_bytes = check_int("chunk_bytes", chunk_bytes, minimum=1, optional=True)
    rule = BlockRule.from_options(block_size, chunk_bytes, batch_size)
    storage_dtype = check_storage_dtype(dtype)
    backend_obj = resolve_backend(model, backend)
    if backend_obj.needs_example_inputs:
        example, data = _example_inputs(data, backend_obj, batch_size)
        if example is None:
            raise EmptyDataError("the data holds no sample; nothing to capture")
        capture_graph = backend_obj.graph(model, inputs=example)
    else:
        capture_graph = backend_obj.graph(model)
    nodes = override_dims(capture_graph.select(layers), dims)
    if gradients and not backend_obj.supports_gradients:
        raise TensortapError(
            f"the {backend_obj.name} backend cannot capture gradients; pass gradients=False "
            "or use a backend that supports them"
        )
    input_names = tuple(spec.name for spec in capture_graph.inputs)
    spec = parse_attributions(attributions, **dict(attribution_options or {}))
    if spec is not None:
        check_attributions(backend_obj, capture_graph, target)
    source = as_source(
        data, input_names=input_names, batch_size=batch_size, labels=labels, backend=backend_obj
    )
    several = parse_targets(target)
    resolved_target: Any
    if several is not None:
        if not gradients:
            raise TargetError(
                f"target {target!r} names several targets, which only gradients use; "
                "pass gradients=True (--gradients)"
            )
        resolved_target = MultiTarget(several)
        backend_obj = MultiTargetBackend(backend_obj)  # type: ignore[assignment]
    else:
        resolved_target = resolve_target(target, n_samples=source.length)
    resolved_target.check_classes(n_classes(capture_graph))
    names = check_class_names(class_names, n_classes(capture_graph))
    settings = RunSettings(
        framework=backend_obj.name,
        model=backend_obj.model_info(model),
        # Hashing every weight only serves resume, which an in-memory run cannot do.
        fingerprint="" if store is None else backend_obj.fingerprint(model),
        layers=tuple(n.key for n in nodes),
        gradients=bool(gradients),
        dtype=storage_dtype,
        batch_size=batch_size,
        target=resolved_target.describe(),
        codec=parse_codec(codec),
        sharded=sharded,
        keep_inputs=keep_inputs,
        total=source.length,
        inputs=input_names,
        outputs=tuple(spec.name for spec in capture_graph.outputs),
        block_size=rule.block_size,
        attributions={} if spec is None else spec.describe(),
    )
    location = open_location(store, storage_options, read_only=False)
    nonfinite = NonFiniteInputs(strict=strict)
    resumed = _Resumed(source)
    writer: RunWriter | None = None
    # A local folder that does not exist yet is not touched (reading would create it).
    absent = location.is_local and not Path(str(getattr(location.store, "root", ""))).exists()
    resuming = resume and not absent and RunWriter.holds_run(location)
    if resuming:
        rebuild = functools.partial(
            as_source, data, input_names=input_names, labels=labels, backend=backend_obj
        )
        writer = RunWriter.open(
            location,
            settings,
            resume=True,
            check_data=functools.partial(resumed.check, rebuild=rebuild),
        )
    if not resumed.fetched:
        resumed.start_from(0)
    first, batches, start = resumed.first, resumed.batches, resumed.start
    if first is None and start == 0:
        raise EmptyDataError("the data holds no sample; nothing to capture")
    placement: NewRunPlacement | None = None
    if writer is None:
        if first is not None:
            nonfinite.check(start, first.inputs)  # before the run exists (strict=True)
        writer, placement = open_new_run(location, settings, overwrite=overwrite, absent=absent)
    if names is not None:
        writer.set_status("capturing", class_names=names)
    if several is not None:
        writer.set_status("capturing", targets=resolved_target.names)
    if first is None:  # resumed a run whose samples were all committed
        writer.finish("complete")
        return Run(location, lazy=True)
    _run_blocks(
        backend_obj,
        model,
        capture_graph,
        nodes,
        writer,
        resolved_target,
        first,
        batches,
        start,
        resumed.source.length,
        progress,
        depth,
        threads,
        gradients,
        rule,
        _Finish(placement, nonfinite, created=not resuming or resumed.created),
        spec,
    )
    return Run(writer.location, lazy=True)


class _Resumed:
    """Where the capture starts, and the resume's check that it was given the same data.

    A resume continues after the committed prefix.  Before anything is written it reads
    the data's last committed block again and compares its CRC-32C with the run's
    ``input_digest`` entry (the length was compared with ``total`` already): data of the
    same length but other content is :class:`ResumeMismatchError` (issue 20).
    """

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.first: Batch | None = None
        self.batches: Iterator[Batch] = iter(())
        self.start = 0
        self.created = False
        self.fetched = False

    def start_from(self, start: int) -> None:
        """Take the data from sample ``start`` on (once: an iterator is read only once)."""
        self.fetched = True
        self.start = start
        self.batches = self.source.batches(start)
        self.first = next(self.batches, None)

    def check(self, writer: RunWriter, *, rebuild: Any) -> None:
        if writer.settings.batch_size != getattr(self.source, "batch_size", None):
            # The run's chunking wins over the batch size asked for.
            self.source = rebuild(batch_size=writer.settings.batch_size)
        self.created = not writer.has_arrays
        counts = writer.committed_counts()
        # Blocks are the run's block size (several batches each since issue 12).
        size = writer.block_size
        prefix = commit.committed_prefix(counts, size)
        if not prefix:
            self.start_from(0)
            return
        block = (prefix - 1) // size
        self.start_from(block * size)
        stored = writer.input_digest(block)
        if stored is None or self.first is None:
            return
        # The digest covers the whole block as fed: read its batches, then hand them on
        # (they are committed, so the capture skips them).
        read = [self.first]
        expected = int(counts[block])
        seen = len(self.first)
        while seen < expected:
            more = next(self.batches, None)
            if more is None:
                break
            read.append(more)
            seen += len(more)
        inputs = {
            name: np.concatenate([np.asarray(b.inputs[name]) for b in read], axis=0)
            for name in self.first.inputs
        }
        self.batches = itertools.chain(read[1:], self.batches)
        if input_digest(inputs) != stored or seen != expected:
            first, stop = self.start, self.start + expected
            raise ResumeMismatchError(
                f"cannot resume {writer.location.url!r}: the data's samples {first}-{stop - 1} "
                f"differ from those the run committed (input digest of block {block}); resume "
                "with the data the run was captured on, or pass overwrite=True (--overwrite)"
            )


def _pending(
    first: Batch,
    rest: Iterator[Batch],
    start: int,
    committed: np.ndarray,
    block_size: int,
    bar: _Progress,
    check: Any = None,
    *,
    checked_first: bool = False,
) -> Iterator[tuple[int, Batch]]:
    """``(start, batch)`` of the blocks still to capture.

    A resume continues after the first gap, but a run captured in parallel (Dask) may have
    committed blocks past it: those are skipped, never rewritten — rewriting a committed
    chunk would put committed samples at risk if the process died mid-write.
    """
    position = start
    for index, batch in enumerate(itertools.chain([first], rest)):
        block = position // block_size
        if block < len(committed) and committed[block] >= position % block_size + len(batch):
            bar.update(len(batch), 0)
        else:
            if check is not None and (index or not checked_first):
                check(position, batch.inputs)  # a new run's first block was checked already
            yield position, batch
        position += len(batch)


class _Finish:
    """How a capture ends: publish a run written beside its path after the first commit
    (:class:`~tensortap.core.store.placement.Placement`), record non-finite inputs, and
    leave no run behind when nothing was committed."""

    def __init__(
        self, placement: NewRunPlacement | None, nonfinite: NonFiniteInputs, *, created: bool
    ):
        self.placement = placement
        self.nonfinite = nonfinite
        self.created = created
        self.resumed = placement is None and not created
        self.committed = False
        #: A failure of :meth:`after_commit`, raised in the capturing thread (the committer
        #: thread calls it outside the pipeline's own error handling).
        self.error: BaseException | None = None

    def after_commit(self, writer: RunWriter) -> None:
        """In the committer thread, after each commit, before the next block is written."""
        self.committed = True
        if self.placement is not None and not self.placement.published and self.error is None:
            try:
                writer.relocate(self.placement.publish())
            except Exception as err:  # noqa: BLE001 - handed to the capturing thread
                self.error = err

    def check_block(self, start: int, inputs: Any) -> None:
        """Before each block is computed: re-raise a failed publish, count non-finite inputs."""
        self.raise_error()
        self.nonfinite.check(start, inputs)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def extra(self, writer: RunWriter) -> dict[str, Any]:
        record = self.nonfinite.record()
        if record and not self.created:  # a resume adds to what the run recorded
            before = writer.stored_attr("nonfinite_inputs") or {}
            counts = record["nonfinite_inputs"]
            for name in ("values", "samples"):
                counts[name] += int(before.get(name, 0))
            if before.get("first_sample") is not None:
                counts["first_sample"] = before["first_sample"]
        return record

    def failed(self, writer: RunWriter) -> None:
        if self.placement is not None and not self.placement.published:
            self.placement.discard()  # the old run (if any) is untouched
            return
        if self.created and not self.committed and not writer.committed_counts().any():
            writer.remove()  # a refused capture leaves no run behind
            return
        writer.finish("failed", **self.extra(writer))


def _run_blocks(
    backend: Backend,
    model: Any,
    capture_graph: CaptureGraph,
    nodes: Any,
    writer: RunWriter,
    target: Any,
    first: Batch,
    rest: Iterator[Batch],
    start: int,
    total: int | None,
    progress: bool,
    depth: int,
    threads: int | None,
    gradients: bool,
    rule: BlockRule,
    ending: _Finish,
    attributions: AttributionSpec | None = None,
) -> None:
    bar = _Progress(total, start, progress)
    blocks = _pending(
        first,
        rest,
        start,
        writer.committed_counts(),
        writer.block_size,
        bar,
        ending.check_block,
        checked_first=not ending.resumed,
    )

    def on_committed(samples: int, nbytes: int) -> None:
        ending.after_commit(writer)
        bar.update(samples, nbytes)

    try:
        capture_blocks(
            backend,
            model,
            capture_graph,
            nodes,
            writer,
            target,
            blocks,
            gradients=gradients,
            depth=depth,
            threads=threads,
            on_first=array_creator(writer, capture_graph, nodes, total),
            on_committed=on_committed,
            rule=rule,
            total=total,
            attributions=attributions,
        )
        ending.raise_error()
    except BaseException:
        bar.close()
        try:
            ending.failed(writer)
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    bar.close()
    writer.finish("complete", **ending.extra(writer))
    ending.nonfinite.warn()
