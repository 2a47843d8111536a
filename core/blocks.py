"""The compute-and-write loop shared by :func:`tensortap.capture` and the Dask workers.

One session runs the model block by block while a :class:`~tensortap.core.pipeline.WritePipeline`
writes the previous block and commits it (docs/design.md §4).  What differs between callers stays
with them: which blocks to run, who creates the arrays (:func:`array_creator`), and who ends
the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from tensortap.core.backend import Backend, BatchResult, CaptureSession
from tensortap.core.batch_groups import BatchGroups
from tensortap.core.block_parts import BlockParts
from tensortap.core.block_size import BlockRule, choose_block_size
from tensortap.core.data import Batch
from tensortap.core.graph import CaptureGraph, CaptureNode
from tensortap.core.pipeline import Block, WritePipeline
from tensortap.core.store.writer import RunWriter
from tensortap.core.targets import Target

__all__ = ["OnFirst", "array_creator", "capture_blocks", "labels_for_store", "predictions_of"]

#: Called with ``(session, result, batch, stored_labels, predictions)`` for the first block.
OnFirst = Callable[[CaptureSession, BatchResult, Batch, Any, Any], None]


def n_classes(graph: CaptureGraph) -> int | None:
    """Classes of a classification model's first output (``None`` otherwise)."""
    if not graph.outputs:
        return None
    shape = graph.outputs[0].shape
    return shape[0] if len(shape) == 1 and shape[0] and shape[0] > 1 else None


def predictions_of(graph: CaptureGraph, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Top-1 class per sample, for classification models."""
    if n_classes(graph) is None:
        return None
    first = np.asarray(outputs[graph.outputs[0].name])
    return first.argmax(axis=-1).astype(np.int64) if first.ndim == 2 else None


def labels_for_store(labels: np.ndarray | None) -> np.ndarray | None:
    """Labels as stored: one class per sample (one-hot rows become their class)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        classes: np.ndarray = labels.argmax(axis=1)
        return classes.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        return labels[:, 0]
    return labels


def array_creator(
    writer: RunWriter, graph: CaptureGraph, nodes: Sequence[CaptureNode], total: int | None
) -> OnFirst:
    """The first-block hook of the process that owns the run's root.

    It records what the session says about the target (``score``) and, for a new run,
    creates every array from the first batch: shapes and dtypes from its values, capacity
    ``total`` (or room to grow); the write pipeline fixes each layer's histogram edges from
    the whole first block's activations when that block ends.
    It runs in the write pipeline's thread (see :func:`capture_blocks`).
    """

    def create(
        session: CaptureSession, result: BatchResult, first: Batch, labels: Any, predictions: Any
    ) -> None:
        if session.info:
            score = session.info.get("score")
            if writer.settings.target.startswith("callable"):  # not a class score
                score = f"the value of the target {writer.settings.target} (outputs, labels)"
            writer.set_status("capturing", info=dict(session.info), score=score)
        elif not writer.has_arrays:
            writer.set_status("capturing")  # stores the block size before any array exists
        if writer.has_arrays:  # a resumed run
            return
        writer.create_arrays(
            capacity=total or 4 * len(first),
            nodes=nodes,
            activations=result.activations,
            outputs=result.outputs,
            output_specs=graph.outputs,
            inputs=first.inputs,
            input_specs=graph.inputs,
            labels=labels,
            predictions=predictions is not None,
            # Fixed by the whole first block at its end (core/pipeline.py): its batches
            # are written as they come, before the block is complete.
            edges=None,
            target_classes=result.target_classes is not None,
            # Several targets: gradients (and target classes) carry a ``target`` axis.
            gradient_targets=(
                result.target_classes.shape[1]
                if result.target_classes is not None and result.target_classes.ndim == 2
                else 0
            ),
            attributions=result.attributions,
        )

    return create


def _sample_bytes(
    writer: RunWriter, result: BatchResult, inputs: dict[str, np.ndarray]
) -> tuple[int, int]:
    """Bytes one sample takes in the median stored array, and over all of a block's arrays.

    The median, not the largest: a block sized for the largest array leaves every small
    layer's chunk tiny (MobileNetV2's 52 layers, one batch a block: ~60 objects per 32
    samples), while the large arrays of a big block are sharded into ~1 MiB inner chunks.
    """
    stored = np.dtype(writer.settings.dtype).itemsize if writer.settings.dtype else None
    n = max(1, len(next(iter(result.outputs.values()))))
    sizes, total = [], 0
    tensors = [*result.activations.values(), *result.gradients.values()]
    for value in tensors:
        value = np.asarray(value)
        per_sample = value.nbytes // n
        sizes.append(per_sample // value.itemsize * (stored or value.itemsize))
        total += per_sample
    for value in [*result.outputs.values(), *inputs.values()]:
        per_sample = np.asarray(value).nbytes // n
        sizes.append(per_sample)
        total += per_sample
    return int(np.median(sizes)) if sizes else 0, total


class _BlockSizer:
    """Decides a new run's block size from its first batches (:func:`choose_block_size`):
    the first batch gives the bytes, the second (tracing done) the time a batch takes."""

    def __init__(self, writer: RunWriter, rule: BlockRule, total: int | None) -> None:
        self.writer, self.rule, self.total = writer, rule, total

    def _choose(self, parts: BlockParts, seconds: float | None) -> int:
        median, per_sample = _sample_bytes(self.writer, parts.first_result, parts.first_inputs)
        return choose_block_size(
            self.rule,
            batch_size=self.writer.batch_size,
            chunk_sample_bytes=median,
            block_sample_bytes=per_sample,
            seconds_per_batch=seconds,
            total=self.total,
        )

    def observe(self, parts: BlockParts, seconds: float) -> int | None:
        """The block size once it can be decided, else ``None`` (compute another batch)."""
        batch = self.writer.batch_size
        if len(parts) % batch:  # a short batch: the data ended
            return self.at_end(parts)
        if parts.batches == 1:
            size = self._choose(parts, None)
            # The first batch's time includes tracing the step, so it over-estimates a
            # batch's: when even it does not bound the block, the second batch's would not
            # either, and the block's writes can start now (issue 12).
            if size <= batch or self._choose(parts, seconds) == size:
                return size
            return None
        # Never fewer batches than the first block already holds.
        return max(self._choose(parts, seconds), parts.batches * batch)

    def at_end(self, parts: BlockParts) -> int:
        """The data ended before a decision: the block is what was seen (no padding)."""
        batch = self.writer.batch_size
        return min(self._choose(parts, None), -(-len(parts) // batch) * batch)


def capture_blocks(
    backend: Backend,
    model: Any,
    graph: CaptureGraph,
    nodes: Sequence[CaptureNode],
    writer: RunWriter,
    target: Target,
    batches: Iterator[tuple[int, Batch]],
    *,
    gradients: bool,
    depth: int,
    threads: int | None,
    on_first: OnFirst | None = None,
    on_committed: Callable[[int, int], None] | None = None,
    rule: BlockRule | None = None,
    total: int | None = None,
    max_blocks: int | None = None,
    attributions: Any = None,
) -> None:
    """Compute ``(start, batch)`` batches, gather them into blocks and write those; neither
    creates nor ends the run.

    Consecutive batches are gathered into the block they belong to (block *b* holds samples
    ``[b·S, (b+1)·S)`` for the run's block size *S*); a gap in the starts (blocks skipped)
    ends a block.  A new run's block size is decided here from its first batches by
    ``rule`` (and ``total``, the samples the run will hold) and stored in the writer before
    the first block is written.  ``max_blocks`` stops after that many blocks (the batches
    after them are not computed).

    Blocks computed before an error are still written and committed (they are good data);
    then the error propagates.  With ``supports_partial_stats`` the session reduces the
    statistics in its compiled step once the run's histogram edges are known.
    ``attributions`` (an :class:`~tensortap.core.capture_attributions.AttributionSpec`)
    has the session compute input attributions in the same step.
    """
    pipeline: WritePipeline | None = None
    sizer = None if writer.block_size_decided else _BlockSizer(writer, rule or BlockRule(), total)
    block_size = writer.block_size if sizer is None else None
    emitted = 0
    try:
        options: dict[str, Any] = {}
        if attributions is not None:
            options["attributions"] = attributions
        with backend.session(
            model, nodes, gradients=gradients, target=target, **options
        ) as session:
            partial = bool(getattr(backend, "supports_partial_stats", False))
            edges_set = False
            if partial and writer.edges:
                session.set_histogram_edges(writer.edges)
                edges_set = True

            def start_pipeline() -> WritePipeline:
                prepare: Callable[[Block], None] | None = None
                if on_first is not None:
                    # Created by the writer thread, before it writes the first batch,
                    # while this thread computes the next one.
                    def prepare(first: Block) -> None:
                        on_first(
                            session,
                            first.result,
                            Batch(first.inputs, first.labels),
                            first.labels,
                            first.predictions,
                        )

                return WritePipeline(
                    writer,
                    nodes,
                    depth=depth,
                    threads=threads,
                    on_committed=on_committed,
                    prepare=prepare,
                )

            head: BlockParts | None = None  # batches computed before the block size is known
            stop: int | None = None  # one past the last sample handed on
            open_block = False  # a block has batches handed on and is not complete
            batch_size = writer.batch_size
            per_call = session.batches_per_call(batch_size)

            def group_limit(start: int) -> int:
                """Batches one call may run: one until the block size is known (the sizer
                times single batches), then as many as fit before the block's end."""
                if block_size is None or per_call <= 1:
                    return 1
                return min(per_call, (block_size - start % block_size) // batch_size)

            groups = BatchGroups(batches, batch_size)
            while (group := groups.next_group(group_limit)) is not None:
                start, batch = group
                if head is not None and start != head.stop:  # a gap before the size is known
                    assert sizer is not None
                    writer.set_block_size(sizer.at_end(head))
                    block_size = writer.block_size
                    pipeline = start_pipeline()
                    for held in head.pieces:
                        pipeline.submit(held)
                    head, open_block = None, True
                if stop is not None and start != stop and open_block:  # blocks were skipped
                    emitted += 1
                    open_block = False
                    if max_blocks is not None and emitted >= max_blocks:
                        break
                n = len(batch)
                classes = target.batch_classes(start, start + n, batch.labels)
                began = time.perf_counter()
                extra = {"start": start} if attributions is not None else {}
                if per_call > 1:
                    result = session.run_batches(
                        batch.inputs, batch_size, classes=classes, labels=batch.labels
                    )
                else:
                    result = session.run(
                        batch.inputs, classes=classes, labels=batch.labels, **extra
                    )
                seconds = time.perf_counter() - began
                piece = Block(
                    start,
                    result,
                    batch.inputs,
                    labels_for_store(batch.labels),
                    (
                        result.predictions  # the backend's own argmax: the gradients' classes
                        if result.predictions is not None
                        else predictions_of(graph, result.outputs)
                    ),
                )
                del result  # the piece owns the memory now
                stop = start + n
                if block_size is None:
                    assert sizer is not None
                    if head is None:
                        head = BlockParts(start)
                    head.add(piece.result, piece.inputs, piece.labels, piece.predictions)
                    block_size = sizer.observe(head, seconds)
                    if block_size is None:
                        continue
                    writer.set_block_size(block_size)
                    pipeline = start_pipeline()
                    for held in head.pieces:
                        pipeline.submit(held)
                    head = None
                else:
                    if pipeline is None:
                        pipeline = start_pipeline()
                    pipeline.submit(piece)
                del piece
                open_block = True
                if stop % block_size == 0:
                    emitted += 1
                    open_block = False
                    if max_blocks is not None and emitted >= max_blocks:
                        break
                if partial and not edges_set and writer.edges:  # the first block fixed them
                    session.set_histogram_edges(writer.edges)
                    edges_set = True
            if head is not None:
                assert sizer is not None
                writer.set_block_size(sizer.at_end(head))
                pipeline = start_pipeline()
                for held in head.pieces:
                    pipeline.submit(held)
                head = None
            if pipeline is not None:
                pipeline.close()
    except BaseException:
        if pipeline is not None:
            try:
                # Blocks complete before the error are committed (good data); the block
                # still open lacks batches and is dropped.
                pipeline.close(complete=False)
            except BaseException:  # noqa: BLE001 - the writer failed too; report the first error
                pipeline.abort()
        raise
