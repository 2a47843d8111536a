"""``tensortap.verify``: read every committed chunk of a run and check it; optionally repair.

A run's chunks each carry a CRC-32C (core/store/checksums.py).  :func:`verify` reads the
commit record and then every chunk of every committed block of every array — activations,
gradients, inputs, outputs, statistics, the record itself — and checks that it exists, has
the size its codecs imply, and matches its checksum; it checks the attrs against the record
(a completed run must commit ``samples``) and that every array the attrs promise exists.

**Repair rule** (docs/store-format.md): a damaged chunk of block *b* makes the whole block
untrustworthy, so ``repair=True`` marks *b* uncommitted in the commit record (never touching
the damaged data) and sets the run's status to ``failed``; ``capture(..., resume=True)``
then recomputes exactly those blocks.  A damaged statistics summary (a cache) is deleted.
Damage no block can account for — a missing array, a damaged document, damaged bin edges —
cannot be repaired: capture the run again with ``overwrite=True``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from tensortap.core.errors import RunNotFoundError
from tensortap.core.explanation_store import GROUP as EXPLANATIONS
from tensortap.core.store import layout
from tensortap.core.store.checksums import (
    CHECKSUM_BYTES,
    ArrayLayout,
    ChunkProblem,
    chunk_problem,
    describe_array,
)
from tensortap.core.store.storage import Location, open_location, read_json

__all__ = ["VerifyReport", "verify"]

_METADATA = "zarr.json"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` found.

    Attributes
    ----------
    path : str
        The run.
    problems : tuple of ChunkProblem
        Every damaged chunk or document, in store order.
    chunks : int
        Chunks read and checked.
    committed : int
        Samples committed (before any repair).
    repaired : tuple of int
        Blocks marked uncommitted by ``repair=True``.
    unrepairable : tuple of ChunkProblem
        Damage a repair cannot undo (capture again with ``overwrite=True``).
    """

    path: str
    problems: tuple[ChunkProblem, ...]
    chunks: int
    committed: int
    repaired: tuple[int, ...] = ()
    unrepairable: tuple[ChunkProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether no damage was found."""
        return not self.problems

    def table(self) -> str:
        """The damaged blocks as one aligned text table (``array block samples problem``)."""
        rows = [("array", "block", "samples", "problem")]
        for p in self.problems:
            samples = "" if p.samples is None else f"{p.samples[0]}-{p.samples[1] - 1}"
            rows.append((p.array, "" if p.block is None else str(p.block), samples, p.problem))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
            for row in rows
        )


def verify(
    path_or_url: Any,
    storage_options: dict[str, Any] | None = None,
    *,
    repair: bool = False,
    progress: bool = False,
) -> VerifyReport:
    """Check every committed chunk of a run; with ``repair``, uncommit damaged blocks.

    Parameters
    ----------
    path_or_url : str, os.PathLike or zarr Store
        The run.
    storage_options : dict, optional
        fsspec options for URLs.
    repair : bool
        Mark blocks with a damaged chunk uncommitted (then resume the capture).
    progress : bool
        Show a progress bar over the arrays.

    Raises
    ------
    RunNotFoundError
        The location holds no tensortap run.
    CorruptRunError
        The run's root document is damaged (nothing else can be checked).
    """
    location = open_location(path_or_url, storage_options, read_only=not repair)
    checker = _Checker(location)
    checker.run(progress)
    repaired: tuple[int, ...] = ()
    if repair and checker.problems:
        repaired = checker.repair()
    return VerifyReport(
        path=location.url,
        problems=tuple(checker.problems),
        chunks=checker.chunks,
        committed=int(checker.counts.sum()),
        repaired=repaired,
        unrepairable=tuple(p for p in checker.problems if not _repairable(p)),
    )


def _repairable(problem: ChunkProblem) -> bool:
    if problem.block is not None or _explanation(problem.array):
        return True
    name = problem.array.rsplit("/", 1)[-1]
    return name in (layout.SUMMARY_MOMENTS, layout.SUMMARY_HISTOGRAM)


def _explanation(path: str) -> str | None:
    """``explanations/<name>`` for a path inside a stored explanation (written whole, after
    the capture, outside the commit rule), else ``None``."""
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 and parts[0] == EXPLANATIONS else None


class _Checker:
    def __init__(self, location: Location) -> None:
        self.location = location
        self.store = location.store
        meta = read_json(self.store, _METADATA)
        attrs = meta.get("attributes", {}).get(layout.ATTRS_KEY) if isinstance(meta, dict) else None
        if not isinstance(attrs, dict):
            raise RunNotFoundError(f"no tensortap run at {location.url!r}; give a run's path")
        self.attrs = attrs
        self.block_size = int(attrs.get("block_size") or attrs.get("batch_size") or 1)
        self.problems: list[ChunkProblem] = []
        self.chunks = 0
        self.counts = np.zeros(0, np.int64)

    def _get(self, key: str) -> bytes | None:
        buffer = sync(self.store.get(key, prototype=default_buffer_prototype()))
        return None if buffer is None else buffer.to_bytes()

    def _samples(self, block: int) -> tuple[int, int]:
        first = block * self.block_size
        count = int(self.counts[block]) if block < len(self.counts) else 0
        return first, first + (count or self.block_size)

    def _span(self, block: int) -> tuple[int, int]:
        """The samples block ``block`` holds when full (its commit entry is unreadable)."""
        first = block * self.block_size
        total = self.attrs.get("total") or self.attrs.get("samples")
        stop = first + self.block_size
        return first, min(stop, int(total)) if isinstance(total, int) and total > first else stop

    def _documents(self) -> dict[str, dict[str, Any]]:
        """Every node's document by path; damaged ones become problems."""

        async def keys() -> list[str]:
            return [key async for key in self.store.list()]

        documents: dict[str, dict[str, Any]] = {}
        for key in sorted(sync(keys())):
            if key != _METADATA and key.endswith(f"/{_METADATA}"):
                path = key[: -len(_METADATA) - 1]
                data = self._get(key)
                try:
                    documents[path] = json.loads(data or b"")
                except (UnicodeDecodeError, json.JSONDecodeError):
                    self.problems.append(ChunkProblem(path, None, None, "zarr.json damaged"))
        return documents

    def run(self, progress: bool) -> None:
        documents = self._documents()
        record = documents.get(layout.COMMIT)
        self._read_record(describe_array(layout.COMMIT, record) if record else None)
        self._check_attrs(documents)
        arrays = [
            described
            for path, doc in documents.items()
            if path != layout.COMMIT and (described := describe_array(path, doc)) is not None
        ]
        for array, doc in _with_progress(arrays, documents, progress):
            self._check_array(array, doc)

    def _read_record(self, record: ArrayLayout | None) -> None:
        if record is None:
            if self.attrs.get("samples") or self.attrs.get("status") == "complete":
                self.problems.append(
                    ChunkProblem(layout.COMMIT, None, None, "the commit record is missing")
                )
            return
        meta = read_json(self.store, f"{layout.COMMIT}/{_METADATA}")
        n_blocks = int(meta.get("shape", [0])[0])
        counts = np.zeros(n_blocks, np.int64)
        expected = _expected_blocks(self.attrs, self.block_size)
        for block in range(n_blocks):
            data = self._get(_chunk_key(layout.COMMIT, meta, block))
            self.chunks += data is not None
            if data is None:
                if block < expected:  # a completed run committed every block up to here
                    self.problems.append(
                        ChunkProblem(
                            layout.COMMIT, block, self._span(block), "commit entry missing"
                        )
                    )
                continue
            problem = chunk_problem(record, data)
            if problem is not None:
                self.problems.append(ChunkProblem(layout.COMMIT, block, self._span(block), problem))
                continue
            body = data[:-CHECKSUM_BYTES] if record.checksum else data
            counts[block] = int(np.frombuffer(body[:8], "<i8")[0])
        self.counts = counts

    def _check_attrs(self, documents: dict[str, dict[str, Any]]) -> None:
        committed = int(self.counts.sum())
        stored = self.attrs.get("samples")
        record_damaged = any(p.array == layout.COMMIT for p in self.problems)
        if (
            self.attrs.get("status") == "complete"
            and isinstance(stored, int)
            and stored != committed
            and not record_damaged
        ):
            self.problems.append(
                ChunkProblem(
                    layout.COMMIT,
                    None,
                    None,
                    f"attrs say {stored} samples completed, the commit record {committed}",
                )
            )
        if not committed:
            return
        required = [layout.SAMPLE]
        if self.attrs.get("keep_inputs", True):
            required += [layout.input_path(n) for n in self.attrs.get("inputs", ())]
        required += [layout.output_path(n) for n in self.attrs.get("outputs", ())]
        stats_arrays = (
            layout.BIN_EDGES,
            layout.BLOCK_MOMENTS,
            layout.BLOCK_HISTOGRAM,
            layout.SAMPLE_MEAN,
            layout.SAMPLE_MAX,
        )
        flat_stats = int(self.attrs.get("schema", 1)) >= 2  # one stats group for all layers
        if flat_stats:
            required += [layout.run_stats_path(name) for name in stats_arrays]
        for key in self.attrs.get("layers", ()):
            base, stats = layout.layer_path(key), layout.stats_path(key)
            required.append(f"{base}/{layout.ACTIVATION}")
            if self.attrs.get("gradients"):
                required.append(f"{base}/{layout.GRADIENT}")
            if not flat_stats:
                required += [f"{stats}/{name}" for name in stats_arrays]
        damaged = {p.array for p in self.problems}
        for path in required:
            if path not in documents and path not in damaged:
                self.problems.append(ChunkProblem(path, None, None, "array missing"))

    def _check_array(self, array: ArrayLayout, meta: dict[str, Any]) -> None:
        first = array.dims[0] if array.dims else ""
        shape = tuple(meta.get("shape", ()))
        per_block = not _explanation(array.path) and (
            first == layout.BLOCK_DIM
            or (first == layout.SAMPLE and array.chunk_rows == self.block_size)
        )
        if not per_block:
            n_chunks = math.ceil(shape[0] / array.chunk_rows) if shape else 1
            for index in range(max(n_chunks, 1)):
                self._check_chunk(array, meta, index, None)
            return
        blocks = np.flatnonzero(self.counts)
        if len(blocks):
            rows = shape[0] if shape else 0
            needed = (
                int(blocks[-1]) + 1
                if first == layout.BLOCK_DIM
                else int(blocks[-1]) * self.block_size + int(self.counts[blocks[-1]])
            )
            if rows < needed:
                self.problems.append(
                    ChunkProblem(
                        array.path, None, None, f"{rows} rows, the commit record needs {needed}"
                    )
                )
                return
        for block in blocks:
            self._check_chunk(array, meta, int(block), int(block))

    def _check_chunk(
        self, array: ArrayLayout, meta: dict[str, Any], index: int, block: int | None
    ) -> None:
        data = self._get(_chunk_key(array.path, meta, index))
        self.chunks += 1
        problem = chunk_problem(array, data)
        if (
            problem is None
            and data is not None
            and _sharded(meta)
            and not (array.shard_index_bytes)
        ):
            problem = self._decode_shard(array, index)  # no checksums to check it with
        if problem is not None:
            samples = None if block is None else self._samples(block)
            self.problems.append(ChunkProblem(array.path, block, samples, problem))

    def _decode_shard(self, array: ArrayLayout, index: int) -> str | None:
        """A shard's inner chunks carry their own checksums: decode it through zarr."""
        zarray = zarr.open_array(self.store, path=array.path, mode="r")
        rows = slice(index * array.chunk_rows, (index + 1) * array.chunk_rows)
        try:
            zarray[rows]
        except Exception as err:  # noqa: BLE001 - any decoding failure is damage
            return f"shard cannot be decoded ({str(err).splitlines()[0][:80]})"
        return None

    def repair(self) -> tuple[int, ...]:
        """Uncommit damaged blocks, delete damaged summaries, mark the run ``failed``."""
        blocks = sorted({p.block for p in self.problems if p.block is not None})
        store = self.location.store
        if blocks and read_json(store, f"{layout.COMMIT}/{_METADATA}") is not None:
            record = zarr.open_array(store, path=layout.COMMIT, mode="r+")
            for block in blocks:
                record[block] = 0  # the fill value: zarr deletes the entry's chunk
                if block < len(self.counts):
                    self.counts[block] = 0
        for problem in self.problems:
            if problem.block is None and _repairable(problem):
                # A damaged explanation goes whole (tt.explain computes it again).
                sync(store.delete_dir(_explanation(problem.array) or problem.array))
        captured = [p for p in self.problems if not _explanation(p.array)]
        if blocks or any(_repairable(p) for p in captured):
            group = zarr.open_group(store, mode="r+")
            attrs = dict(cast("dict[str, Any]", group.attrs.get(layout.ATTRS_KEY, {})))
            attrs.update(status="failed", samples=int(self.counts.sum()), repaired=blocks)
            group.attrs.update({layout.ATTRS_KEY: attrs})
        return tuple(blocks)


def _with_progress(
    arrays: list[ArrayLayout], documents: dict[str, dict[str, Any]], progress: bool
) -> Iterator[tuple[ArrayLayout, dict[str, Any]]]:
    items = [(a, documents[a.path]) for a in arrays]
    if not progress:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc="verify", unit="array", dynamic_ncols=True)


def _expected_blocks(attrs: dict[str, Any], block_size: int) -> int:
    """Blocks a completed run must have committed (0 when the run did not complete)."""
    samples = attrs.get("samples")
    if attrs.get("status") != "complete" or not isinstance(samples, int):
        return 0
    return math.ceil(samples / block_size)


def _sharded(meta: dict[str, Any]) -> bool:
    codecs = meta.get("codecs", [])
    return (
        bool(codecs)
        and isinstance(codecs[0], dict)
        and codecs[0].get("name") == ("sharding_indexed")
    )


def _chunk_key(path: str, meta: dict[str, Any], index: int) -> str:
    """The store key of chunk ``(index, 0, ...)`` of the array at ``path``."""
    encoding = meta.get("chunk_key_encoding", {})
    separator = encoding.get("configuration", {}).get("separator", "/")
    ndim = max(len(meta.get("shape", ())), 1)
    coords = separator.join([str(index), *("0" * (ndim - 1))])
    name = f"c{separator}{coords}" if encoding.get("name", "default") == "default" else coords
    return f"{path}/{name}" if path else name
