"""The training-run store: one run with a ``step`` axis (docs/store-format.md, *Training runs*).

A training run holds a fixed probe batch captured at many training steps.  Every array
that changes with training has ``step`` as its first dimension, one chunk per step, and
the root array ``committed(step)`` is the commit record: a step counts once every array of
it is written, and its record entry is written last — the rule of the sample-block run,
with a step in place of a block.  Arrays are sized with room to grow (capacity doubles),
so a reader trusts the commit record, never the array shapes.

Statistics-only steps write no tensor chunk (the ``activation`` chunk of such a step stays
absent on disk and reads as the fill value, NaN), and a run whose policy never stores
tensors has no ``activation`` array at all.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from tensortap.core.errors import ResumeMismatchError, RunExistsError, StorageError
from tensortap.core.graph import CaptureNode
from tensortap.core.stats import MOMENTS, BlockStats
from tensortap.core.store import layout
from tensortap.core.store.checksums import with_checksum
from tensortap.core.store.run_stats import StatsIndex
from tensortap.core.store.staging import Staging
from tensortap.core.store.storage import Location, read_json
from tensortap.core.store.whole_chunks import WholeChunks
from tensortap.core.version import __version__

__all__ = [
    "KIND",
    "PER_LAYER_STATS",
    "READABLE_SCHEMAS",
    "SCHEMA",
    "StepRecord",
    "StepSettings",
    "StepWriter",
    "WeightStats",
]

#: ``attrs["tensortap"]["kind"]`` of a training run (sample-block runs have no ``kind``).
KIND = "training"
#: Version of the training-run layout, written in ``attrs["tensortap"]["schema"]``: its own
#: numbering, not the sample-block run's (:data:`~tensortap.core.store.layout.SCHEMA`).
#: 3: every layer's statistics in the root groups :data:`STEP_STATS` and
#: :data:`STEP_GRADIENT_STATS`.
SCHEMA = 3
#: Schemas the reader takes.  Runs written before the pin carry the sample-block schema of
#: their time (1 or 2) and a ``stats`` group in each layer's group (:data:`PER_LAYER_STATS`).
READABLE_SCHEMAS = (1, 2, 3)
#: Schemas with the statistics in each layer's group.
PER_LAYER_STATS = (1, 2)

# Root arrays of a training run (besides ``sample``, ``label`` and ``committed``).
STEP = "step"
EPOCH = "epoch"
BATCH = "batch"
WALL_TIME = "wall_time"
#: Whether the step stored tensors (1) or statistics only (0).
HAS_TENSORS = "has_tensors"
#: Step arrays of the statistics groups.
MOMENTS_ARRAY = "moments"
HISTOGRAM_ARRAY = "histogram"
#: Root groups of every layer's statistics of the activations and of the gradients (schema
#: 3): flat ``stat_channel``, ``stat_slot``, ``stat_bin_edge`` axes, each layer's span in
#: the group's attrs (:class:`~tensortap.core.store.run_stats.StatsIndex`), so a step
#: writes five statistics chunks whatever the number of layers.
STEP_STATS = "step_stats"
STEP_GRADIENT_STATS = "step_gradient_stats"
#: Schemas 1 and 2: the per-layer group of the gradients' statistics (``stats``: the
#: activations').
GRADIENT_STATS = "gradient_stats"
#: Group of the per-parameter weight statistics.
WEIGHTS = "weights"
WEIGHT_MOMENTS = "moments"
WEIGHT_GRADIENT_MOMENTS = "gradient_moments"
PARAMETER_DIM = "parameter"
_CONFIG: Any = {"write_empty_chunks": True}
_STATS_ARRAYS = (
    MOMENTS_ARRAY, HISTOGRAM_ARRAY, layout.BIN_EDGES, layout.SAMPLE_MEAN, layout.SAMPLE_MAX
)  # fmt: skip
#: Capacity of a new run, in steps (doubles when full).
INITIAL_CAPACITY = 16


@dataclass(frozen=True, slots=True)
class StepSettings:
    """What a training run is captured with; stored in the root attrs."""

    framework: str
    model: dict[str, Any]
    layers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    gradients: bool
    dtype: str | None
    target: str
    policy: dict[str, Any]
    probe_samples: int
    class_names: tuple[str, ...] | None = None
    parameters: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def attrs(self, status: str) -> dict[str, Any]:
        """The root ``tensortap`` attribute block of a training run."""
        block: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": KIND,
            "version": __version__,
            "framework": self.framework,
            "model": self.model,
            "target": self.target,
            "score": self.info.get("score"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "status": status,
            "layers": list(self.layers),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "gradients": self.gradients,
            "dtype": self.dtype,
            "policy": self.policy,
            "samples": self.probe_samples,
            "batch_size": self.probe_samples,
            "keep_inputs": True,
            "parameters": list(self.parameters),
            "trigger": None,
            "info": self.info,
        }
        if self.class_names is not None:
            block["class_names"] = list(self.class_names)
        return block

    def identity(self) -> dict[str, Any]:
        """What must match for a second training session to append to a run."""
        return {
            "framework": self.framework,
            "model": self.model,
            "layers": list(self.layers),
            "gradients": self.gradients,
            "dtype": self.dtype,
            "samples": self.probe_samples,
        }


@dataclass(frozen=True, slots=True)
class WeightStats:
    """Per-parameter statistics of one step: rows as in :data:`tensortap.core.stats.MOMENTS`.

    Attributes
    ----------
    moments : ndarray, shape (parameter, 7)
        Of the weights.
    gradient_moments : ndarray, shape (parameter, 7) or None
        Of the weights' gradients, when the backend had them.
    """

    moments: np.ndarray
    gradient_moments: np.ndarray | None = None


@dataclass(slots=True)
class StepRecord:
    """Everything one step writes."""

    step: int
    epoch: int
    batch: int
    wall_time: float
    stats: dict[str, BlockStats]
    edges: dict[str, np.ndarray]
    gradient_stats: dict[str, BlockStats] = field(default_factory=dict)
    gradient_edges: dict[str, np.ndarray] = field(default_factory=dict)
    activations: dict[str, np.ndarray] | None = None
    gradients: dict[str, np.ndarray] | None = None
    weights: WeightStats | None = None


def _offsets(sizes: Sequence[int]) -> tuple[int, ...]:
    """``(0, sizes[0], sizes[0] + sizes[1], ...)``: spans one after the other."""
    return (0, *(int(v) for v in np.cumsum(sizes, dtype=np.int64)))


def _root_block(location: Location) -> dict[str, Any] | None:
    meta = read_json(location.store, "zarr.json")
    if not isinstance(meta, dict):
        return None
    block = meta.get("attributes", {}).get(layout.ATTRS_KEY)
    return block if isinstance(block, dict) else None


class StepWriter:
    """Creates a training run, appends committed steps, and marks its end.

    Use :meth:`open`; one writer per run (it is not safe to append from two processes).
    """

    def __init__(self, location: Location, group: zarr.Group, settings: StepSettings) -> None:
        self.location = location
        self.group = group
        self.settings = settings
        self._arrays: dict[str, zarr.Array[Any]] = {}
        self._tensor_arrays: dict[str, zarr.Array[Any]] = {}
        #: Each statistics group's layer spans, once the group exists.
        self._indexes: dict[str, StatsIndex] = {}
        self._capacity = 0
        self._next = 0
        self._direct = WholeChunks(location.store)

    @staticmethod
    def check(location: Location, settings: StepSettings, *, overwrite: bool = False) -> str:
        """``"append"`` (a training run of the same model is there) or ``"create"``; raises
        what :meth:`open` raises, without writing anything."""
        existing = _root_block(location)
        has_content = read_json(location.store, "zarr.json") is not None
        if existing is not None and not overwrite:
            if existing.get("kind") != KIND:
                raise RunExistsError(
                    f"{location.url!r} holds a capture run, not a training run; give the "
                    "callback another store, or overwrite=True to replace it"
                )
            if existing.get("schema") != SCHEMA:
                raise ResumeMismatchError(
                    f"{location.url!r} holds a training run of schema "
                    f"{existing.get('schema')!r} (an earlier tensortap); new steps are "
                    f"written in schema {SCHEMA}: give another store, or overwrite=True to "
                    "replace it"
                )
            theirs = {k: existing.get(k) for k in settings.identity()}
            ours = settings.identity()
            if theirs != ours:
                diff = [k for k in ours if theirs[k] != ours[k]]
                raise ResumeMismatchError(
                    f"{location.url!r} holds a training run of another model (different "
                    f"{', '.join(diff)}: {theirs[diff[0]]!r} there, {ours[diff[0]]!r} here); "
                    "give another store, or overwrite=True to replace it"
                )
            return "append"
        if has_content and existing is None:
            raise RunExistsError(
                f"{location.url!r} holds data that is not a tensortap run; it is never "
                "deleted — choose an empty location"
            )
        return "create"

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        location: Location,
        settings: StepSettings,
        *,
        overwrite: bool = False,
        nodes: Sequence[CaptureNode] = (),
        probe_inputs: Mapping[str, np.ndarray] | None = None,
        labels: np.ndarray | None = None,
    ) -> StepWriter:
        """Open a new training run, or append to one of the same model.

        Raises
        ------
        RunExistsError
            The location holds a sample-block run or non-run data (never replaced unless
            ``overwrite`` and it is a tensortap run).
        ResumeMismatchError
            It holds a training run of another model, layer set, dtype or probe size.
        """
        if cls.check(location, settings, overwrite=overwrite) == "append":
            writer = cls(location, zarr.open_group(location.store, mode="r+"), settings)
            writer._reattach()
            return writer
        has_content = read_json(location.store, "zarr.json") is not None
        try:
            group = zarr.open_group(location.store, mode="w" if has_content else "a")
            group.attrs.update(
                {layout.ATTRS_KEY: settings.attrs("capturing"), "coordinates": "label"}
            )
        except OSError as err:
            raise StorageError(f"cannot write the training run at {location.url!r}: {err}") from err
        writer = cls(location, group, settings)
        writer._create_root(nodes, probe_inputs or {}, labels)
        return writer

    def _reattach(self) -> None:
        """Bind the arrays of an existing run and continue after its last committed step."""
        record = self.group[layout.COMMIT]
        assert isinstance(record, zarr.Array)
        counts = np.asarray(record[...])
        committed = np.flatnonzero(counts)
        self._next = int(committed[-1]) + 1 if len(committed) else 0
        self._capacity = int(record.shape[0])
        for path in self._step_array_paths():
            node = self.group.get(path)
            if isinstance(node, zarr.Array):
                self._arrays[path] = node
        for path in (STEP_STATS, STEP_GRADIENT_STATS):
            node = self.group.get(path)
            if isinstance(node, zarr.Group):
                self._indexes[path] = StatsIndex.from_attrs(node.attrs)
        for key in self.settings.layers:
            for name in (layout.ACTIVATION, layout.GRADIENT):
                node = self.group.get(f"{layout.layer_path(key)}/{name}")
                if isinstance(node, zarr.Array):
                    self._tensor_arrays[f"{key}/{name}"] = node
        self.set_status("capturing")

    def _step_array_paths(self) -> list[str]:
        paths = [STEP, EPOCH, BATCH, WALL_TIME, HAS_TENSORS, layout.COMMIT]
        for base in (STEP_STATS, STEP_GRADIENT_STATS):
            paths += [f"{base}/{name}" for name in _STATS_ARRAYS]
        paths += [f"{WEIGHTS}/{WEIGHT_MOMENTS}", f"{WEIGHTS}/{WEIGHT_GRADIENT_MOMENTS}"]
        return paths

    # ------------------------------------------------------------------ creating
    @staticmethod
    def _spec(
        shape: tuple[int, ...],
        dtype: Any,
        dims: tuple[str, ...],
        fill: Any,
        chunks: tuple[int, ...] | None = None,
    ) -> dict[str, Any]:
        """``create_array`` arguments: one chunk per step, uncompressed but for the CRC-32C
        of every chunk (docs/store-format.md, *Checksums*), ``.`` keys."""
        return {
            "shape": shape,
            "chunks": chunks or (1, *shape[1:]),
            "dtype": dtype,
            "fill_value": fill,
            "dimension_names": dims,
            "compressors": with_checksum(None),
            "chunk_key_encoding": {"name": "default", "separator": "."},
        }

    def _publish(self, staging: Staging, step_arrays: Sequence[str]) -> None:
        """Write the staged nodes (one store write each) and bind the step arrays."""
        staging.publish()
        for path in step_arrays:
            self._arrays[path] = staging.open(path, config=_CONFIG)

    def _set(self, array: zarr.Array[Any], index: int, value: Any) -> None:
        """``array[index] = value`` for one step's chunk: straight to its file on local
        folders (zarr spends ~1 ms of CPU a call otherwise), through zarr elsewhere."""
        if not self._direct.write(array, index, value):
            array[index] = value

    def _create_root(
        self,
        nodes: Sequence[CaptureNode],
        probe_inputs: Mapping[str, np.ndarray],
        labels: np.ndarray | None,
    ) -> None:
        cap = INITIAL_CAPACITY
        self._capacity = cap
        n = self.settings.probe_samples
        staging = Staging(self.group.store_path)
        staging.create_array(
            layout.SAMPLE, **self._spec((n,), np.int64, (layout.SAMPLE,), -1, chunks=(n,))
        )
        staging.set(layout.SAMPLE, np.arange(n))
        if labels is not None:
            labels = np.asarray(labels)
            dims = (layout.SAMPLE, *(f"label_dim_{i}" for i in range(labels.ndim - 1)))
            staging.create_array(
                layout.LABEL, **self._spec(labels.shape, labels.dtype, dims, 0, labels.shape)
            )
            staging.set(layout.LABEL, labels)
        staging.create_group(layout.INPUTS, {})
        for name, value in probe_inputs.items():
            value = np.asarray(value)
            dims = (layout.SAMPLE, *(f"{name}_dim_{i}" for i in range(value.ndim - 1)))
            path = layout.input_path(name)
            staging.create_array(path, **self._spec(value.shape, value.dtype, dims, 0, value.shape))
            staging.set(path, value)
        step_arrays = []
        for path, dtype, fill in (
            (STEP, np.int64, -1),
            (EPOCH, np.int64, -1),
            (BATCH, np.int64, -1),
            (WALL_TIME, np.float64, np.nan),
            (HAS_TENSORS, np.int8, 0),
            (layout.COMMIT, np.int8, 0),
        ):
            staging.create_array(path, **self._spec((cap,), dtype, (STEP,), fill))
            step_arrays.append(path)
        staging.create_group(layout.LAYERS, {})
        for node in nodes:
            staging.create_group(
                layout.layer_path(node.key),
                {
                    "name": node.name,
                    "layer_type": node.layer_type,
                    "long_name": f"{node.name} ({node.layer_type})",
                    "key": node.key,
                    "dims": list(node.dims),
                    "channel_dim": node.channel_dim,
                    "path": list(node.path),
                },
            )
        self._publish(staging, step_arrays)

    def _new_arrays(self, record: StepRecord, dims: Mapping[str, Sequence[str]]) -> None:
        """Create the step arrays that ``record`` writes for the first time — statistics
        groups, tensor arrays, weight statistics — all in one publish (one store write per
        document, no zarr call each); a layer's gradients may first appear when the
        non-finite trigger fires."""
        cap = self._capacity
        n = self.settings.probe_samples
        staging = Staging(self.group.store_path)
        step_arrays: list[str] = []
        for base, stats, edges in (
            (STEP_STATS, record.stats, record.edges),
            (STEP_GRADIENT_STATS, record.gradient_stats, record.gradient_edges),
        ):
            if not stats or base in self._indexes:
                continue
            keys = [k for k in self.settings.layers if k in stats]
            keys += [k for k in stats if k not in keys]
            index = StatsIndex(
                tuple(keys),
                _offsets([stats[k].moments.shape[1] for k in keys]),
                _offsets([stats[k].histogram.shape[0] for k in keys]),
                _offsets([len(edges[k]) for k in keys]),
            )
            staging.create_group(base, {**index.attrs(), "moments": list(MOMENTS)})
            channels, slots, n_edges = index.channels[-1], index.slots[-1], index.edges[-1]
            specs = (
                (MOMENTS_ARRAY, (cap, len(MOMENTS), channels), np.float64,
                 (STEP, layout.MOMENT_DIM, layout.STAT_CHANNEL_DIM), np.nan),
                (HISTOGRAM_ARRAY, (cap, slots), np.int64, (STEP, layout.STAT_SLOT_DIM), 0),
                (layout.BIN_EDGES, (cap, n_edges), np.float64,
                 (STEP, layout.STAT_EDGE_DIM), np.nan),
                (layout.SAMPLE_MEAN, (cap, n, channels), np.float32,
                 (STEP, layout.SAMPLE, layout.STAT_CHANNEL_DIM), np.nan),
                (layout.SAMPLE_MAX, (cap, n, channels), np.float32,
                 (STEP, layout.SAMPLE, layout.STAT_CHANNEL_DIM), np.nan),
            )  # fmt: skip
            for name, shape, dtype, array_dims, fill in specs:
                staging.create_array(f"{base}/{name}", **self._spec(shape, dtype, array_dims, fill))
                step_arrays.append(f"{base}/{name}")
            self._indexes[base] = index
        tensors: list[tuple[str, str]] = []
        if record.activations is not None:
            for name, values in (
                (layout.ACTIVATION, record.activations),
                (layout.GRADIENT, record.gradients or {}),
            ):
                for key, value in values.items():
                    if f"{key}/{name}" in self._tensor_arrays:
                        continue
                    path = f"{layout.layer_path(key)}/{name}"
                    spec = self._spec(
                        (cap, *value.shape),
                        self.settings.dtype or value.dtype,
                        (STEP, layout.SAMPLE, *dims[key]),
                        np.nan,
                    )
                    staging.create_array(path, **spec)
                    tensors.append((f"{key}/{name}", path))
        if record.weights is not None and f"{WEIGHTS}/{WEIGHT_MOMENTS}" not in self._arrays:
            staging.create_group(
                WEIGHTS,
                {"parameters": list(self.settings.parameters), "moments": list(MOMENTS)},
            )
            shape = (cap, len(self.settings.parameters), len(MOMENTS))
            for name in (WEIGHT_MOMENTS, WEIGHT_GRADIENT_MOMENTS):
                path = f"{WEIGHTS}/{name}"
                weight_dims = (STEP, PARAMETER_DIM, layout.MOMENT_DIM)
                staging.create_array(path, **self._spec(shape, np.float64, weight_dims, np.nan))
                step_arrays.append(path)
        if not step_arrays and not tensors:
            return
        self._publish(staging, step_arrays)
        for key, path in tensors:
            self._tensor_arrays[key] = staging.open(path, config=_CONFIG)

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity <= needed:
            capacity *= 2
        for array in (*self._arrays.values(), *self._tensor_arrays.values()):
            array.resize((capacity, *array.shape[1:]))
        self._capacity = capacity

    # ------------------------------------------------------------------ writing
    @property
    def next_index(self) -> int:
        """Position along ``step`` that the next step takes."""
        return self._next

    def write(self, record: StepRecord, dims: Mapping[str, Sequence[str]]) -> int:
        """Write one step and commit it last; returns its position along ``step``.

        ``dims`` gives each layer's dims (without ``sample``), for its tensor arrays.
        """
        index = self._next
        if index >= self._capacity:
            self._grow(index)
        a = self._arrays
        self._new_arrays(record, dims)
        if record.stats:
            self._write_stats(STEP_STATS, index, record.stats, record.edges)
        if record.gradient_stats:
            self._write_stats(
                STEP_GRADIENT_STATS, index, record.gradient_stats, record.gradient_edges
            )
        if record.activations is not None:
            tensor = self._tensor_arrays
            for key, value in record.activations.items():
                self._set(tensor[f"{key}/{layout.ACTIVATION}"], index, value)
            for key, value in (record.gradients or {}).items():
                self._set(tensor[f"{key}/{layout.GRADIENT}"], index, value)
        if record.weights is not None:
            self._set(a[f"{WEIGHTS}/{WEIGHT_MOMENTS}"], index, record.weights.moments)
            if record.weights.gradient_moments is not None:
                self._set(
                    a[f"{WEIGHTS}/{WEIGHT_GRADIENT_MOMENTS}"],
                    index,
                    record.weights.gradient_moments,
                )
        self._set(a[STEP], index, record.step)
        self._set(a[EPOCH], index, record.epoch)
        self._set(a[BATCH], index, record.batch)
        self._set(a[WALL_TIME], index, record.wall_time)
        self._set(a[HAS_TENSORS], index, int(record.activations is not None))
        self._set(a[layout.COMMIT], index, 1)  # last: the step now counts
        self._next = index + 1
        return index

    def _write_stats(
        self,
        base: str,
        index: int,
        stats: Mapping[str, BlockStats],
        edges: Mapping[str, np.ndarray],
    ) -> None:
        """Write every layer's statistics of one step as one chunk per array, each layer
        on its span of the flat axes (a layer missing from ``stats`` keeps the fills)."""
        spans = self._indexes[base]
        n = self.settings.probe_samples
        channels, slots, n_edges = spans.channels[-1], spans.slots[-1], spans.edges[-1]
        moments = np.full((len(MOMENTS), channels), np.nan)
        histogram = np.zeros(slots, np.int64)
        bin_edges = np.full(n_edges, np.nan)
        sample_mean = np.full((n, channels), np.nan, np.float32)
        sample_max = np.full((n, channels), np.nan, np.float32)
        for key in spans.layers:
            block = stats.get(key)
            if block is None:
                continue
            c = spans.channel_span(key)
            moments[:, c] = block.moments
            histogram[spans.slot_span(key)] = block.histogram
            bin_edges[spans.edge_span(key)] = edges[key]
            sample_mean[:, c] = block.sample_mean
            sample_max[:, c] = block.sample_max
        a = self._arrays
        for name, value in zip(
            _STATS_ARRAYS, (moments, histogram, bin_edges, sample_mean, sample_max), strict=True
        ):
            self._set(a[f"{base}/{name}"], index, value)

    def set_status(self, status: str, **extra: Any) -> None:
        """Rewrite the root block's ``status`` (and any ``extra`` keys)."""
        block = dict(self.group.attrs[layout.ATTRS_KEY])  # type: ignore[arg-type]
        block.update(status=status, **extra)
        self.group.attrs[layout.ATTRS_KEY] = block

    def record_trigger(self, trigger: dict[str, Any]) -> None:
        """Store the first non-finite trigger (step, layer, where) in the root attrs."""
        block = dict(self.group.attrs[layout.ATTRS_KEY])  # type: ignore[arg-type]
        if block.get("trigger") is None:
            block["trigger"] = trigger
            self.group.attrs[layout.ATTRS_KEY] = block

    def finish(self, status: str = "complete") -> None:
        """Mark the run's end; the committed steps stay as they are."""
        self.set_status(status, steps=self._next)
