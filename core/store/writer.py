"""The run writer: creates, resumes and fills a schema 2 run (docs/design.md §4).

:class:`RunWriter` owns the Zarr layout; it does not decide *when* to write (that is the
engine's pipeline) nor compute statistics (:mod:`tensortap.core.stats`).  Every array with
a sample axis is chunked (or sharded) by whole blocks of ``block_size`` samples (whole compute
batches, :mod:`tensortap.core.block_size`), so a block
is written to its own objects only; the block is committed in the commit record after all
of them (:mod:`tensortap.core.store.commit`).  Every layer's statistics share the root
``stats`` group (:mod:`tensortap.core.store.run_stats`): four statistics objects a block,
whatever the number of layers.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore, StorePath

from tensortap.core.errors import (
    CorruptRunError,
    ResumeMismatchError,
    RunExistsError,
    StorageError,
)
from tensortap.core.graph import CaptureNode, TensorSpec
from tensortap.core.stats import DEFAULT_BINS, MOMENTS, BlockStats, merge_blocks
from tensortap.core.store import commit, layout
from tensortap.core.store.checksums import input_digest, with_checksum
from tensortap.core.store.layout import Codec
from tensortap.core.store.leftovers import remove_partial_files
from tensortap.core.store.object_placement import REPLACING
from tensortap.core.store.run_stats import StatsIndex
from tensortap.core.store.shard_stream import ShardStream
from tensortap.core.store.staging import Staging
from tensortap.core.store.storage import Location, read_json
from tensortap.core.store.whole_chunks import WholeChunks
from tensortap.core.version import __version__

if TYPE_CHECKING:
    from zarr.core.array import CompressorsLike
    from zarr.core.array_spec import ArrayConfigParams

__all__ = ["INNER_CHUNK_BYTES", "SHARD_ABOVE_BYTES", "RunSettings", "RunWriter", "inner_chunk_rows"]

#: An uncompressed block chunk larger than this is stored as a shard of inner chunks, so a
#: reader of one sample reads ~1 MiB, not the whole block (docs/store-format.md).
SHARD_ABOVE_BYTES = 4 << 20
#: Target bytes of a shard's inner chunk (at least one sample).
INNER_CHUNK_BYTES = 1 << 20


def inner_chunk_rows(block_size: int, sample_bytes: int) -> int:
    """Samples per inner chunk of a block: ``block_size`` (not sharded) when the block's
    chunk is at most :data:`SHARD_ABOVE_BYTES`, else the largest divisor of ``block_size``
    whose inner chunk holds at most :data:`INNER_CHUNK_BYTES` (at least one sample)."""
    if block_size * sample_bytes <= SHARD_ABOVE_BYTES:
        return block_size
    fits = max(1, INNER_CHUNK_BYTES // max(1, sample_bytes))
    return max(r for r in range(1, min(fits, block_size) + 1) if block_size % r == 0)


# zarr skips writing chunks equal to the fill value only after scanning them; activations are
# rarely all zero and the scan costs a full pass over every batch, so write every chunk.
_ARRAY_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}
#: Chunk files named ``c.<block>.0.0`` inside the array's folder: with zarr's default ``/``
#: every block made a new folder per array (``c/<block>/0/0``), and creating folders cost
#: more syscalls than writing the small statistics chunks themselves.
CHUNK_KEYS = {"name": "default", "separator": "."}


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What a run is captured with; stored in the root attrs and checked on resume."""

    framework: str
    model: dict[str, Any]
    fingerprint: str
    layers: tuple[str, ...]
    gradients: bool
    dtype: str | None
    batch_size: int
    target: str
    codec: Codec = field(default_factory=lambda: layout.DEFAULT_CODEC)
    sharded: bool = False
    keep_inputs: bool = True
    total: int | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    #: Samples per storage block (a multiple of ``batch_size``); ``None`` until the first
    #: batches decide it (:func:`tensortap.core.block_size.choose_block_size`).
    block_size: int | None = None
    #: Input attributions computed at capture: ``AttributionSpec.describe()``, or empty.
    attributions: dict[str, Any] = field(default_factory=dict)

    def attrs(self, status: str) -> dict[str, Any]:
        """The root ``tensortap`` attribute block."""
        return {
            "schema": layout.SCHEMA,
            "version": __version__,
            "framework": self.framework,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "target": self.target,
            "score": self.info.get("score"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "status": status,
            "layers": list(self.layers),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "gradients": self.gradients,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "dtype": self.dtype,
            "codec": self.codec.describe(),
            "sharded": self.sharded,
            "keep_inputs": self.keep_inputs,
            "total": self.total,
            "info": self.info,
            "attributions": self.attributions or None,
        }


def _root_attrs(location: Location) -> dict[str, Any] | None:
    meta = read_json(location.store, "zarr.json")
    if meta is None:
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        raise CorruptRunError(
            f"{location.url!r} has a damaged root zarr.json (not a Zarr v3 group); "
            "capture again with overwrite=True"
        )
    attrs = meta.get("attributes", {}).get(layout.ATTRS_KEY)
    return attrs if isinstance(attrs, dict) else {}


def _refuse_to_replace(
    location: Location, attrs: dict[str, Any] | None, empty: bool, *, overwrite: bool
) -> None:
    """Raise :class:`RunExistsError` unless ``location`` is empty or holds a run that
    ``overwrite`` replaces."""
    if attrs is None and empty:
        return
    is_run = bool(attrs)
    if not is_run:
        raise RunExistsError(
            f"{location.url!r} already holds data that is not a tensortap run; "
            "choose another output path (it is never deleted)"
        )
    if not overwrite:
        raise RunExistsError(
            f"a run already exists at {location.url!r}; pass resume=True (--resume) "
            "to finish it or overwrite=True (--overwrite) to replace it"
        )


def _guard(location: Location, action: str) -> Any:
    """Context manager mapping storage failures to :class:`StorageError`."""
    return _StorageGuard(location, action)


def _set_all(items: Sequence[tuple[zarr.Array[Any], Any, Any]]) -> None:
    """Write ``(array, selection, value)`` items concurrently, in one trip to zarr's loop.

    Each synchronous ``array[sel] = value`` waits for its own round trip through zarr's event
    loop (~2–3 ms here, more on object storage); a block writes ~5 arrays a layer, so a
    model with many small layers spent most of its capture waiting.  Gathering them lets the
    store overlap the writes (files, or PUTs to s3).
    """

    async def gather() -> None:
        await asyncio.gather(*(a.async_array.setitem(sel, value) for a, sel, value in items))

    sync(gather())


class _StorageGuard:
    def __init__(self, location: Location, action: str) -> None:
        self.location, self.action = location, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, PermissionError) or (
            isinstance(exc, OSError) and not isinstance(exc, StorageError | FileNotFoundError)
        ):
            raise StorageError(
                f"cannot {self.action} {self.location.url!r}: {exc.strerror or exc}; "
                "choose a writable location"
            ) from exc
        if isinstance(exc, FileNotFoundError) and not self.location.is_local:
            raise StorageError(f"cannot {self.action} {self.location.url!r}: {exc}") from exc


class RunWriter:
    """Writes one run.  Use :meth:`open`, then :meth:`create_arrays` (new runs) and, per
    block, :meth:`write_root`, :meth:`write_layer` (thread-safe across layers), and
    :meth:`commit`; finally :meth:`finish`.
    """

    #: Runs of fewer committed blocks get no statistics summary at :meth:`finish`: a reader
    #: reduces their few partials as fast as one summary chunk (concurrent reads), and the
    #: summaries would add two objects to a run of a few.
    SUMMARY_MIN_BLOCKS = 8

    def __init__(self, location: Location, group: zarr.Group, settings: RunSettings) -> None:
        self.location = location
        self.group = group
        self.settings = settings
        self.arrays: dict[str, zarr.Array[Any]] = {}
        self.edges: dict[str, np.ndarray] = {}
        self._sample_arrays: list[str] = []
        self._block_arrays: list[str] = []
        self._dim_sizes: dict[str, dict[str, int]] = {}
        # Nodes :meth:`create_arrays` declares, created together by :meth:`_create_declared`.
        self._declared_groups: list[tuple[str, dict[str, Any]]] = []
        self._declared_arrays: list[tuple[str, dict[str, Any]]] = []
        self._declared_values: list[tuple[str, np.ndarray]] = []
        self._whole_chunks = WholeChunks(group.store)
        self.capacity = 0
        #: Targets along the gradients' ``target`` axis (0: one target, no such axis).
        self._gradient_targets = 0
        #: Each layer's span in the statistics group (set when its arrays exist).
        self._stats_index: StatsIndex | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        location: Location,
        settings: RunSettings,
        *,
        resume: bool = False,
        overwrite: bool = False,
        check_data: Callable[[RunWriter], None] | None = None,
    ) -> RunWriter:
        """Create a new run at ``location``, or reopen it to resume.

        ``check_data(writer)`` is called on a resumed run after its arrays are bound and
        before anything is written (the engine compares the data with the run's there).

        Raises
        ------
        RunExistsError
            The location holds a run (or other data) and neither ``resume`` nor
            ``overwrite`` was given, or it holds data that is not a run.
        ResumeMismatchError
            Resuming a run captured with another model, layer set, dtype or gradients.
        StorageError
            The location cannot be written.
        """
        store = location.store
        with _guard(location, "write a run to"):
            attrs = _root_attrs(location)
            empty = attrs is None and sync(store.is_empty(""))
        if attrs is not None and attrs and resume:
            writer = cls(location, zarr.open_group(store, mode="r+"), settings)
            writer._check_resume(attrs)
            if isinstance(store, LocalStore):  # what a killed capture left mid-write
                remove_partial_files(Path(store.root))
            writer._reopen()
            if not writer.has_arrays and not attrs.get("block_size"):
                # Killed before its first block: nothing is chunked yet, decide it afresh.
                writer.settings = replace(writer.settings, block_size=settings.block_size)
            if check_data is not None:
                check_data(writer)
            writer.set_status("capturing")
            return writer
        _refuse_to_replace(location, attrs, empty, overwrite=overwrite)
        with _guard(location, "write a run to"):
            if not empty:
                sync(store.clear())
            group = zarr.open_group(
                store,
                mode="w",
                zarr_format=3,
                attributes={
                    layout.ATTRS_KEY: settings.attrs("capturing"),
                    # CF convention read by xarray: these root arrays are coordinates.
                    "coordinates": f"{layout.LABEL} {layout.PREDICTION} {layout.TARGET_CLASS}",
                },
            )
        return cls(location, group, settings)

    @staticmethod
    def holds_run(location: Location) -> bool:
        """Whether ``location`` holds a tensortap run (a root group with its attrs)."""
        with _guard(location, "read"):
            return bool(_root_attrs(location))

    def input_digest(self, block: int) -> int | None:
        """The stored CRC-32C of ``block``'s inputs (``None`` for runs without them)."""
        array = self.arrays.get(layout.INPUT_DIGEST)
        if array is None or block >= array.shape[0]:
            return None
        with _guard(self.location, "read"):
            return int(np.asarray(array[block]))

    def stored_attr(self, name: str) -> Any:
        """A key of the stored root ``tensortap`` attrs."""
        with _guard(self.location, "read"):
            stored = cast("Mapping[str, Any]", self.group.attrs.get(layout.ATTRS_KEY, {}))
        return stored.get(name)

    def remove(self) -> None:
        """Delete the run (a capture refused before its first commit leaves nothing)."""
        with _guard(self.location, "clean up"):
            sync(self.location.store.clear())

    @staticmethod
    def check_replaceable(location: Location, *, overwrite: bool) -> bool:
        """Whether ``location`` holds a run that ``overwrite`` may replace (``False``: it
        is empty), checked without writing anything.

        Raises
        ------
        RunExistsError
            As :meth:`open` does: a run without ``overwrite``, or data that is not a run.
        """
        with _guard(location, "write a run to"):
            attrs = _root_attrs(location)
            empty = attrs is None and sync(location.store.is_empty(""))
        _refuse_to_replace(location, attrs, empty, overwrite=overwrite)
        return not empty

    def relocate(self, location: Location) -> None:
        """Bind this writer to the same run moved to ``location`` (an atomic overwrite
        publishes a run written beside the old one, core/store/placement.py).  Call it
        between blocks, with no write in flight."""
        store = location.store
        with _guard(location, "write to"):
            self.group = zarr.open_group(store, mode="r+")
        self.arrays = {
            path: zarr.Array(
                zarr.AsyncArray(
                    array.metadata,
                    store_path=StorePath(store, path),
                    config=array.async_array.config,
                )
            )
            for path, array in self.arrays.items()
        }
        self.location = location
        self._whole_chunks = WholeChunks(store)

    def _check_resume(self, attrs: Mapping[str, Any]) -> None:
        wanted = self.settings
        checks = [
            ("model fingerprint", attrs.get("fingerprint"), wanted.fingerprint),
            ("layers", attrs.get("layers"), list(wanted.layers)),
            ("dtype", attrs.get("dtype"), wanted.dtype),
            ("gradients", attrs.get("gradients"), wanted.gradients),
            ("attributions", attrs.get("attributions"), wanted.attributions or None),
        ]
        for what, stored, now in checks:
            if stored != now:
                shown_stored, shown_now = (str(stored), str(now))
                if what == "layers":
                    layers_now = list(wanted.layers)  # == now
                    gone = [k for k in (stored or []) if k not in layers_now]
                    new = [k for k in layers_now if k not in (stored or [])]
                    shown_stored = f"{len(stored or [])} layers (missing now: {gone[:3]})"
                    shown_now = f"{len(layers_now)} layers (new: {new[:3]})"
                raise ResumeMismatchError(
                    f"cannot resume {self.location.url!r}: it was captured with {what} "
                    f"{shown_stored}, now {shown_now}; resume with the same model and settings, "
                    "or pass overwrite=True (--overwrite) to start again"
                )
        stored_total, total = attrs.get("total"), wanted.total
        if stored_total is not None and total is not None and stored_total != total:
            raise ResumeMismatchError(
                f"cannot resume {self.location.url!r}: it was captured on {stored_total} "
                f"samples, the data now holds {total}; resume with the same data, or pass "
                "overwrite=True (--overwrite) to capture the new data"
            )
        if attrs.get("status") == REPLACING:
            raise ResumeMismatchError(
                f"cannot resume {self.location.url!r}: status {REPLACING!r} (an overwrite was "
                "killed while it replaced the old run); capture again with overwrite=True"
            )
        if attrs.get("schema") != layout.SCHEMA:
            raise ResumeMismatchError(
                f"cannot resume {self.location.url!r}: schema {attrs.get('schema')} is not "
                f"{layout.SCHEMA}; capture again with overwrite=True"
            )
        # The block size is the run's chunking: a resume keeps it (and the batch size that
        # divides it) whatever was asked.  Runs written before blocks held several batches
        # have no ``block_size``: their block is one batch.
        stored_batch = int(attrs.get("batch_size", wanted.batch_size))
        stored_block = attrs.get("block_size") or stored_batch
        if (stored_batch, stored_block) != (wanted.batch_size, wanted.block_size):
            settings = asdict(wanted) | {
                "batch_size": stored_batch,
                "block_size": int(stored_block),
                "codec": wanted.codec,
            }
            self.settings = RunSettings(**settings)

    @classmethod
    def attach(cls, location: Location, settings: RunSettings) -> RunWriter:
        """A writer bound to a run another process created, for writing blocks only.

        Unlike :meth:`open` with ``resume=True`` it never writes the root ``zarr.json``
        (status, attrs): that one object would be written by every parallel writer, which
        the commit rule forbids.  The caller checked ``settings`` against the run.

        Raises
        ------
        CorruptRunError
            When the run vanished or has no arrays yet (its coordinator failed).
        """
        try:
            group = zarr.open_group(location.store, mode="r+")
        except FileNotFoundError as err:
            raise CorruptRunError(
                f"the run at {location.url!r} vanished during the capture; capture it again "
                "(overwrite=True)"
            ) from err
        writer = cls(location, group, settings)
        writer._reopen()
        if not writer.has_arrays:
            raise CorruptRunError(
                f"the run at {location.url!r} has no arrays; its coordinator failed — capture "
                "it again with overwrite=True"
            )
        return writer

    def _reopen(self) -> None:
        """Bind the arrays of an existing run (after :meth:`create_arrays` ran once)."""
        try:
            self.arrays[layout.COMMIT] = self.group[layout.COMMIT]  # type: ignore[assignment]
        except KeyError:
            return  # created but no block written yet: arrays come with the first batch
        try:
            self._bind_all()
        except (KeyError, ValueError) as err:
            raise CorruptRunError(
                f"the run at {self.location.url!r} is missing arrays ({err}); "
                "capture it again with overwrite=True"
            ) from err

    def _bind_all(self) -> None:
        s = self.settings
        root = [layout.SAMPLE, layout.LABEL, layout.PREDICTION, layout.TARGET_CLASS]
        for name in root:
            if name in self.group:
                self._bind(name, sample=True)
        for name in s.inputs if s.keep_inputs else ():
            self._bind(layout.input_path(name), sample=True)
        for name in s.outputs:
            self._bind(layout.output_path(name), sample=True)
        for method in s.attributions.get("methods", ()) if s.attributions else ():
            self._bind(layout.attribution_path(method), sample=True)
        for key in s.layers:
            base = layout.layer_path(key)
            self._bind(f"{base}/{layout.ACTIVATION}", sample=True)
            if s.gradients:
                self._bind(f"{base}/{layout.GRADIENT}", sample=True)
        stats = cast("zarr.Group", self.group[layout.RUN_STATS])
        self._stats_index = StatsIndex.from_attrs(stats.attrs)
        for name in (layout.SAMPLE_MEAN, layout.SAMPLE_MAX):
            self._bind(layout.run_stats_path(name), sample=True)
        for name in (layout.BLOCK_MOMENTS, layout.BLOCK_HISTOGRAM):
            self._bind(layout.run_stats_path(name), sample=False)
        edges = np.asarray(cast("zarr.Array[Any]", stats[layout.BIN_EDGES])[:])
        # NaN edges: killed before the first block fixed them; that block decides them.
        if not np.isnan(edges).all():
            self.edges = {key: edges[self._stats_index.edge_span(key)] for key in s.layers}
        if layout.INPUT_DIGEST in self.group:  # runs before issue 20 have none
            self._bind(layout.INPUT_DIGEST, sample=False)
        self._block_arrays.append(layout.COMMIT)
        self.capacity = min(self.arrays[p].shape[0] for p in self._sample_arrays)

    def _bind(self, path: str, *, sample: bool) -> None:
        self.arrays[path] = self.group[path]  # type: ignore[assignment]
        (self._sample_arrays if sample else self._block_arrays).append(path)

    @property
    def has_arrays(self) -> bool:
        """Whether the arrays exist (the first block created them)."""
        return layout.COMMIT in self.arrays

    @property
    def batch_size(self) -> int:
        """Samples per compute batch."""
        return self.settings.batch_size

    @property
    def block_size(self) -> int:
        """Samples per block (= per chunk along the sample axis); the batch size until
        :meth:`set_block_size` decides it."""
        return self.settings.block_size or self.settings.batch_size

    @property
    def block_size_decided(self) -> bool:
        """Whether the block size is fixed (given, decided, or the run's own)."""
        return self.settings.block_size is not None

    def set_block_size(self, block_size: int) -> None:
        """Fix a new run's block size, before its arrays exist (stored with the next
        :meth:`set_status`)."""
        if self.has_arrays and block_size != self.block_size:
            raise ValueError("the block size of a run with arrays cannot change")
        self.settings = replace(self.settings, block_size=int(block_size))

    def committed_counts(self) -> np.ndarray:
        """Samples committed per block."""
        if not self.has_arrays:
            return np.zeros(0, np.int64)
        counts: np.ndarray = commit.committed_blocks(self.arrays[layout.COMMIT])
        return counts

    def committed_prefix(self) -> int:
        """Samples committed from 0 without a gap: where a resume continues."""
        return int(commit.committed_prefix(self.committed_counts(), self.block_size))

    # ------------------------------------------------------------------ creating
    def _array(
        self,
        path: str,
        shape: tuple[int, ...],
        dtype: Any,
        dims: Sequence[str],
        *,
        chunks: tuple[int, ...],
        sample: bool,
        codec: Codec | None = None,
        attrs: dict[str, Any] | None = None,
        shards: tuple[int, ...] | None = None,
        fill_value: Any = None,
        resized: bool = True,
    ) -> None:
        """Declare an array (created by :meth:`_create_declared`); ``sample``: its first
        axis is the sample axis, else (``resized``) the block axis."""
        dtype = np.dtype(dtype)
        # Arrays without a codec (statistics, outputs, the sample coordinates) are small:
        # stored uncompressed, so that their chunks take the direct path (WholeChunks).
        # Every chunk ends with its CRC-32C (core/store/checksums.py), compressed or not.
        compressors: CompressorsLike = with_checksum(
            layout.compressors_for(codec, dtype.itemsize) if codec else None
        )
        if fill_value is None:
            fill_value = np.nan if dtype.kind == "f" else 0
        self._declared_arrays.append(
            (
                path,
                dict(
                    shape=shape,
                    dtype=dtype,
                    chunks=chunks,
                    shards=shards,
                    compressors=compressors,
                    fill_value=fill_value,
                    dimension_names=tuple(dims),
                    attributes=attrs or {},
                    config=_ARRAY_CONFIG,
                    chunk_key_encoding=CHUNK_KEYS,
                ),
            )
        )
        if sample:
            self._sample_arrays.append(path)
        elif resized:
            self._block_arrays.append(path)

    def create_arrays(
        self,
        *,
        capacity: int,
        nodes: Sequence[CaptureNode],
        activations: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        output_specs: Sequence[TensorSpec],
        inputs: Mapping[str, np.ndarray],
        input_specs: Sequence[TensorSpec],
        labels: np.ndarray | None,
        predictions: bool,
        edges: Mapping[str, np.ndarray] | None,
        target_classes: bool = False,
        gradient_targets: int = 0,
        attributions: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Create every array, sized for ``capacity`` samples, from the first batch's shapes.

        ``edges`` ``None``: the histogram edges are stored as NaN until :meth:`set_edges`
        (the first block fixes them from all its batches, written as they arrive).

        ``attributions`` (method -> first block's values) get arrays with the dims of the
        one model input, under ``/attributions``.
        """
        with _guard(self.location, "write a run to"):
            s = self.settings
            b = self.block_size
            capacity = max(b, math.ceil(capacity / b) * b)
            n_blocks = capacity // b
            self.capacity = capacity
            self._array(
                layout.SAMPLE,
                (capacity,),
                "int64",
                (layout.SAMPLE,),
                chunks=(b,),
                sample=True,
                attrs={"long_name": "global sample index"},
                fill_value=-1,
            )
            if labels is not None:
                label_dims = (layout.SAMPLE, *(f"label_dim_{i}" for i in range(labels.ndim - 1)))
                self._array(
                    layout.LABEL,
                    (capacity, *labels.shape[1:]),
                    labels.dtype,
                    label_dims,
                    chunks=(b, *labels.shape[1:]),
                    sample=True,
                    attrs={"long_name": "label"},
                    fill_value=-1 if labels.dtype.kind in "iu" else None,
                )
            if predictions:
                self._array(
                    layout.PREDICTION,
                    (capacity,),
                    "int64",
                    (layout.SAMPLE,),
                    chunks=(b,),
                    sample=True,
                    attrs={"long_name": "predicted class (top-1)"},
                    fill_value=-1,
                )
            self._gradient_targets = gradient_targets
            if target_classes:
                several = (gradient_targets,) if gradient_targets else ()
                self._array(
                    layout.TARGET_CLASS,
                    (capacity, *several),
                    "int64",
                    (layout.SAMPLE, *((layout.TARGET_DIM,) if several else ())),
                    chunks=(b, *several),
                    sample=True,
                    attrs={"long_name": "class the gradients differentiate"},
                    fill_value=-1,
                )
            self._group(layout.INPUTS, attributes={"long_name": "model inputs"})
            self._group(layout.OUTPUTS, attributes={"long_name": "model outputs"})
            self._group(layout.LAYERS, attributes={"long_name": "captured layers"})
            if s.keep_inputs:
                for spec in input_specs:
                    self._tensor(
                        layout.input_path(spec.name),
                        inputs[spec.name],
                        spec.dims,
                        spec.name,
                        codec=s.codec,
                    )
            for spec in output_specs:
                self._tensor(
                    layout.output_path(spec.name),
                    outputs[spec.name],
                    spec.dims,
                    spec.name,
                    codec=None,
                )
            if attributions:
                self._group(layout.ATTRIBUTIONS, attributes={"long_name": "input attributions"})
                params = dict(s.attributions)
                for method, value in attributions.items():
                    path = layout.attribution_path(method)
                    self._tensor(
                        path,
                        value,
                        input_specs[0].dims,
                        f"{method.replace('_', ' ')} attribution of {input_specs[0].name}",
                        codec=None,
                        dtype=np.float32,
                    )
                    # the method's parameters, and what the views need to draw it
                    self._declared_arrays[-1][1]["attributes"].update(
                        method=method,
                        kind="input attribution",
                        input=input_specs[0].name,
                        target=s.target,
                        **_attribution_params(method, params),
                    )
            by_key = {node.key: node for node in nodes}
            channels = [self._layer(by_key[key], activations[key]) for key in s.layers]
            self._stats_arrays(channels, edges, n_blocks)
            self._array(
                layout.INPUT_DIGEST,
                (n_blocks,),
                "uint32",
                (layout.BLOCK_DIM,),
                chunks=(1,),
                sample=False,
                attrs={"long_name": "CRC-32C of the block's model inputs as fed"},
                fill_value=0,
            )
            self._create_declared()
            # The commit record is published last, in a write of its own: a run killed
            # while it was being created has either no record (a resume creates the arrays
            # again) or every array (a resume binds them) — never a record without arrays.
            self._declared_arrays.append((layout.COMMIT, commit.record_spec(n_blocks)))
            self._create_declared()
            self._block_arrays.append(layout.COMMIT)  # has_arrays from now on

    def _create_declared(self) -> None:
        """Create the declared groups and arrays with their fixed values (bin edges), one
        store write each (:class:`~tensortap.core.store.staging.Staging`)."""
        staging = Staging(self.group.store_path)
        for path, attrs in self._declared_groups:
            staging.create_group(path, attrs)
        for path, spec in self._declared_arrays:
            staging.create_array(path, **spec)
        for path, value in self._declared_values:
            staging.set(path, value)
        staging.publish()
        for path, _spec in self._declared_arrays:
            self.arrays[path] = staging.open(path, config=_ARRAY_CONFIG)
        self._declared_groups, self._declared_arrays, self._declared_values = [], [], []

    def _unique_dims(
        self, path: str, dims: tuple[str, ...], sizes: tuple[int, ...]
    ) -> tuple[str, ...]:
        """Dims of arrays sharing a group must agree in size (xarray): rename clashes.

        Two inputs ``a (sample, unit=4)`` and ``b (sample, unit=2)`` in ``/inputs`` become
        ``unit`` and ``unit_b``; the first tensor keeps the plain names.
        """
        group, _, name = path.rpartition("/")
        used = self._dim_sizes.setdefault(group, {})
        unique = []
        for dim, size in zip(dims, sizes, strict=True):
            if used.get(dim, size) != size:
                dim = f"{dim}_{name}"
            used[dim] = size
            unique.append(dim)
        return tuple(unique)

    def _group(self, path: str, attributes: dict[str, Any]) -> None:
        self._declared_groups.append((path, attributes))

    def _tensor(
        self,
        path: str,
        first: np.ndarray,
        dims: Sequence[str],
        long_name: str,
        *,
        codec: Codec | None,
        dtype: Any = None,
    ) -> None:
        b = self.block_size
        per_sample = tuple(first.shape[1:])
        dims = (
            tuple(dims)
            if len(dims) == len(per_sample)
            else tuple(f"dim_{i}" for i in range(len(per_sample)))
        )
        dims = self._unique_dims(path, dims, per_sample)
        shards = None
        chunks = (b, *per_sample)
        if self.settings.sharded:  # one shard per block, one inner chunk per sample
            shards, chunks = chunks, (1, *per_sample)
        elif codec is None or codec.name == "none":
            sample_bytes = math.prod(per_sample) * np.dtype(dtype or first.dtype).itemsize
            rows = inner_chunk_rows(b, sample_bytes)
            if rows < b:  # a large block: a shard of small inner chunks, read one by one
                shards, chunks = chunks, (rows, *per_sample)
        self._array(
            path,
            (self.capacity, *per_sample),
            dtype or first.dtype,
            (layout.SAMPLE, *dims),
            chunks=chunks,
            shards=shards,
            sample=True,
            codec=codec,
            attrs={"long_name": long_name},
        )

    def _layer(self, node: CaptureNode, first: np.ndarray) -> int:
        """Declare a layer's group and tensors; returns its channels."""
        s = self.settings
        base = layout.layer_path(node.key)
        channel_dim = node.channel_dim
        dims = (
            node.dims
            if len(node.dims) == first.ndim - 1
            else tuple(f"dim_{i}" for i in range(first.ndim - 1))
        )
        self._group(
            base,
            attributes={
                "name": node.name,
                "layer_type": node.layer_type,
                "long_name": f"{node.name} ({node.layer_type})",
                "key": node.key,
                "dims": list(dims),
                "channel_dim": channel_dim,
                "path": list(node.path),
                "call_index": node.call_index,
                "output_index": node.output_index,
            },
        )
        stored = np.dtype(s.dtype) if s.dtype else first.dtype
        self._tensor(
            f"{base}/{layout.ACTIVATION}",
            first,
            dims,
            f"activation of {node.name}",
            codec=s.codec,
            dtype=stored,
        )
        if s.gradients:
            several = self._gradient_targets
            self._tensor(
                f"{base}/{layout.GRADIENT}",
                # Several targets: (sample, target, *dims), one chunk a block as ever.
                np.broadcast_to(first[:, None], (len(first), several, *first.shape[1:]))
                if several
                else first,
                (layout.TARGET_DIM, *dims) if several else dims,
                f"gradient of the target w.r.t. {node.name}",
                codec=s.codec,
                dtype=stored,
            )
        return first.shape[1 + dims.index(channel_dim)] if channel_dim in dims else 1

    def _stats_arrays(
        self, channels: Sequence[int], edges: Mapping[str, np.ndarray] | None, n_blocks: int
    ) -> None:
        """Declare the statistics group: every layer's statistics along flat axes, so a
        block writes four statistics objects however many layers the run has."""
        keys = self.settings.layers
        sizes = [len(edges[k]) if edges else DEFAULT_BINS + 1 for k in keys]
        index = StatsIndex.from_sizes(keys, channels, sizes)
        self._stats_index = index
        n_channels, n_slots = index.channels[-1], index.slots[-1]
        self._group(
            layout.RUN_STATS,
            attributes={
                **index.attrs(),
                "moments": list(MOMENTS),
                "histogram_slots": "per layer: bins..., underflow, overflow, zeros",
                "description": "per-block partial statistics of every layer's activation, "
                "computed at full precision; layer i spans [offsets[i], offsets[i+1]) of each "
                "flat axis; reduce over committed blocks (tensortap.open_run(...).stats)",
            },
        )
        flat_edges = (
            np.concatenate([np.asarray(edges[k], np.float64) for k in keys])
            if edges
            else np.full(index.edges[-1], np.nan)
        )
        path = layout.run_stats_path
        self._array(
            path(layout.BIN_EDGES),
            flat_edges.shape,
            "float64",
            (layout.STAT_EDGE_DIM,),
            chunks=flat_edges.shape,
            sample=False,
            resized=False,
            attrs={"long_name": "histogram bin edges of every layer"},
        )
        self._declared_values.append((path(layout.BIN_EDGES), flat_edges))
        if edges:
            self.edges = {key: np.asarray(edges[key]) for key in keys}
        self._array(
            path(layout.BLOCK_MOMENTS),
            (n_blocks, len(MOMENTS), n_channels),
            "float64",
            (layout.BLOCK_DIM, layout.MOMENT_DIM, layout.STAT_CHANNEL_DIM),
            chunks=(1, len(MOMENTS), n_channels),
            sample=False,
            attrs={"long_name": "per-block moments: " + ", ".join(MOMENTS)},
        )
        self._array(
            path(layout.BLOCK_HISTOGRAM),
            (n_blocks, n_slots),
            "int64",
            (layout.BLOCK_DIM, layout.STAT_SLOT_DIM),
            chunks=(1, n_slots),
            sample=False,
            attrs={"long_name": "per-block histogram counts, then underflow, overflow, zeros"},
        )
        for name, what in ((layout.SAMPLE_MEAN, "mean"), (layout.SAMPLE_MAX, "max")):
            self._array(
                path(name),
                (self.capacity, n_channels),
                "float32",
                (layout.SAMPLE, layout.STAT_CHANNEL_DIM),
                chunks=(self.block_size, n_channels),
                sample=True,
                attrs={"long_name": f"per-sample channel {what}"},
            )

    # ------------------------------------------------------------------ writing
    def set_edges(self, edges: Mapping[str, np.ndarray]) -> None:
        """Store the histogram edges the first block fixed (before that block's commit)."""
        keys = self.settings.layers
        flat = np.concatenate([np.asarray(edges[k], np.float64) for k in keys])
        with _guard(self.location, "write statistics to"):
            self._write_items(
                [(self.arrays[layout.run_stats_path(layout.BIN_EDGES)], slice(0, len(flat)), flat)]
            )
        self.edges = {key: np.asarray(edges[key]) for key in keys}

    def ensure_capacity(self, stop: int) -> None:
        """Grow every array to hold ``stop`` samples (unknown-length data only).

        Grows by doubling, so a run of N samples resizes O(log N) times; call it from one
        thread only, never while another writer is writing (docs/design.md §6).
        """
        if stop <= self.capacity:
            return
        b = self.block_size
        capacity = max(stop, 2 * self.capacity)
        self._resize(math.ceil(capacity / b) * b)

    def _resize(self, capacity: int) -> None:
        b = self.block_size
        shapes = [(self.arrays[path], capacity) for path in self._sample_arrays] + [
            (self.arrays[path], math.ceil(capacity / b)) for path in self._block_arrays
        ]

        async def resize() -> None:  # each array updates its metadata in place
            await asyncio.gather(*(a.async_array.resize((n, *a.shape[1:])) for a, n in shapes))

        with _guard(self.location, "resize arrays of"):
            sync(resize())
        self.capacity = capacity

    def write_root(
        self,
        start: int,
        *,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        labels: np.ndarray | None,
        predictions: np.ndarray | None,
        target_classes: np.ndarray | None = None,
        attributions: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Write the block's sample index, labels, predictions, inputs, outputs and input
        attributions.

        Returns the number of bytes handed to the store (before compression).
        """
        n = len(next(iter(outputs.values())))
        stop = start + n
        nbytes = 0
        rows = slice(start, stop)
        items: list[tuple[zarr.Array[Any], Any, Any]] = [
            (self.arrays[layout.SAMPLE], rows, np.arange(start, stop, dtype=np.int64))
        ]
        if labels is not None and layout.LABEL in self.arrays:
            items.append((self.arrays[layout.LABEL], rows, labels))
        if predictions is not None and layout.PREDICTION in self.arrays:
            items.append((self.arrays[layout.PREDICTION], rows, predictions))
        if target_classes is not None and layout.TARGET_CLASS in self.arrays:
            items.append(
                (self.arrays[layout.TARGET_CLASS], rows, np.asarray(target_classes, np.int64))
            )
        if layout.INPUT_DIGEST in self.arrays:
            digest = np.uint32(input_digest(inputs))
            items.append((self.arrays[layout.INPUT_DIGEST], start // self.block_size, digest))
        if self.settings.keep_inputs:
            for name, value in inputs.items():
                items.append((self.arrays[layout.input_path(name)], rows, value))
                nbytes += value.nbytes
        for name, value in outputs.items():
            items.append((self.arrays[layout.output_path(name)], rows, value))
            nbytes += value.nbytes
        for method, value in (attributions or {}).items():
            value = np.asarray(value, dtype=np.float32)
            items.append((self.arrays[layout.attribution_path(method)], rows, value))
            nbytes += value.nbytes
        with _guard(self.location, "write to"):
            self._write_items(items)
        return nbytes

    def write_layer(
        self,
        key: str,
        start: int,
        activation: np.ndarray | None,
        gradient: np.ndarray | None,
    ) -> int:
        """Write one layer's block: activation and gradient (either may be ``None``:
        streamed instead, core/pipeline.py).  Thread-safe across distinct keys.  Returns
        the bytes written (after dtype narrowing, before compression).
        """
        s = self.settings
        base = layout.layer_path(key)
        given = activation if activation is not None else gradient
        stop = start + (0 if given is None else len(given))
        stored = np.dtype(s.dtype) if s.dtype else None
        nbytes = 0
        rows = slice(start, stop)
        items: list[tuple[zarr.Array[Any], Any, Any]] = []
        for name, value in ((layout.ACTIVATION, activation), (layout.GRADIENT, gradient)):
            if value is None:
                continue
            if stored is not None and value.dtype != stored:
                value = value.astype(stored)
            items.append((self.arrays[f"{base}/{name}"], rows, value))
            nbytes += value.nbytes
        with _guard(self.location, "write to"):
            self._write_items(items)
        return nbytes

    def open_stream(self, path: str, block: int) -> ShardStream | None:
        """A stream writing shard ``block`` of the array at ``path`` batch by batch, or
        ``None`` when that array is written whole at the block's end (compressed, small,
        not local; :meth:`WholeChunks.open_stream`)."""
        with _guard(self.location, "write to"):
            return self._whole_chunks.open_stream(self.arrays[path], block)

    def write_stats(self, start: int, stats: Mapping[str, BlockStats]) -> None:
        """Write the block's statistics of every layer: four objects, in layer order along
        the flat axes of the statistics group (call it once the block's layers are reduced).
        """
        keys = self.settings.layers
        parts = [stats[key] for key in keys]
        rows = slice(start, start + len(parts[0].sample_mean))
        block = start // self.block_size
        path = layout.run_stats_path

        def flat(values: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(v, dtype) for v in values], axis=-1)

        items: list[tuple[zarr.Array[Any], Any, Any]] = [
            (
                self.arrays[path(layout.SAMPLE_MEAN)],
                rows,
                flat([p.sample_mean for p in parts], np.float32),
            ),
            (
                self.arrays[path(layout.SAMPLE_MAX)],
                rows,
                flat([p.sample_max for p in parts], np.float32),
            ),
            (
                self.arrays[path(layout.BLOCK_MOMENTS)],
                block,
                flat([p.moments for p in parts], np.float64),
            ),
            (
                self.arrays[path(layout.BLOCK_HISTOGRAM)],
                block,
                flat([p.histogram for p in parts], np.int64),
            ),
        ]
        with _guard(self.location, "write statistics to"):
            self._write_items(items)

    def _write_items(self, items: Sequence[tuple[zarr.Array[Any], Any, Any]]) -> None:
        """Write ``(array, selection, value)`` items: whole uncompressed chunks of a local
        run directly (:class:`WholeChunks`), the rest through zarr, concurrently."""
        rest = [item for item in items if not self._whole_chunks.write(*item)]
        if rest:
            _set_all(rest)

    def commit(self, start: int, n_samples: int) -> None:
        """Mark the block starting at ``start`` committed — only after all its writes."""
        record = self.arrays[layout.COMMIT]
        block = start // self.block_size
        with _guard(self.location, "commit to"):
            if not self._whole_chunks.write(record, block, np.int64(n_samples)):
                commit.mark_committed(record, block, n_samples)

    def set_status(self, status: str, **extra: Any) -> None:
        """Update ``status`` (and other keys) in the root attrs."""
        with _guard(self.location, "update"):
            stored = cast("Mapping[str, Any]", self.group.attrs.get(layout.ATTRS_KEY, {}))
            attrs = dict(stored)
            attrs.update(status=status, block_size=self.settings.block_size, **extra)
            self.group.attrs.update({layout.ATTRS_KEY: attrs})

    def finish(self, status: str, **extra: Any) -> int:
        """End the run: trim arrays to the committed samples when they form a prefix, and
        set ``status`` (and the ``extra`` root attrs).  Returns the committed samples."""
        counts = self.committed_counts()
        committed = int(counts.sum())
        prefix = commit.committed_prefix(counts, self.block_size)
        if self.has_arrays and prefix == committed and committed and committed != self.capacity:
            # Exact sizes let plain xarray open the run with no fill-value tail.
            self._resize(committed)
        if self.has_arrays and np.count_nonzero(counts) >= self.SUMMARY_MIN_BLOCKS:
            self._write_summaries(counts, committed)
        self.set_status(status, samples=committed, **extra)
        return committed

    def _write_summaries(self, counts: np.ndarray, committed: int) -> None:
        """Store each layer's committed partials merged into one, so a reader of a finished
        run reduces one small chunk per layer instead of one per block.

        Written after the last commit, with a ``committed`` attr that lets readers ignore a
        stale summary (a resumed run commits more); the summary's document, which holds the
        attr, is written after its values (:meth:`Staging.publish`).
        """
        blocks = np.flatnonzero(counts)
        upto = int(blocks[-1]) + 1
        path = layout.run_stats_path
        moments_array = self.arrays[path(layout.BLOCK_MOMENTS)]
        histogram_array = self.arrays[path(layout.BLOCK_HISTOGRAM)]

        async def read() -> tuple[Any, Any]:
            return await asyncio.gather(
                moments_array.async_array.getitem(slice(0, upto)),
                histogram_array.async_array.getitem(slice(0, upto)),
            )

        with _guard(self.location, "write statistics to"):
            moments, histograms = sync(read())
            # Moments merge per channel and histograms add per slot, so the flat arrays of
            # every layer merge in one call.
            merged, hist = merge_blocks(np.asarray(moments)[blocks], np.asarray(histograms)[blocks])
            staging = Staging(self.group.store_path)
            for name, value, dims in (
                (layout.SUMMARY_MOMENTS, merged, (layout.MOMENT_DIM, layout.STAT_CHANNEL_DIM)),
                (layout.SUMMARY_HISTOGRAM, hist, (layout.STAT_SLOT_DIM,)),
            ):
                staging.create_array(
                    path(name),
                    shape=value.shape,
                    dtype=value.dtype,
                    chunks=value.shape,
                    dimension_names=dims,
                    fill_value=0,
                    compressors=with_checksum(None),
                    attributes={
                        "long_name": "committed block partials merged",
                        "committed": committed,
                    },
                )
                staging.set(path(name), value)
            staging.publish()


def _attribution_params(method: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of one attribution method, from ``AttributionSpec.describe()``."""
    names = {
        "smoothgrad": ("n_samples", "sigma", "seed"),
        "integrated_gradients": ("steps", "rule", "baseline"),
    }.get(method, ())
    return {name: spec[name] for name in names}
