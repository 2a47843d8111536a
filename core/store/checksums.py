"""Checksums on every chunk of a run, and a store that refuses damaged chunks on read.

Every array a capture writes ends its codec chain with Zarr v3's ``crc32c`` codec: each
stored chunk is its encoded bytes followed by their CRC-32C, 4 bytes little-endian, so any
Zarr v3 reader decodes and checks it (docs/store-format.md, *Checksums*).  The direct
whole-chunk path (:mod:`~tensortap.core.store.whole_chunks`) appends the same 4 bytes
(:func:`crc32c_trailer`), byte-identical to zarr's own chunks (tests/test_store_io.py).

Zarr reads a missing chunk as the fill value (NaN) and reports a bad checksum as a bare
``ValueError`` from deep inside Dask.  :class:`CheckedStore` wraps a run's store for
reading and turns both into :class:`~tensortap.core.errors.CorruptRunError` naming the
layer, the block, its samples and the fix — for chunks of committed blocks (a chunk of a
block not committed yet is legitimately absent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import ByteRequest
from zarr.codecs import Crc32cCodec
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from tensortap.core.errors import CorruptRunError
from tensortap.core.store import layout

__all__ = [
    "CHECKSUM_BYTES",
    "CheckedStore",
    "ChunkProblem",
    "chunk_problem",
    "crc32c_trailer",
    "describe_array",
    "input_digest",
    "with_checksum",
]

#: Bytes the ``crc32c`` codec appends to each chunk.
CHECKSUM_BYTES = 4
_METADATA = "zarr.json"


def with_checksum(compressors: Any) -> tuple[Any, ...]:
    """``compressors=`` for ``create_array`` with the ``crc32c`` codec last."""
    if compressors is None:
        return (Crc32cCodec(),)
    if not isinstance(compressors, tuple | list):
        compressors = (compressors,)
    return (*compressors, Crc32cCodec())


def _crc(data: Any) -> int:
    return int(google_crc32c.value(np.frombuffer(data, np.uint8)))


def crc32c_trailer(data: Any) -> bytes:
    """The 4 bytes zarr's ``crc32c`` codec appends to ``data`` (CRC-32C, little-endian)."""
    return _crc(data).to_bytes(CHECKSUM_BYTES, "little")


def input_digest(inputs: Mapping[str, np.ndarray]) -> int:
    """CRC-32C of a block's model inputs as fed (names sorted, values in C order).

    Stored per block (``input_digest``) so that a resume can tell whether it was given the
    data the run was captured on (issue 20).
    """
    crc = 0
    for name in sorted(inputs):
        crc = google_crc32c.extend(crc, name.encode())
        value = np.ascontiguousarray(inputs[name])
        crc = google_crc32c.extend(crc, value.reshape(-1).view(np.uint8))
    return int(crc)


@dataclass(frozen=True, slots=True)
class ArrayLayout:
    """What checking one array's chunks needs, from its ``zarr.json``."""

    path: str
    dims: tuple[str, ...]
    chunk_rows: int
    checksum: bool
    #: Stored bytes of one chunk when the codecs are of fixed size (bytes [+ crc32c]).
    chunk_bytes: int | None
    #: Sharded arrays whose inner chunks and index both end with a CRC-32C: the index's
    #: size in bytes (``None`` otherwise).  Every part zarr reads of such a shard (the
    #: index, or one inner chunk) then ends with its own checksum.
    shard_index_bytes: int | None = None


def describe_array(path: str, meta: Mapping[str, Any]) -> ArrayLayout | None:
    """The :class:`ArrayLayout` of an array document (``None`` for a group)."""
    if meta.get("node_type") != "array":
        return None
    codecs = [c.get("name") if isinstance(c, dict) else c for c in meta.get("codecs", [])]
    chunks = tuple(meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", ()))
    size: int | None = None
    if codecs in (["bytes"], ["bytes", "crc32c"]):
        try:
            itemsize = np.dtype(meta.get("data_type")).itemsize
        except TypeError:
            itemsize = 0
        if itemsize:
            size = math.prod(chunks) * itemsize + (CHECKSUM_BYTES if len(codecs) == 2 else 0)
    index_bytes = None
    if codecs and codecs[0] == "sharding_indexed":
        index_bytes = _shard_index_bytes(meta["codecs"][0].get("configuration", {}), chunks)
    return ArrayLayout(
        path=path,
        dims=tuple(meta.get("dimension_names") or ()),
        chunk_rows=int(chunks[0]) if chunks else 1,
        checksum=index_bytes is None and bool(codecs) and codecs[-1] == "crc32c",
        chunk_bytes=size,
        shard_index_bytes=index_bytes,
    )


def _shard_index_bytes(config: Mapping[str, Any], shard: tuple[int, ...]) -> int | None:
    """Bytes of a shard's index (at its end) when the index and every inner chunk end with
    a CRC-32C, else ``None``."""

    def last(key: str) -> Any:
        chain = config.get(key) or []
        return chain[-1].get("name") if chain and isinstance(chain[-1], dict) else None

    inner = tuple(config.get("chunk_shape", ()))
    if last("codecs") != "crc32c" or last("index_codecs") != "crc32c" or len(inner) != len(shard):
        return None
    if config.get("index_location", "end") != "end":
        return None
    n_inner = int(math.prod(int(s) // int(i) for s, i in zip(shard, inner, strict=True)))
    return 16 * n_inner + CHECKSUM_BYTES


def _ends_with_its_crc(data: bytes) -> bool:
    return (
        len(data) >= CHECKSUM_BYTES
        and crc32c_trailer(data[:-CHECKSUM_BYTES]) == (data[-CHECKSUM_BYTES:])
    )


def _shard_problem(index_bytes: int, data: bytes, *, part: bool) -> str | None:
    """A whole shard: its index and every inner chunk it lists must match their checksums;
    a part of one (``part``): it must end with its own."""
    if part:
        return None if _ends_with_its_crc(data) else "shard part fails its CRC-32C checksum"
    if len(data) < index_bytes or not _ends_with_its_crc(data[-index_bytes:]):
        return "shard index truncated or failing its CRC-32C checksum"
    entries = np.frombuffer(data[-index_bytes:-CHECKSUM_BYTES], "<u8").reshape(-1, 2)
    for offset, nbytes in entries:
        if offset == np.iinfo(np.uint64).max:
            continue  # an empty inner chunk
        if offset + nbytes > len(data) - index_bytes or not _ends_with_its_crc(
            data[int(offset) : int(offset + nbytes)]
        ):
            return "shard's inner chunk truncated or failing its CRC-32C checksum"
    return None


def chunk_problem(array: ArrayLayout, data: bytes | None, *, part: bool = False) -> str | None:
    """What is wrong with a stored chunk (``None`` when it is sound); ``data`` is
    ``None`` for a missing chunk, ``part`` says it is a byte range of a shard."""
    if data is None:
        return "chunk missing"
    if array.shard_index_bytes is not None:
        return _shard_problem(array.shard_index_bytes, data, part=part)
    if part:
        return None
    if array.chunk_bytes is not None and len(data) != array.chunk_bytes:
        return f"chunk truncated or overwritten ({len(data)} bytes, expected {array.chunk_bytes})"
    if array.checksum:
        if len(data) < CHECKSUM_BYTES:
            return f"chunk truncated ({len(data)} bytes)"
        body, stored = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if crc32c_trailer(body) != stored:
            return "chunk fails its CRC-32C checksum"
    return None


@dataclass(frozen=True, slots=True)
class ChunkProblem:
    """One damaged chunk (or missing document) of a run."""

    array: str
    block: int | None
    samples: tuple[int, int] | None
    problem: str

    @property
    def layer(self) -> str | None:
        """The layer key when the array belongs to a layer."""
        return layer_of(self.array)

    def describe(self) -> str:
        """``layer 'conv' activation, block 3 (samples 48-63): chunk missing``."""
        where = _where(self.array)
        if self.block is not None:
            where += f", block {self.block}"
            if self.samples is not None:
                where += f" (samples {self.samples[0]}-{self.samples[1] - 1})"
        return f"{where}: {self.problem}"


def layer_of(array: str) -> str | None:
    """The layer key of a path under ``layers/`` (keys may hold dots, never ``/``)."""
    prefix = f"{layout.LAYERS}/"
    if not array.startswith(prefix):
        return None
    return array[len(prefix) :].split("/", 1)[0]


def _where(array: str) -> str:
    key = layer_of(array)
    if key is None:
        if array == layout.COMMIT:
            return "the commit record"
        if array.startswith(f"{layout.RUN_STATS}/"):  # schema 2: one group for all layers
            return f"statistics {array[len(layout.RUN_STATS) + 1 :]} (every layer)"
        return f"array {array!r}"
    rest = array[len(f"{layout.LAYERS}/{key}/") :]
    return f"layer {key!r} {rest.replace('/', ' ')}"


def split_chunk_key(key: str) -> tuple[str, int] | None:
    """``(array path, index along the first axis)`` of a chunk key, ``None`` otherwise.

    Runs name chunks ``<array>/c.<i>.<j>...``; zarr's default ``<array>/c/<i>/<j>`` is
    understood too.
    """
    head, _, name = key.rpartition("/")
    if name.startswith("c.") and head:
        first = name[2:].split(".", 1)[0]
        return (head, int(first)) if first.isdigit() else None
    marker = key.find("/c/")
    if marker > 0:
        first = key[marker + 3 :].split("/", 1)[0]
        return (key[:marker], int(first)) if first.isdigit() else None
    return None


class CheckedStore(WrapperStore[Any]):
    """A read-only view of a run's store whose reads refuse damaged committed chunks.

    Parameters
    ----------
    store : zarr Store
        The run's store.
    counts : ndarray or None
        Samples committed per block (the commit record); ``None`` while reading the
        record itself (then only checksums are checked).
    block_size : int
        Samples per block.
    url : str
        The run's location, for messages.
    """

    def __init__(
        self, store: Any, counts: np.ndarray | None = None, block_size: int = 1, url: str = ""
    ) -> None:
        super().__init__(store)
        self.counts = counts
        self.block_size = block_size
        self.url = url
        self._layouts: dict[str, ArrayLayout | None] = {}

    def _with_store(self, store: Any) -> CheckedStore:
        return CheckedStore(store, self.counts, self.block_size, self.url)

    def __reduce__(self) -> Any:  # Dask workers get a copy (the layout cache is rebuilt)
        return (CheckedStore, (self._store, self.counts, self.block_size, self.url))

    async def _layout(self, path: str) -> ArrayLayout | None:
        if path not in self._layouts:
            buffer = await self._store.get(f"{path}/{_METADATA}", default_buffer_prototype())
            try:
                meta = json.loads(buffer.to_bytes()) if buffer is not None else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                meta = {}
            self._layouts[path] = describe_array(path, meta) if isinstance(meta, dict) else None
        return self._layouts[path]

    def expected(self, array: ArrayLayout, index: int) -> tuple[int | None, bool]:
        """``(block, must exist)`` of chunk ``index`` along the array's first axis."""
        first = array.dims[0] if array.dims else ""
        if array.path == layout.COMMIT:
            return index, False  # an absent entry means "not committed"
        if first == layout.BLOCK_DIM:
            block = index
        elif first == layout.SAMPLE and array.chunk_rows == self.block_size:
            block = index
        else:
            return None, True  # one-chunk arrays (bin edges, summaries) always exist
        if self.counts is None:
            return block, False
        return block, block < len(self.counts) and bool(self.counts[block])

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """Read ``key``; a damaged chunk of a committed block raises CorruptRunError."""
        buffer: Buffer | None = await self._store.get(key, prototype, byte_range)
        located = split_chunk_key(key)
        if located is None:
            return buffer
        array = await self._layout(located[0])
        if array is None:
            return buffer
        block, required = self.expected(array, located[1])
        if buffer is None and not required:
            return None
        data = None if buffer is None else buffer.to_bytes()
        problem = chunk_problem(array, data, part=byte_range is not None)
        if problem is None:
            return buffer
        samples = None
        if block is not None and array.path != layout.COMMIT and self.counts is not None:
            first = block * self.block_size
            count = int(self.counts[block]) if block < len(self.counts) else self.block_size
            samples = (first, first + count)
        damage = ChunkProblem(array.path, block, samples, problem)
        raise CorruptRunError(
            f"the run at {self.url!r} is damaged: {damage.describe()}; run `tensortap verify "
            f"{self.url} --repair`, then capture again with --resume (resume=True) to "
            "recompute it"
        )
