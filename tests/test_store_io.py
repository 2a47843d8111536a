"""The store's write paths: O_DIRECT chunks (core/store/direct_io.py), whole chunks written
without zarr (core/store/whole_chunks.py) and staged node creation (core/store/staging.py),
each checked against what zarr itself writes and reads back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from tensortap.core.store import direct_io
from tensortap.core.store.direct_io import DIRECT_MIN_BYTES, DirectLocalStore
from tensortap.core.store.staging import Staging
from tensortap.core.store.whole_chunks import WholeChunks

needs_direct = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT here")


def _set(store: DirectLocalStore, key: str, data: bytes) -> None:
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


@needs_direct
@pytest.mark.parametrize(
    "size",
    [
        DIRECT_MIN_BYTES,  # whole blocks only
        DIRECT_MIN_BYTES + 1,  # a one-byte tail
        (8 << 20) + 4096 * 3 + 17,  # more than one bounce buffer, and a tail
        100,  # small: the page-cache path
    ],
)
def test_direct_writes_are_byte_exact(tmp_path: Path, size: int) -> None:
    store = DirectLocalStore(tmp_path)
    data = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
    _set(store, "a/c.0.0", data)
    assert (tmp_path / "a" / "c.0.0").read_bytes() == data
    _set(store, "a/c.0.0", data[::-1])  # replaced whole, not patched
    assert (tmp_path / "a" / "c.0.0").read_bytes() == data[::-1]
    assert not list(tmp_path.rglob("*.partial"))  # no temporary file left behind


@needs_direct
def test_a_refused_o_direct_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tmpfs and some network file systems answer EINVAL: the store writes normally."""
    real_open = os.open

    def refuse(path: object, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(direct_io.os, "open", refuse)
    store = DirectLocalStore(tmp_path)
    data = bytes(range(256)) * (DIRECT_MIN_BYTES // 256 + 3)
    _set(store, "x", data)
    assert (tmp_path / "x").read_bytes() == data
    assert store._direct is False  # decided once per store
    assert not list(tmp_path.rglob("*.partial"))


def test_zarr_arrays_written_directly_read_back_with_plain_zarr(tmp_path: Path) -> None:
    values = np.random.default_rng(0).standard_normal((4, 300, 301)).astype(np.float32)
    group = zarr.open_group(DirectLocalStore(tmp_path), mode="w")
    array = group.create_array(
        "v", shape=values.shape, chunks=(2, 300, 301), dtype="float32", compressors=None
    )
    array[:] = values
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "v", mode="r")[:], values)


def test_staged_nodes_match_directly_created_ones(tmp_path: Path) -> None:
    """Staging writes the same documents zarr's own create calls write, keeps the
    attributes of groups that already exist, and publishes values with their arrays."""
    root = zarr.open_group(tmp_path, mode="w", attributes={"keep": "me"})
    root.create_group("layers", attributes={"long_name": "captured layers"})
    staging = Staging(root.store_path)
    staging.create_group("layers/a", {"name": "a"})
    spec = dict(shape=(8, 3), chunks=(4, 3), dtype="float32", dimension_names=("s", "c"))
    staging.create_array("layers/a/w", **spec, attributes={"long_name": "w"})
    staging.create_array("layers/b/edges", shape=(5,), chunks=(5,), dtype="float64")
    staging.set("layers/b/edges", np.linspace(0, 1, 5))
    staging.publish()
    written = staging.open("layers/a/w")
    written[4:8] = np.ones((4, 3), np.float32)

    reopened = zarr.open_group(tmp_path, mode="r")
    assert dict(reopened.attrs) == {"keep": "me"}
    assert reopened["layers"].attrs["long_name"] == "captured layers"
    assert reopened["layers/a"].attrs["name"] == "a"
    w = reopened["layers/a/w"]
    assert isinstance(w, zarr.Array) and w.metadata.dimension_names == ("s", "c")
    assert w.attrs["long_name"] == "w"
    np.testing.assert_array_equal(w[4:8], 1)
    np.testing.assert_array_equal(reopened["layers/b/edges"][:], np.linspace(0, 1, 5))
    reference = zarr.open_group(tmp_path / "ref", mode="w").create_array(
        "w", **spec, attributes={"long_name": "w"}
    )
    assert w.metadata.to_dict() == reference.metadata.to_dict()


def test_staged_documents_from_the_cache_match_built_ones(tmp_path: Path) -> None:
    """A second run declaring the same arrays takes their documents from the cache: the
    same bytes as building them, and another array's attributes never leak in."""
    spec = dict(shape=(8, 3), chunks=(4, 3), dtype="float32", dimension_names=("s", "c"))
    documents = []
    for name, long_name in [("first", "w"), ("second", "w"), ("third", "other")]:
        staging = Staging(zarr.open_group(tmp_path / name, mode="w").store_path)
        staging.create_array("a/w", **spec, attributes={"long_name": long_name})
        staging.publish()
        staging.open("a/w")[0:4] = np.ones((4, 3), np.float32)
        documents.append((tmp_path / name / "a" / "w" / "zarr.json").read_bytes())
        reopened = zarr.open_group(tmp_path / name, mode="r")["a/w"]
        assert reopened.attrs["long_name"] == long_name
        np.testing.assert_array_equal(reopened[0:4], 1)
    assert documents[0] == documents[1] != documents[2]


def _pair(tmp_path: Path, memory: bool = False, **spec: object) -> tuple[zarr.Array, zarr.Array]:
    """The same array twice: one for WholeChunks (on disk, or in a ``MemoryStore``), one
    written by zarr on disk (the reference)."""
    spec = {"chunk_key_encoding": {"name": "default", "separator": "."}} | spec
    if spec["chunk_key_encoding"] is None:  # zarr's default: c/0/0
        del spec["chunk_key_encoding"]
    store = zarr.storage.MemoryStore() if memory else DirectLocalStore(tmp_path / "ours")
    ours = zarr.open_group(store, mode="w")
    ref = zarr.open_group(tmp_path / "ref", mode="w")
    return ours.create_array("a", **spec), ref.create_array("a", **spec)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "zarr.json")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _stored(array: zarr.Array) -> dict[str, bytes]:
    """The chunk objects of ``array`` (made by ``_pair``), by key below the array."""
    if isinstance(array.store, zarr.storage.MemoryStore):
        return {
            key.removeprefix("a/"): value.to_bytes()
            for key, value in sorted(array.store._store_dict.items())
            if key.startswith("a/") and not key.endswith("zarr.json")
        }
    return _files(Path(array.store.root) / "a")


@pytest.mark.parametrize(
    ("shape", "chunks", "dtype", "selections"),
    [
        # sample-axis blocks, a large chunk (O_DIRECT), and the array's short last chunk
        ((70, 100, 120), (32, 100, 120), "float32", [slice(0, 32), slice(64, 70)]),
        ((10, 3), (4, 3), "float16", [slice(4, 8), slice(8, 10)]),
        ((5, 7, 6), (1, 7, 6), "float64", [2, 4]),  # per-block arrays, int selections
        ((6,), (1,), "int64", [0, 5]),  # the commit record: one value a chunk
        ((9,), (3,), "int64", [slice(3, 6)]),
        ((9, 2), (3, 2), "float32", [slice(3, 6), slice(6, 9)]),  # chunk keys c/1/0
    ],
)
@pytest.mark.parametrize("memory", [False, True], ids=["local", "memory"])
def test_whole_chunks_are_byte_identical_to_zarrs(
    tmp_path: Path, shape: tuple, chunks: tuple, dtype: str, selections: list, memory: bool
) -> None:
    keys = None if shape == (9, 2) else {"name": "default", "separator": "."}
    ours, ref = _pair(
        tmp_path,
        memory,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        compressors=None,
        fill_value=-1,
        chunk_key_encoding=keys,
    )
    writer = WholeChunks(ours.store)
    rng = np.random.default_rng(1)
    for sel in selections:
        value = rng.standard_normal(np.zeros(shape)[sel].shape) * 100
        value = value.astype(np.float64 if dtype.startswith("int") else dtype)
        assert writer.write(ours, sel, value)
        ref[sel] = value
        if isinstance(value, np.ndarray):  # the caller may reuse its buffer: what was
            value[...] = 0  # stored must not change
    assert _stored(ours) == _files(tmp_path / "ref" / "a")
    np.testing.assert_array_equal(zarr.open_array(ours.store, path="a", mode="r")[:], ref[:])
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize(
    ("shape", "shards", "inner", "selections"),
    [
        # one-sample inner chunks of a large block (O_DIRECT), and int64 rows of 2 samples
        ((64, 120, 100), (32, 120, 100), (1, 120, 100), [slice(0, 32), slice(32, 64)]),
        ((12, 5), (6, 5), (2, 5), [slice(6, 12)]),
    ],
)
@pytest.mark.parametrize("memory", [False, True], ids=["local", "memory"])
def test_whole_shards_are_byte_identical_to_zarrs(
    tmp_path: Path, shape: tuple, shards: tuple, inner: tuple, selections: list, memory: bool
) -> None:
    """A shard with checksummed inner chunks and index, as the writer makes for large
    blocks: the same bytes as zarr's sharding codec writes, read back by plain zarr."""
    from tensortap.core.store.checksums import with_checksum

    ours, ref = _pair(
        tmp_path,
        memory,
        shape=shape,
        shards=shards,
        chunks=inner,
        dtype="float32",
        compressors=with_checksum(None),
        fill_value=np.nan,
        config={"write_empty_chunks": True},
    )
    writer = WholeChunks(ours.store)
    rng = np.random.default_rng(2)
    for sel in selections:
        value = rng.standard_normal(np.zeros(shape)[sel].shape).astype(np.float32)
        assert writer.write(ours, sel, value)
        ref[sel] = value
    assert _stored(ours) == _files(tmp_path / "ref" / "a")
    reopened = zarr.open_array(ours.store, path="a", mode="r")
    np.testing.assert_array_equal(reopened[selections[-1]], ref[selections[-1]])
    np.testing.assert_array_equal(reopened[shards[0] - 1], ref[shards[0] - 1])  # one inner chunk


def test_a_partial_last_shard_is_left_to_zarr(tmp_path: Path) -> None:
    from tensortap.core.store.checksums import with_checksum

    ours, _ = _pair(
        tmp_path,
        shape=(10, 3),
        shards=(4, 3),
        chunks=(1, 3),
        dtype="float32",
        compressors=with_checksum(None),
    )
    assert not WholeChunks(ours.store).write(ours, slice(8, 10), np.ones((2, 3), np.float32))


@pytest.mark.parametrize(
    ("spec", "sel"),
    [
        (dict(compressors=zarr.codecs.ZstdCodec(level=1)), slice(0, 4)),  # compressed
        (dict(shards=(4, 3), chunks=(1, 3)), slice(0, 4)),  # sharded
        ({}, slice(2, 6)),  # not on a chunk boundary
        ({}, slice(4, 6)),  # a short chunk inside the array: zarr merges
        ({}, [0, 1, 2, 3]),  # fancy selection
    ],
)
def test_whole_chunks_leave_everything_else_to_zarr(
    tmp_path: Path, spec: dict, sel: object
) -> None:
    base = dict(shape=(12, 3), chunks=(4, 3), dtype="float32", compressors=None)
    ours, _ = _pair(tmp_path, **(base | spec))
    value = np.ones(np.zeros((12, 3))[sel].shape, np.float32)
    assert not WholeChunks(ours.store).write(ours, sel, value)
    assert _files(tmp_path / "ours" / "a") == {}


def test_whole_chunks_need_a_local_or_memory_store(tmp_path: Path) -> None:
    with zarr.storage.ZipStore(tmp_path / "run.zip", mode="w") as store:
        array = zarr.create_array(store, shape=(4,), chunks=(2,), dtype="int64")
        assert not WholeChunks(array.store).write(array, slice(0, 2), np.arange(2))


def test_whole_chunks_say_when_the_run_folder_vanished(tmp_path: Path) -> None:
    import shutil

    from tensortap.core.errors import StorageError

    ours, _ = _pair(tmp_path, shape=(4, 3), chunks=(2, 3), dtype="float32", compressors=None)
    shutil.rmtree(tmp_path / "ours")
    with pytest.raises(StorageError, match="vanished during the capture"):
        WholeChunks(ours.store).write(ours, slice(0, 2), np.ones((2, 3), np.float32))
