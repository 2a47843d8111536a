"""The compute-and-write loop shared by :func:`tensortap.capture` and the Dask workers.

One session runs the model block by block while a :class:`~tensortap.core.pipeline.WritePipeline`
writes the previous block and commits it (docs/design.md §4).  What differs between callers stays
with them: which blocks to run, who creates the arrays (:func:`array_creator`), and who ends
the run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tensortap.core.backend import Backend, BatchResult, CaptureSession
from tensortap.core.data import Batch
from tensortap.core.graph import CaptureGraph, CaptureNode
from tensortap.core.pipeline import Block, WritePipeline
from tensortap.core.stats import choose_edges
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
    creates every array from the first block: shapes and dtypes from its values, each
    layer's histogram edges from its activations, capacity ``total`` (or room to grow).
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
        if writer.has_arrays:  # a resumed run
            return
        keys = writer.settings.layers
        # Two passes over the whole first block (min, max): on as many threads as CPUs.
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1), "tt-edges") as pool:
            found = pool.map(lambda k: choose_edges(np.asarray(result.activations[k])), keys)
            edges = dict(zip(keys, found, strict=True))
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
            edges=edges,
            target_classes=result.target_classes is not None,
            # Several targets: gradients (and target classes) carry a ``target`` axis.
            gradient_targets=(
                result.target_classes.shape[1]
                if result.target_classes is not None and result.target_classes.ndim == 2
                else 0
            ),
        )

    return create


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
) -> None:
    """Compute ``(start, batch)`` blocks and write them; neither creates nor ends the run.

    Blocks computed before an error are still written and committed (they are good data);
    then the error propagates.  With ``supports_partial_stats`` the session reduces the
    statistics in its compiled step once the run's histogram edges are known.
    """
    pipeline: WritePipeline | None = None
    try:
        with backend.session(model, nodes, gradients=gradients, target=target) as session:
            partial = bool(getattr(backend, "supports_partial_stats", False))
            if partial and writer.has_arrays:
                session.set_histogram_edges(writer.edges)
            for start, batch in batches:
                n = len(batch)
                classes = target.batch_classes(start, start + n, batch.labels)
                result = session.run(batch.inputs, classes=classes, labels=batch.labels)
                labels = labels_for_store(batch.labels)
                predictions = (
                    result.predictions  # the backend's own argmax: the gradients' classes
                    if result.predictions is not None
                    else predictions_of(graph, result.outputs)
                )
                if pipeline is None:
                    prepare: Callable[[], None] | None = None
                    if on_first is not None:
                        if partial:  # the session needs the edges the first block fixes
                            on_first(session, result, batch, labels, predictions)
                            session.set_histogram_edges(writer.edges)
                        else:
                            # Created by the writer thread, before it writes this block,
                            # while this thread computes the next one.
                            prepare = functools.partial(
                                on_first, session, result, batch, labels, predictions
                            )
                    pipeline = WritePipeline(
                        writer,
                        nodes,
                        depth=depth,
                        threads=threads,
                        on_committed=on_committed,
                        prepare=prepare,
                    )
                    prepare = None  # the pipeline alone keeps block 0 alive until written
                pipeline.submit(Block(start, result, batch.inputs, labels, predictions))
                del result  # the pipeline owns the block's memory now
            if pipeline is not None:
                pipeline.close()
    except BaseException:
        if pipeline is not None:
            try:
                pipeline.close()
            except BaseException:  # noqa: BLE001 - the writer failed too; report the first error
                pipeline.abort()
        raise
