"""Overlap computing and writing: a bounded queue in front of a writer thread.

The engine computes block *k+1* while this pipeline writes block *k*: one committer thread
takes blocks from a queue of ``depth`` slots, fans the block's layers out to a small thread
pool for their statistics and dtype narrowing (both release the GIL), which hands each
layer's writes to a second pool of I/O threads and goes on with the next layer, so
computing statistics never waits on the disk; the committer writes every layer's statistics
together (four objects a block, core/store/run_stats.py), waits for every write, then
commits the block.  Memory is bounded by
``depth + 2`` blocks (one computing, ``depth`` queued, one writing) whatever the run
length.  Blocks are committed in order, so committed samples always form a prefix.
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
    to_channels_last,
)
from tensortap.core.store.writer import RunWriter

__all__ = ["Block", "WritePipeline"]


@dataclass(frozen=True, slots=True)
class Block:
    """One computed block waiting to be written."""

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


class WritePipeline:
    """Writes and commits blocks in the background.

    Parameters
    ----------
    writer : RunWriter
        Where blocks go.
    nodes : sequence of CaptureNode
        The captured nodes (for dims and channel axes).
    depth : int
        Blocks that may wait in the queue.
    threads : int, optional
        Layer writers per block (default: the number of CPUs, at most 4).
    on_committed : callable, optional
        ``(n_samples, n_bytes)`` after each commit (progress bar).
    prepare : callable, optional
        Called with the first block in the writer thread before it is written (creating the
        run's arrays there lets the caller compute the next block meanwhile).
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
        self._thread = threading.Thread(target=self._loop, name="tt-commit", daemon=True)
        self._thread.start()

    def submit(self, block: Block | Any) -> None:
        """Queue a block (or an object whose ``assemble()`` returns one, joined in the writer
        thread), waiting while the queue is full; re-raises a writer failure."""
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(block, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Write everything queued, stop the threads, and re-raise a writer failure."""
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
        while True:
            item = self._queue.get()
            if item is _STOP or self._error is not None:
                return
            try:
                if not isinstance(item, Block):  # batches of one block, joined here
                    item = item.assemble()  # type: ignore[attr-defined]
                assert isinstance(item, Block)
                if self._prepare is not None:
                    self._prepare(item)
                    self._prepare = None
                # Resizing here, between blocks, means no write is ever in flight meanwhile.
                self.writer.ensure_capacity(item.start + len(item))
                nbytes = self._write(item)
                # The commit record is written last: only now does the block count.
                self.writer.commit(item.start, len(item))
            except BaseException as err:  # noqa: BLE001 - handed to the producer thread
                self._error = err
                self._drain()
                return
            if self.on_committed is not None:
                self.on_committed(len(item), nbytes)

    def _write(self, block: Block) -> int:
        result = block.result
        futures = [
            self._pool.submit(self._write_layer, key, block.start, result)
            for key in self.writer.settings.layers
        ]
        try:
            nbytes: int = self.writer.write_root(
                block.start,
                inputs=block.inputs,
                outputs=result.outputs,
                labels=block.labels,
                predictions=block.predictions,
                target_classes=result.target_classes,
                attributions=result.attributions,
            )
        finally:
            # Every layer's writes end before the block is committed or an error reported,
            # also when another layer failed: none may still run afterwards.
            wait(futures)
            done = [f.result() for f in futures if f.exception() is None]
            writes = [write for _stats, write in done]
            try:
                if len(done) == len(futures):
                    keys = self.writer.settings.layers
                    self.writer.write_stats(
                        block.start,
                        {key: stats for key, (stats, _w) in zip(keys, done, strict=True)},
                    )
            finally:
                wait(writes)
        for future in futures + writes:
            future.result()  # re-raises the first failure
        return nbytes + sum(write.result() for write in writes)

    def _write_layer(
        self, key: str, start: int, result: BatchResult
    ) -> tuple[BlockStats, Future[int]]:
        node = self.nodes[key]
        activation = np.asarray(result.activations[key])
        gradient = result.gradients.get(key) if self.writer.settings.gradients else None
        dims = node.dims if len(node.dims) == activation.ndim - 1 else ()
        channel = node.channel_dim if dims else None
        x3 = to_channels_last(activation, dims, channel)
        edges = self.writer.edges[key]
        partials = (result.partial_stats or {}).get(key)
        if partials is not None:
            # Reduced by the backend's compiled step: no NumPy pass over the activation.
            stats = block_stats_from_partials(partials, edges, x3.shape)
        else:
            stats = block_stats(x3, edges)
        write = self._io.submit(
            self.writer.write_layer,
            key,
            start,
            activation,
            None if gradient is None else np.asarray(gradient),
        )
        return stats, write
