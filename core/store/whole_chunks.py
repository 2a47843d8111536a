"""Whole-chunk writes to local and in-memory runs that skip zarr's indexing machinery.

A capture writes every block of every array exactly once, as whole chunks.  Through
``array[selection] = value`` zarr spends about 1 ms of CPU per call on the selection, the
codec pipeline and the hand-offs to its event loop and thread pool: W1's 208 small
statistics chunks a block cost 0.26 CPU-s that way, 0.07 s written directly (2-CPU VM of
benchmarks/RESULTS.md).  For an array whose only codec is zarr's ``bytes`` codec (no
compression, no sharding, no transpose), optionally followed by the ``crc32c`` codec, the
stored chunk *is* the chunk's values in C order, little-endian, with a partial last chunk
padded by the fill value, then their 4-byte CRC-32C (:mod:`~tensortap.core.store.checksums`);
:class:`WholeChunks` writes exactly those bytes to the chunk's file, atomically (a temporary file renamed,
``O_DIRECT`` for large chunks as :class:`~tensortap.core.store.direct_io.DirectLocalStore`
does), in the calling thread.  An in-memory run's chunks are put into its
:class:`~zarr.storage.MemoryStore`'s dict the same way, as the very bytes zarr would store
(through zarr, each chunk was encoded and copied twice, in zarr's event loop: the in-memory
capture of the seed's CNN took longer than the same capture to disk).  Any other array,
selection or store goes through zarr.
A whole **shard** of such an array (zarr's ``sharding_indexed`` codec with inner chunks
encoded ``bytes`` + ``crc32c`` and an index encoded the same way at its end, what
:class:`~tensortap.core.store.writer.RunWriter` makes for large blocks) is written directly
too: each inner chunk's values and CRC-32C one after the other, then the index of
``(offset, nbytes)`` pairs (little-endian ``uint64``) and its CRC-32C.
tests/test_store_io.py checks the files are byte-identical to zarr's own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.storage import LocalStore, MemoryStore

from tensortap.core.errors import StorageError
from tensortap.core.store.checksums import CHECKSUM_BYTES, crc32c_trailer
from tensortap.core.store.direct_io import DirectLocalStore, write_file
from tensortap.core.store.shard_stream import ShardStream

__all__ = ["WholeChunks"]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What writing one array's chunks directly needs."""

    folder: Path
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    encode_key: Any
    checksum: bool = False
    #: Rows of a shard's inner chunks (``0``: the array is not sharded).
    inner_rows: int = 0
    #: The array's path in the store, ``""`` or ending in ``/`` (in-memory runs' keys).
    prefix: str = ""


class WholeChunks:
    """Writes whole chunks of uncompressed arrays straight to a local store's files.

    Parameters
    ----------
    store : zarr Store
        The run's store; a writable :class:`~zarr.storage.LocalStore` (``O_DIRECT``
        when it is a :class:`DirectLocalStore`) or :class:`~zarr.storage.MemoryStore` is
        written directly.
    """

    def __init__(self, store: Any) -> None:
        local = isinstance(store, LocalStore) and not store.read_only
        self._root: Path | None = Path(store.root) if local else None
        # Exactly zarr's MemoryStore (its GPU subclass converts buffers on the way in).
        memory = type(store) is MemoryStore and not store.read_only
        self._memory: dict[str, Any] | None = store._store_dict if memory else None
        self._store = store
        self._plans: dict[str, _Plan | None] = {}

    def write(self, array: zarr.Array[Any], selection: Any, value: Any) -> bool:
        """Write ``array[selection] = value`` directly when it is one whole chunk.

        ``selection`` is a slice of the first axis starting on a chunk boundary (the
        other axes whole), or an int for arrays with one entry per chunk on it.  Returns
        ``False``, having written nothing, when zarr has to do it.
        """
        plan = self._plan(array)
        if plan is None:
            return False
        # The shape is read each time: unknown-length captures resize the arrays.
        located = _locate(plan, int(array.shape[0]), selection, np.shape(value))
        if located is None:
            return False
        index, rows = located
        values = np.ascontiguousarray(value, dtype=plan.dtype)
        if plan.inner_rows and rows < plan.chunks[0]:
            return False  # a partial last shard: zarr writes its missing inner chunks
        if rows < plan.chunks[0]:  # the array's last chunk: padded as zarr pads it
            padded = np.full(plan.chunks, plan.fill_value, plan.dtype)
            padded[:rows] = values
            values = padded
        key = plan.encode_key((index, *(0,) * (len(plan.chunks) - 1)))
        if plan.inner_rows:
            raw, trailer = _shard_bytes(values, plan.inner_rows), b""
        else:
            raw = values.reshape(-1).view(np.uint8)
            trailer = crc32c_trailer(raw) if plan.checksum else b""
        if self._memory is not None:
            # A shard's bytes are a new array; a chunk's are the caller's: copied once.
            stored = (
                raw if plan.inner_rows else np.concatenate([raw, np.frombuffer(trailer, np.uint8)])
            )
            self._memory[plan.prefix + key] = default_buffer_prototype().buffer.from_array_like(
                stored
            )
            return True
        if "/" in key:  # zarr's default separator: a folder per chunk coordinate
            (plan.folder / key).parent.mkdir(parents=True, exist_ok=True)
        direct = isinstance(self._store, DirectLocalStore) and self._store._direct
        try:
            still_direct = write_file(plan.folder / key, raw.data, direct=direct, trailer=trailer)
        except FileNotFoundError as err:  # zarr would quietly recreate a partial run
            raise StorageError(
                f"cannot write {str(plan.folder)!r}: the run's folder vanished during the "
                "capture; capture again"
            ) from err
        if direct and not still_direct:
            self._store._direct = False  # the file system refused O_DIRECT: stop trying
        return True

    def open_stream(self, array: zarr.Array[Any], block: int) -> ShardStream | None:
        """A :class:`ShardStream` for shard ``block`` of ``array`` when it is written
        directly, else ``None`` (the block's values are then gathered and written at its
        end)."""
        plan = self._plan(array)
        if plan is None or not plan.inner_rows or self._memory is not None:
            return None
        key = plan.encode_key((block, *(0,) * (len(plan.chunks) - 1)))
        if "/" in key:
            (plan.folder / key).parent.mkdir(parents=True, exist_ok=True)
        direct = isinstance(self._store, DirectLocalStore) and self._store._direct
        try:
            return ShardStream(
                plan.folder / key,
                inner_rows=plan.inner_rows,
                inner_count=plan.chunks[0] // plan.inner_rows,
                row_shape=plan.chunks[1:],
                dtype=plan.dtype,
                fill_value=plan.fill_value,
                direct=direct,
            )
        except FileNotFoundError as err:
            raise StorageError(
                f"cannot write {str(plan.folder)!r}: the run's folder vanished during the "
                "capture; capture again"
            ) from err

    def _plan(self, array: zarr.Array[Any]) -> _Plan | None:
        path = array.path
        if path not in self._plans:
            self._plans[path] = self._make_plan(array)
        return self._plans[path]

    def _make_plan(self, array: zarr.Array[Any]) -> _Plan | None:
        direct = self._root is not None or self._memory is not None
        if not direct or array.metadata.zarr_format != 3 or sys.byteorder != "little":
            return None
        meta = array.metadata
        codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
        inner_rows = 0
        if len(codecs) == 1 and type(codecs[0]) is ShardingCodec:
            sharding = codecs[0]
            inner = tuple(sharding.chunk_shape)
            if (
                sharding.index_location != ShardingCodecIndexLocation.end
                or not _plain_with_crc(tuple(sharding.codecs))
                or not _plain_with_crc(tuple(sharding.index_codecs))
                or inner[1:] != tuple(array.shape[1:])
            ):
                return None
            inner_rows, checksum = int(inner[0]), False
        else:
            checksum = len(codecs) == 2 and type(codecs[1]) is Crc32cCodec
            if len(codecs) != 1 + checksum or not _little_bytes(codecs[0]):
                return None
        if not isinstance(meta.chunk_grid, RegularChunkGrid):
            return None
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biufc" or not dtype.isnative:
            return None
        chunks = tuple(meta.chunk_grid.chunk_shape)
        if not chunks or chunks[1:] != tuple(array.shape[1:]):  # only the first axis is split
            return None
        return _Plan(
            folder=(self._root or Path()) / array.path,
            chunks=chunks,
            dtype=dtype,
            fill_value=np.asarray(meta.fill_value, dtype=dtype),
            encode_key=meta.encode_chunk_key,
            checksum=checksum,
            inner_rows=inner_rows,
            prefix=f"{array.path}/" if array.path else "",
        )


def _little_bytes(codec: Any) -> bool:
    """Whether ``codec`` is zarr's ``bytes`` codec storing little-endian values."""
    if type(codec) is not BytesCodec:
        return False
    return codec.endian is None or codec.endian.value == "little"


def _plain_with_crc(codecs: tuple[Any, ...]) -> bool:
    """Whether a codec chain is ``bytes`` (little-endian) then ``crc32c``."""
    return len(codecs) == 2 and _little_bytes(codecs[0]) and type(codecs[1]) is Crc32cCodec


def _shard_bytes(values: np.ndarray, inner_rows: int) -> np.ndarray:
    """The stored bytes of a whole shard of ``values``: inner chunks of ``inner_rows``
    rows, each followed by its CRC-32C, then the index and its CRC-32C."""
    n_inner = len(values) // inner_rows
    rows = values.reshape(n_inner, -1).view(np.uint8)
    inner = rows.shape[1] + CHECKSUM_BYTES
    out = np.empty(n_inner * inner + 16 * n_inner + CHECKSUM_BYTES, np.uint8)
    body = out[: n_inner * inner].reshape(n_inner, inner)
    body[:, : rows.shape[1]] = rows  # NumPy copies without the GIL
    for i in range(n_inner):
        body[i, rows.shape[1] :] = np.frombuffer(crc32c_trailer(rows[i]), np.uint8)
    index = np.empty((n_inner, 2), "<u8")
    index[:, 0] = np.arange(n_inner, dtype=np.uint64) * inner
    index[:, 1] = inner
    index_bytes = index.reshape(-1).view(np.uint8)
    out[n_inner * inner : -CHECKSUM_BYTES] = index_bytes
    out[-CHECKSUM_BYTES:] = np.frombuffer(crc32c_trailer(index_bytes), np.uint8)
    return out


def _locate(
    plan: _Plan, length: int, selection: Any, value_shape: tuple[int, ...]
) -> tuple[int, int] | None:
    """``(chunk index, rows)`` when ``selection`` of an array of ``length`` rows covers one
    whole chunk, else ``None``."""
    step = plan.chunks[0]
    if isinstance(selection, int | np.integer) and step == 1:
        index, rows = int(selection), 1
        if not 0 <= index < length or value_shape != plan.chunks[1:]:
            return None
    elif isinstance(selection, slice) and selection.step in (None, 1):
        start = 0 if selection.start is None else selection.start
        stop = length if selection.stop is None else selection.stop
        rows = stop - start
        if start % step or not 0 < rows <= step or stop > length:
            return None
        # A short selection is a whole chunk only where the array ends.
        if rows < step and stop != length:
            return None
        if value_shape != (rows, *plan.chunks[1:]):
            return None
        index = start // step
    else:
        return None
    return index, rows
