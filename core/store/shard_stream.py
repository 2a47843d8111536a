"""One shard written batch by batch, published whole at its block's end.

A storage block holds several compute batches (:mod:`tensortap.core.block_size`); writing a
block's shards only once all its batches exist kept the whole block in memory and left the
disk idle while the first batches were computed (W1: two 855 MB batches a block, issue 12).
:class:`ShardStream` instead appends each batch's inner chunks (values, then their CRC-32C,
as :func:`~tensortap.core.store.whole_chunks` writes a whole shard) to a temporary file as
the batch arrives, and :meth:`ShardStream.finish` appends the shard index and renames the
file to the chunk's key.  So the shard's object appears whole or not at all, exactly like a
shard written in one go, and the file is byte-identical to it (tests/test_store_stream.py).
A ``kill -9`` mid-block leaves only the temporary ``*.partial`` file, which no reader opens
(its block is not committed either) and a resume deletes (:mod:`~tensortap.core.store.leftovers`).

With ``O_DIRECT`` the file is written through this thread's aligned bounce buffer
(:mod:`~tensortap.core.store.direct_io`); the unaligned end of one batch's bytes is kept
(under 4 KiB) and written ahead of the next batch's, so every write stays aligned.  Rows
that do not fill an inner chunk (pieces of any length: a backend's grouped call runs many
batches at once) are kept until the next append fills it, or padded at the block's end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tensortap.core.store.checksums import CHECKSUM_BYTES, crc32c_trailer
from tensortap.core.store.direct_io import _ALIGN, _bounce, _write_all, temporary_name

__all__ = ["ShardStream"]

#: Index entry of an inner chunk that holds no data (zarr's sharding codec reads the fill
#: value for it): rows past the end of a run whose data ended inside the block.
_EMPTY = np.uint64(2**64 - 1)


class ShardStream:
    """Appends a shard's inner chunks as batches arrive; :meth:`finish` publishes it.

    Parameters
    ----------
    path : Path
        The chunk's file (its folder exists).
    inner_rows : int
        Rows of one inner chunk.
    inner_count : int
        Inner chunks of the whole shard (its index's length).
    row_shape : tuple of int
        Shape of one row (sample) without the first axis.
    dtype : numpy dtype
        Stored dtype (values are converted to it).
    fill_value : scalar
        Pads a short last inner chunk, as zarr pads it.
    direct : bool
        Write with ``O_DIRECT`` (falls back to the page cache where refused).
    """

    def __init__(
        self,
        path: Path,
        *,
        inner_rows: int,
        inner_count: int,
        row_shape: tuple[int, ...],
        dtype: np.dtype[Any],
        fill_value: Any,
        direct: bool,
    ) -> None:
        self.path = path
        self.inner_rows = inner_rows
        self.inner_count = inner_count
        self.row_shape = row_shape
        self.dtype = dtype
        self.fill_value = fill_value
        self._inner_bytes = inner_rows * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        self._tmp = Path(temporary_name(path))
        self.direct = direct
        self._fd = self._open(direct)
        self._pending = b""  # the unaligned end of what was appended so far
        self._carry: np.ndarray | None = None  # rows short of a whole inner chunk
        self._written = 0  # inner chunks appended

    def _open(self, direct: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if direct:
            try:
                return os.open(self._tmp, flags | os.O_DIRECT, 0o644)
            except OSError:  # EINVAL: no O_DIRECT on this file system
                self._tmp.unlink(missing_ok=True)
                self.direct = False
        return os.open(self._tmp, flags, 0o644)

    def append(self, values: np.ndarray) -> None:
        """Append the next rows, any number: whole inner chunks are written now, the rows
        after the last whole one are kept for the next append or :meth:`finish`."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if self._carry is not None:  # first complete the kept rows' inner chunk
            need = self.inner_rows - len(self._carry)
            head = np.concatenate([self._carry, values[:need]])
            self._carry = None
            if len(head) < self.inner_rows:
                self._carry = head
                return
            self._write_chunks(head)
            values = values[need:]
        whole = len(values) - len(values) % self.inner_rows
        if whole < len(values):
            self._carry = values[whole:].copy()
        if whole:
            self._write_chunks(values[:whole])

    def _write_chunks(self, values: np.ndarray) -> None:
        """Write whole inner chunks (values, then each one's CRC-32C)."""
        n = len(values) // self.inner_rows
        if self._written + n > self.inner_count:
            raise ValueError(f"{self.path}: more rows than the shard holds")
        chunks = values.reshape(n, -1).view(np.uint8)
        bounce = np.frombuffer(_bounce(), np.uint8)
        try:
            used = len(self._pending)
            bounce[:used] = np.frombuffer(self._pending, np.uint8)
            for i in range(n):
                used = self._put(bounce, used, chunks[i])
                trailer = np.frombuffer(crc32c_trailer(chunks[i]), np.uint8)
                used = self._put(bounce, used, trailer)
            aligned = used - used % _ALIGN if self.direct else used
            self._flush(bounce, aligned)
            self._pending = bounce[aligned:used].tobytes()
        finally:
            del bounce
        self._written += n

    def _put(self, bounce: np.ndarray, used: int, data: np.ndarray) -> int:
        """Copy ``data`` into ``bounce`` after ``used`` bytes, writing it out when full
        (its size is a multiple of the alignment); returns the bytes now in it."""
        offset = 0
        while offset < len(data):
            n = min(len(bounce) - used, len(data) - offset)
            # NumPy copies without the GIL (the model's thread keeps running).
            np.copyto(bounce[used : used + n], data[offset : offset + n])
            used, offset = used + n, offset + n
            if used == len(bounce):
                self._flush(bounce, used)
                used = 0
        return used

    def _flush(self, bounce: np.ndarray, n: int) -> None:
        view = memoryview(bounce.data)[:n]
        try:
            written = 0
            while written < n:
                written += os.write(self._fd, view[written:])
        finally:
            view.release()

    def finish(self) -> None:
        """Append the rows still kept (the data ended inside the block: padded with the
        fill value, as zarr pads them), the index (inner chunks not appended are empty) and
        its CRC-32C, and rename the file to the chunk's key: the shard is now whole."""
        if self._carry is not None:
            padded = np.full((self.inner_rows, *self.row_shape), self.fill_value, self.dtype)
            padded[: len(self._carry)] = self._carry
            self._carry = None
            try:
                self._write_chunks(padded)
            except BaseException:
                self.abort()
                raise
        index = np.full((self.inner_count, 2), _EMPTY, "<u8")
        inner = self._inner_bytes + CHECKSUM_BYTES
        index[: self._written, 0] = np.arange(self._written, dtype=np.uint64) * inner
        index[: self._written, 1] = inner
        index_bytes = index.reshape(-1).view(np.uint8).tobytes()
        tail = self._pending + index_bytes + crc32c_trailer(np.frombuffer(index_bytes, np.uint8))
        try:
            if self.direct:  # the tail is not aligned: written through the page cache
                import fcntl

                flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            _write_all(self._fd, memoryview(tail))
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        self._tmp.replace(self.path)

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)
