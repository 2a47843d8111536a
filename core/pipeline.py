"""Overlap computing and writing: a bounded queue in front of a writer thread.

The engine computes batch *k+1* while this pipeline writes batch *k*: one committer thread
takes the computed pieces of a block (compute batches, in sample order) from a queue of
``depth`` slots and writes each as it arrives (issue 12).  Each large uncompressed tensor
of the block is a shard streamed to a temporary file inner chunk by inner chunk
(:class:`~tensortap.core.store.shard_stream.ShardStream`), so the disk works while the
model computes the block's next batch and memory holds a batch or two, not the block; the
small arrays (root coordinates, inputs and outputs, compressed or small tensors) and each
batch's statistics (a few numbers per channel) are gathered and written when the block's
last batch arrives.  Then every shard is published (renamed whole), the statistics of every
layer are written together (four objects a block, core/store/run_stats.py), and only then
is the block committed.  Per batch, a small thread pool computes each layer's statistics
and dtype narrowing (both release the GIL) and hands its appends to a pool of I/O threads.

A new run's first block also fixes every layer's histogram edges from its values
(:func:`~tensortap.core.stats.edges_of_ranges` of each batch's finite range, found as the
batch arrives): its batches' activations are kept until its end, as before, while their bytes
are already streamed to disk.  Blocks are committed in order, so committed samples always form
a prefix.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensortap.core.backend import BatchResult
from tensortap.core.graph import CaptureNode
from tensortap.core.stats import (
    BlockStats,
    block_stats,
    block_stats_from_partials,
    edges_of_ranges,
    merge_stats,
    to_channels_last,
    value_range,
)
from tensortap.core.store import layout
from tensortap.core.store.shard_stream import ShardStream
from tensortap.core.store.writer import RunWriter

__all__ = ["Block", "WritePipeline"]


@dataclass(frozen=True, slots=True)
class Block:
    """Computed samples of one block waiting to be written: a compute batch, or a whole
    block (``stop`` at most the block's end)."""

    start: int
    result: BatchResult
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    predictions: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.result.outputs.values())))


_STOP = object()
#: Threads writing layers concurrently (each waits on the store most of the time).
_IO_THREADS = 4


def _join(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray(parts[0]) if len(parts) == 1 else np.concatenate(parts, axis=0)


def _join_optional(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    if not parts or any(p is None for p in parts):
        return None
    return _join([p for p in parts if p is not None])


class _OpenBlock:
    """The block being written: its shard streams, what is written at its end, and the
    statistics of its batches so far."""

    def __init__(self, index: int, start: int, layers: Sequence[str]) -> None:
        self.index, self.start, self.stop = index, start, start
        self.streams: dict[str, ShardStream] = {}
        #: Tensors written at the end, by array path: their batches in order.
        self.rest: dict[str, list[np.ndarray]] = {}
        self.stats: dict[str, list[BlockStats]] = {key: [] for key in layers}
        #: Full-precision activations kept until the block's end (the first block of a new
        #: run: its values fix the histogram edges), by layer.
        self.held: dict[str, list[np.ndarray]] = {key: [] for key in layers}
        #: The finite range of each held activation, found as it arrived (while in cache),
        #: so the edges need no pass over the held block at its end.
        self.ranges: dict[str, list[tuple[float, float] | None]] = {key: [] for key in layers}
        self.pieces: list[Block] = []  # root arrays of each batch (tensors dropped)
        self.nbytes = 0

    def abort(self) -> None:
        for stream in self.streams.values():
            stream.abort()
        self.streams = {}


class WritePipeline:
    """Writes and commits blocks in the background, batch by batch.

    Parameters
    ----------
    writer : RunWriter
        Where blocks go (its block size is decided).
    nodes : sequence of CaptureNode
        The captured nodes (for dims and channel axes).
    depth : int
        Computed batches that may wait in the queue.
    threads : int, optional
        Layer writers per batch (default: the number of CPUs, at most 4).
    on_committed : callable, optional
        ``(n_samples, n_bytes)`` after each commit (progress bar).
    prepare : callable, optional
        Called with the first piece in the writer thread before it is written (creating the
        run's arrays there lets the caller compute the next batch meanwhile).
    """

    def __init__(
        self,
        writer: RunWriter,
        nodes: Sequence[CaptureNode],
        *,
        depth: int = 1,
        threads: int | None = None,
        on_committed: Callable[[int, int], None] | None = None,
        prepare: Callable[[Block], None] | None = None,
    ) -> None:
        self.writer = writer
        self._prepare = prepare
        self.nodes = {node.key: node for node in nodes}
        self.on_committed = on_committed
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._pool = ThreadPoolExecutor(
            max_workers=threads or min(4, os.cpu_count() or 1), thread_name_prefix="tt-stats"
        )
        # Writes mostly wait on the store (the disk, the network): more of them than CPUs.
        self._io = ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="tt-write")
        self._error: BaseException | None = None
        self._open: _OpenBlock | None = None
        #: Whether :meth:`close` publishes and commits the block still open (``False`` after
        #: an error of the producer: its block lacks batches).
        self._complete_open = True
        self._thread = threading.Thread(target=self._loop, name="tt-commit", daemon=True)
        self._thread.start()

    def submit(self, block: Block) -> None:
        """Queue a computed piece, waiting while the queue is full; re-raises a writer
        failure.  Pieces come in sample order; a piece of another block than the open
        one ends it (blocks skipped on resume, the data's end)."""
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(block, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self, *, complete: bool = True) -> None:
        """Write everything queued, stop the threads, and re-raise a writer failure.

        ``complete=False`` (the producer failed): the block still open is dropped, not
        committed, since its remaining batches will never come."""
        self._complete_open = complete
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                if self._error is not None:
                    break
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._io.shutdown(wait=True)
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop without raising (the caller is already handling an error)."""
        self._error = self._error or RuntimeError("aborted")
        self._drain()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._io.shutdown(wait=True)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP or self._error is not None:
                    break
                assert isinstance(item, Block)
                self._take(item)
            if self._open is not None and self._error is None and self._complete_open:
                self._commit(self._open)
        except BaseException as err:  # noqa: BLE001 - handed to the producer thread
            self._error = err
            self._drain()
        finally:
            if self._open is not None:
                self._open.abort()  # unpublished shards: only their temporary files go
                self._open = None

    def _take(self, piece: Block) -> None:
        """Write one piece, ending the open block first when the piece is another's, and
        committing the piece's block when the piece completes it."""
        size = self.writer.block_size
        index = piece.start // size
        if self._open is not None and self._open.index != index:
            self._commit(self._open)
        if self._prepare is not None:
            self._prepare(piece)
            self._prepare = None
        # Resizing here, between batches, means no write is ever in flight meanwhile.
        self.writer.ensure_capacity(piece.start + len(piece))
        if self._open is None:
            self._open = self._begin(index)
        self._write_piece(self._open, piece)
        if self._open.stop % size == 0:
            self._commit(self._open)

    def _commit(self, block: _OpenBlock) -> None:
        self._open = block  # aborted by the loop if publishing fails
        nbytes = self._finish(block)
        # The commit record is written last: only now does the block count.
        self.writer.commit(block.start, block.stop - block.start)
        self._open = None
        if self.on_committed is not None:
            self.on_committed(block.stop - block.start, nbytes)

    # ------------------------------------------------------------------ one block
    def _begin(self, index: int) -> _OpenBlock:
        """Open block ``index``: a shard stream for each tensor in a directly written
        shard."""
        w = self.writer
        paths = []
        for key in w.settings.layers:
            base = layout.layer_path(key)
            paths.append(f"{base}/{layout.ACTIVATION}")
            if w.settings.gradients:
                paths.append(f"{base}/{layout.GRADIENT}")
        block = _OpenBlock(index, index * w.block_size, w.settings.layers)
        try:
            for path in paths:
                stream = w.open_stream(path, index)
                if stream is not None:
                    block.streams[path] = stream
                else:
                    block.rest[path] = []
        except BaseException:
            block.abort()
            raise
        return block

    def _write_piece(self, block: _OpenBlock, piece: Block) -> None:
        if piece.start != block.stop:
            raise ValueError(f"samples {block.stop}:{piece.start} of block {block.index} missing")
        edges_known = bool(self.writer.edges)
        futures = [
            self._pool.submit(self._layer_piece, block, key, piece, edges_known)
            for key in self.writer.settings.layers
        ]
        # Every append ends before the next batch, a commit or an error report, also when
        # another layer failed: none may still run afterwards.
        wait(futures)
        writes = [w for f in futures if f.exception() is None for w in f.result()]
        wait(writes)
        for future in futures:
            future.result()  # re-raises the first failure
        for write in writes:
            write.result()
        result = piece.result
        # The root arrays (small) are written at the block's end; the tensors are gone.
        block.pieces.append(
            Block(
                piece.start,
                BatchResult(
                    outputs=result.outputs,
                    activations={},
                    gradients={},
                    target_classes=result.target_classes,
                    target_values=None,
                    partial_stats=None,
                    predictions=result.predictions,
                    attributions=result.attributions,
                ),
                piece.inputs,
                piece.labels,
                piece.predictions,
            )
        )
        block.stop = piece.start + len(piece)

    def _layer_piece(
        self, block: _OpenBlock, key: str, piece: Block, edges_known: bool
    ) -> list[Future[None]]:
        """One layer's share of a piece: its statistics (or its activation kept for the
        edges) and its tensors' appends, handed to the I/O threads."""
        w = self.writer
        result = piece.result
        activation = np.asarray(result.activations[key])
        if edges_known:
            partials = (result.partial_stats or {}).get(key)
            block.stats[key].append(self._stats(key, activation, partials))
        else:
            block.held[key].append(activation)
            block.ranges[key].append(value_range(activation))
        gradient = result.gradients.get(key) if w.settings.gradients else None
        stored = np.dtype(w.settings.dtype) if w.settings.dtype else None
        base = layout.layer_path(key)
        writes = []
        for name, value in ((layout.ACTIVATION, activation), (layout.GRADIENT, gradient)):
            if value is None:
                continue
            path = f"{base}/{name}"
            stream = block.streams.get(path)
            if stream is None:
                block.rest[path].append(np.asarray(value))
                continue
            value = np.asarray(value)
            if stored is not None and value.dtype != stored:
                value = value.astype(stored)
            block.nbytes += value.nbytes  # one thread per layer: no race on distinct keys
            writes.append(self._io.submit(stream.append, value))
        return writes

    def _stats(self, key: str, activation: np.ndarray, partials: Any) -> BlockStats:
        node = self.nodes[key]
        dims = node.dims if len(node.dims) == activation.ndim - 1 else ()
        channel = node.channel_dim if dims else None
        x3 = to_channels_last(activation, dims, channel)
        edges = self.writer.edges[key]
        if partials is not None:
            # Reduced by the backend's compiled step: no NumPy pass over the activation.
            return block_stats_from_partials(partials, edges, x3.shape)
        return block_stats(x3, edges)

    def _finish(self, block: _OpenBlock) -> int:
        """Publish the block's shards and write the rest of it (root arrays, gathered
        tensors, statistics) — everything but its commit.  Returns the bytes written."""
        w = self.writer
        keys = w.settings.layers
        if not w.edges:  # the run's first block: its values fix the edges
            w.set_edges({key: edges_of_ranges(block.ranges[key]) for key in keys})
        # The first block's statistics wait for its edges: they are reduced now, while the
        # shards are finished and the root arrays written (the CNN of bench_small_layers
        # is one block, so all of its statistics are this end's work).
        held: list[Future[list[BlockStats]]] = []
        if any(block.held[k] for k in keys):
            held = [
                self._pool.submit(lambda k: [self._stats(k, a, None) for a in block.held[k]], key)
                for key in keys
            ]
        start = block.start
        finishing: list[Future[Any]] = [
            self._io.submit(stream.finish) for stream in block.streams.values()
        ]
        gathered: list[Future[Any]] = []
        for key in keys:
            base = layout.layer_path(key)
            act = block.rest.get(f"{base}/{layout.ACTIVATION}")
            grad = block.rest.get(f"{base}/{layout.GRADIENT}")
            if act or grad:
                gathered.append(
                    self._io.submit(
                        w.write_layer,
                        key,
                        start,
                        _join(act) if act else None,
                        _join(grad) if grad else None,
                    )
                )
        pieces = block.pieces
        try:
            nbytes: int = w.write_root(
                start,
                inputs={n: _join([p.inputs[n] for p in pieces]) for n in pieces[0].inputs},
                outputs={
                    n: _join([p.result.outputs[n] for p in pieces])
                    for n in pieces[0].result.outputs
                },
                labels=_join_optional([p.labels for p in pieces]),
                predictions=_join_optional([p.predictions for p in pieces]),
                target_classes=_join_optional([p.result.target_classes for p in pieces]),
                attributions=(
                    {
                        m: _join([p.result.attributions[m] for p in pieces])
                        for m in pieces[0].result.attributions
                    }
                    if pieces[0].result.attributions
                    else None
                ),
            )
            if held:
                wait(held)
                for key, future in zip(keys, held, strict=True):
                    block.stats[key] = future.result() + block.stats[key]
                block.held = {key: [] for key in keys}
                block.ranges = {key: [] for key in keys}
            w.write_stats(start, {key: merge_stats(block.stats[key]) for key in keys})
        finally:
            wait([*held, *finishing, *gathered])  # none may still run after an error
        for done in [*finishing, *gathered]:
            done.result()  # re-raises the first failure
        block.streams = {}  # published
        return nbytes + block.nbytes + sum(int(f.result() or 0) for f in gathered)

    def _write(self, block: Block) -> int:
        """Write one whole block without committing it (tests: a block written, not yet
        committed)."""
        self.writer.ensure_capacity(block.start + len(block))
        opened = self._begin(block.start // self.writer.block_size)
        try:
            self._write_piece(opened, block)
            return self._finish(opened)
        except BaseException:
            opened.abort()
            raise
