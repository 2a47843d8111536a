"""Reading runs: ``tensortap.open_run`` and :class:`Run` (docs/contracts.md).

A :class:`Run` is a read-only, lazy view of the **committed** samples of a run (arrays are
Dask-backed, one chunk a block, for runs on disk or object storage; an in-memory run uses
xarray's lazy indexing, its data being in memory already): it reads the commit record first, then opens the arrays, so a reader that opens while
a capture runs never sees a partial block.  :meth:`Run.refresh` re-reads the commit record
(live viewers call it to follow a capture).
"""

from __future__ import annotations

import copy
import difflib
import time
import warnings
from typing import Any, cast

import numpy as np
import xarray as xr
import zarr

from tensortap.core.errors import (
    CorruptRunError,
    LayerNotFoundError,
    NoGradientsError,
    RunNotFoundError,
    StorageError,
)
from tensortap.core.selection import resolve_layer_key
from tensortap.core.stats import reduce_blocks
from tensortap.core.store import commit, layout
from tensortap.core.store.checksums import CheckedStore
from tensortap.core.store.object_placement import REPLACING
from tensortap.core.store.run_stats import StatsIndex
from tensortap.core.store.storage import Location, open_location, read_json, total_size

__all__ = ["Run", "open_run"]


def open_run(path_or_url: Any, storage_options: dict[str, Any] | None = None) -> Run:
    """Open a run for reading.

    Parameters
    ----------
    path_or_url : str, os.PathLike or zarr Store
        A run folder, an ``s3://`` URL, or a zarr store.
    storage_options : dict, optional
        fsspec options for URLs.

    Raises
    ------
    RunNotFoundError
        The location holds no tensortap run.
    CorruptRunError
        The run's metadata is damaged or truncated.
    StorageError
        The location cannot be reached (missing bucket...).

    A training run (``tt.CaptureCallback``, ``tt.Monitor``) opens as a
    :class:`tensortap.core.training_run.TrainingRun`.
    """
    location = open_location(path_or_url, storage_options, read_only=True)
    try:
        meta = read_json(location.store, "zarr.json")
    except OSError:
        meta = None  # Run() reports it as a StorageError
    block = meta.get("attributes", {}).get(layout.ATTRS_KEY) if isinstance(meta, dict) else None
    if isinstance(block, dict) and block.get("kind") == "training":  # issue 14: a step axis
        from tensortap.core.training_run import TrainingRun

        return TrainingRun(location, block)  # type: ignore[return-value]
    return Run(location)


class Run:
    """A captured run: committed samples only, arrays lazy.

    Attributes
    ----------
    path : str
        Where the run lives (path, URL or ``"<memory>"``).
    """

    def __init__(self, location: Location, *, lazy: bool = False) -> None:
        self._location = location
        self.path = location.url
        self._counts = np.zeros(0, np.int64)
        self._stats_cache: dict[str, tuple[Any, np.ndarray]] = {}
        #: Schema 2: every layer's edges and committed partials, read once per commit state.
        self._flat_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._stats_index_cache: StatsIndex | None = None
        # ``lazy``: open the arrays' metadata on first use, not now.  The engine returns
        # runs it has just written this way (opening every group costs more than
        # capturing a small batch); ``open_run`` stays eager so damage shows at once.
        self._lazy = lazy
        #: ``False`` in the view :meth:`indexed` returns: arrays indexed by xarray, no Dask.
        self._chunked = True
        self.refresh()

    # ------------------------------------------------------------------ loading
    def refresh(self) -> Run:
        """Re-read the commit record and the arrays (follow a capture in progress)."""
        store = self._location.store
        try:
            meta = read_json(store, "zarr.json")
        except OSError as err:
            raise StorageError(f"cannot read the run at {self.path!r}: {err}") from err
        if meta is None:
            raise RunNotFoundError(
                f"no tensortap run at {self.path!r} (no zarr.json); capture one with "
                "tensortap.capture(..., store=...) or `tensortap capture`"
            )
        if not isinstance(meta, dict) or meta.get("node_type") != "group":
            raise CorruptRunError(
                f"the run at {self.path!r} has a damaged root zarr.json; capture it again "
                "with overwrite=True"
            )
        attrs = meta.get("attributes", {}).get(layout.ATTRS_KEY)
        if not isinstance(attrs, dict):
            raise RunNotFoundError(
                f"{self.path!r} is a Zarr group but not a tensortap run (no 'tensortap' attrs)"
            )
        if attrs.get("schema") not in layout.READABLE_SCHEMAS:
            readable = " and ".join(str(v) for v in layout.READABLE_SCHEMAS)
            raise CorruptRunError(
                f"the run at {self.path!r} has schema {attrs.get('schema')!r}; this tensortap "
                f"reads schemas {readable} — open it with the tensortap that wrote it "
                f"(version {attrs.get('version')!r}) or capture it again"
            )
        if attrs.get("status") == REPLACING:
            raise CorruptRunError(
                f"the run at {self.path!r} is being replaced by a capture with overwrite (or "
                "one was killed while replacing it); open it again once that capture has "
                "committed its first block, else capture again with overwrite=True"
            )
        self._attrs = attrs
        # Runs from before blocks held several batches have no block_size: one batch each.
        self.block_size = int(attrs.get("block_size") or attrs.get("batch_size") or 1)
        # The commit record first, the arrays after: arrays are never smaller than it says.
        counts = self._read_commit(CheckedStore(store, None, self.block_size, self.path))
        self._check_record(counts)
        if not np.array_equal(counts, self._counts):
            self._stats_cache = {}  # reductions are valid for one commit state only
            self._flat_cache = None
        self._counts = counts
        # Reads of committed blocks refuse missing, truncated or damaged chunks (issue 20).
        self._store = CheckedStore(store, counts, self.block_size, self.path)
        indices: np.ndarray = commit.committed_samples(self._counts, self.block_size)
        self._indices = indices
        prefix = len(indices) and indices[-1] == len(indices) - 1
        self._selection: slice | np.ndarray = (
            slice(0, len(indices)) if prefix or not len(indices) else indices
        )
        self._trees: tuple[xr.DataTree | None, xr.DataTree] | None = None
        self._groups: dict[str, Any] = {}
        self._indexed: Run | None = None
        if not self._lazy:
            self._load_trees()
        return self

    def _load_trees(self) -> tuple[xr.DataTree | None, xr.DataTree]:
        if self._trees is None:
            raw = self._open_tree(self._store) if len(self._indices) else None
            self._trees = (raw, self._committed_tree(raw))
        return self._trees

    @property
    def _raw_tree(self) -> xr.DataTree | None:
        return self._load_trees()[0]

    @property
    def tree(self) -> xr.DataTree:
        """The run as an ``xr.DataTree``, sliced to the committed samples."""
        return self._load_trees()[1]

    def _check_record(self, counts: np.ndarray) -> None:
        """The commit record must agree with the attrs of a run that ended: a deleted
        record, or a deleted entry, would otherwise hide committed samples silently."""
        stored = self._attrs.get("samples")
        if not isinstance(stored, int):
            return
        if self._attrs.get("status") != "complete" and (counts.size or not stored):
            return  # a failed run may still be resumed; only a vanished record is damage
        if int(counts.sum()) != stored:
            raise CorruptRunError(
                f"the run at {self.path!r} is damaged: its commit record counts "
                f"{int(counts.sum())} committed samples but the run's attrs record {stored} "
                f"({self._attrs.get('status')}); "
                f"run `tensortap verify {self.path} --repair`, then capture again with "
                "--resume (resume=True)"
            )

    def _read_commit(self, store: Any) -> np.ndarray:
        meta = read_json(store, f"{layout.COMMIT}/zarr.json")
        if meta is None:
            return np.zeros(0, np.int64)  # no block written yet
        try:
            record = zarr.open_array(store, path=layout.COMMIT, mode="r")
            counts: np.ndarray = commit.committed_blocks(record)
            return counts
        except CorruptRunError:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise CorruptRunError(
                f"the commit record of {self.path!r} is damaged ({err}); capture the run again"
            ) from err

    def _open_tree(self, store: Any) -> xr.DataTree:
        tree: xr.DataTree = self._open(xr.open_datatree, store)
        return tree

    def _open(self, opener: Any, store: Any, **kwargs: Any) -> Any:
        """``opener(store, engine="zarr", ...)`` with retries and errors as one line."""
        # Dask names its chunks after a hash of the store; an in-memory store hashes by
        # pickling all its data, which costs more than capturing a small batch.  Its arrays
        # stay lazy without Dask (xarray's lazy indexing): they are in memory already.
        inner = store._store if isinstance(store, CheckedStore) else store
        # Dask chunks of one block along ``sample``: a sharded array's inner chunks are a
        # block's parts, and a Dask task per inner chunk would multiply the tasks of every
        # read; reading one sample still reads only its inner chunk (zarr's byte ranges).
        chunks: dict[str, int] | None = (
            None
            if isinstance(inner, zarr.storage.MemoryStore) or not self._chunked
            else {layout.SAMPLE: self.block_size}
        )
        if not self._chunked:  # xarray would keep every array read whole in memory
            kwargs["cache"] = False
        last: Exception | None = None
        for _attempt in range(3):  # a capture growing its arrays may be caught mid-resize
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return opener(
                        store,
                        engine="zarr",
                        chunks=chunks,
                        consolidated=False,
                        decode_timedelta=False,
                        **kwargs,
                    )
            except CorruptRunError:
                raise
            except OSError as err:
                raise StorageError(f"cannot read the run at {self.path!r}: {err}") from err
            except Exception as err:  # noqa: BLE001 - reported as a corrupt run below
                last = err
                time.sleep(0.2)
        raise CorruptRunError(
            f"the run at {self.path!r} cannot be opened ({type(last).__name__}: "
            f"{str(last).splitlines()[0] if str(last) else ''}); its metadata is damaged or "
            "truncated — capture it again with overwrite=True"
        ) from last

    def _group(self, path: str) -> Any:
        """One group's variables (a Dataset), committed samples only.

        Taken from the whole tree once something opened it; until then the group alone is
        opened (and kept): a Grad-CAM on a fresh in-memory run reads one layer, and opening
        every group of the run cost as much as the CAM itself.
        """
        if self._trees is not None:
            node = self.tree[path] if path else self.tree
            return node.dataset
        if path not in self._groups:
            dataset = self._open(xr.open_dataset, self._store, group=path or None)
            if layout.SAMPLE in dataset.dims:
                dataset = dataset.isel({layout.SAMPLE: self._selection})
            self._groups[path] = dataset
        return self._groups[path]

    def indexed(self) -> Run:
        """This run with its arrays indexed by xarray's lazy backend indexing, not Dask.

        ``isel`` on such an array is handed to zarr's orthogonal selection, which reads
        only the inner chunks of the samples asked for, in one call: one channel of 9
        scattered samples of bench_serve's 4 MiB-a-sample layer took ~35 ms, against
        ~180 ms through Dask (a task graph per sample, see
        :mod:`~tensortap.core.sample_reads`).  Meant for reads of a few samples (the
        app's views): a reduction over such an array loads all of it at once.

        Returns
        -------
        Run
            A view with the same committed samples and checked store, opened group by
            group on first use; valid until this run's next :meth:`refresh`.
        """
        if self._indexed is None:
            view = copy.copy(self)
            view._chunked = False
            view._lazy = True
            view._trees = None
            view._groups = {}
            view._stats_cache = {}
            view._indexed = view
            self._indexed = view
        return self._indexed

    def _committed_tree(self, raw: xr.DataTree | None) -> xr.DataTree:
        if raw is None:
            return xr.DataTree(name="run")
        selection = self._selection

        def committed(ds: xr.Dataset) -> xr.Dataset:
            if layout.SAMPLE in ds.dims:
                return ds.isel({layout.SAMPLE: selection})
            return ds

        tree = raw.map_over_datasets(committed)
        assert isinstance(tree, xr.DataTree)
        return tree

    # ------------------------------------------------------------------ metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """The ``tensortap`` block of the root attrs."""
        return dict(self._attrs)

    @property
    def status(self) -> str:
        """``"capturing"``, ``"complete"`` or ``"failed"``."""
        return str(self._attrs.get("status"))

    @property
    def layers(self) -> tuple[str, ...]:
        """Captured node keys, in model order."""
        return tuple(self._attrs.get("layers", ()))

    @property
    def samples(self) -> int:
        """Number of committed samples."""
        return len(self._indices)

    @property
    def total(self) -> int | None:
        """Samples the capture was asked for, when known."""
        total = self._attrs.get("total")
        return None if total is None else int(total)

    @property
    def sample_indices(self) -> np.ndarray:
        """Global indices of the committed samples."""
        return self._indices.copy()

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the stored model inputs (empty when inputs were not kept)."""
        if not self._attrs.get("keep_inputs", True):
            return ()
        return tuple(self._attrs.get("inputs", ()))

    @property
    def attribution_names(self) -> tuple[str, ...]:
        """Input attributions the capture step computed (``capture(attributions=...)``)."""
        spec = self._attrs.get("attributions") or {}
        return tuple(spec.get("methods", ()))

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the model outputs."""
        return tuple(self._attrs.get("outputs", ()))

    def _check_key(self, key: str) -> str:
        """The run's key for ``key``: itself, or the one key whose layer name it is."""
        if key in self.layers:
            return key
        resolved = resolve_layer_key(self.layers, key)
        if resolved is not None:
            return resolved
        if key not in self.layers:
            close = difflib.get_close_matches(key, self.layers, n=5, cutoff=0.5)
            hint = close or [k for k in self.layers if key.lower() in k.lower()][:5]
            raise LayerNotFoundError(
                f"layer {key!r} is not in the run at {self.path!r}; "
                f"did you mean: {', '.join(hint or self.layers[:5])}? (run.layers lists all)"
            )
        return key

    def node(self, key: str) -> dict[str, Any]:
        """The layer group's attrs: ``name``, ``layer_type``, ``long_name``, ``dims``,
        ``channel_dim``, ``path``..."""
        key = self._check_key(key)
        return cast("dict[str, Any]", dict(self._layer(key).attrs))  # zarr attr keys are str

    def _layer(self, key: str, group: str = "") -> Any:
        """The Dataset of a layer's group (or of its subgroup ``group``, e.g. stats)."""
        if not len(self._indices):
            raise LayerNotFoundError(
                f"the run at {self.path!r} has no committed sample yet; wait or refresh()"
            )
        path = layout.layer_path(key)
        return self._group(f"{path}/{group}" if group else path)

    # ------------------------------------------------------------------ arrays
    def activation(self, key: str) -> xr.DataArray:
        """Lazy activations of one layer, dims ``("sample", ...)``, committed samples."""
        key = self._check_key(key)
        return self._with_sample_coords(self._layer(key)[layout.ACTIVATION])

    def has_gradient(self, key: str) -> bool:
        """Whether gradients were captured for ``key``."""
        key = self._check_key(key)
        return bool(self._attrs.get("gradients")) and len(self._indices) > 0

    def gradient(self, key: str) -> xr.DataArray:
        """Lazy gradients of the target w.r.t. one layer's activation.

        Raises
        ------
        NoGradientsError
            When the run was captured without gradients.
        """
        key = self._check_key(key)
        if not self.has_gradient(key):
            raise NoGradientsError(
                f"the run at {self.path!r} has no gradients for {key!r}; capture with "
                "gradients=True (--gradients)"
            )
        return self._with_sample_coords(self._layer(key)[layout.GRADIENT])

    def _with_sample_coords(self, array: Any) -> xr.DataArray:
        """Attach ``label`` and ``prediction`` (root coords DataTree does not inherit)."""
        extra = {
            name: var
            for name in (layout.LABEL, layout.PREDICTION, layout.TARGET_CLASS)
            if (var := self._root_var(name)) is not None and var.ndim == 1
        }
        return array.assign_coords(extra) if extra else array  # type: ignore[no-any-return]

    def _named(self, group: str, names: tuple[str, ...], name: str | None) -> xr.DataArray | None:
        if not names or not len(self._indices):
            return None
        name = names[0] if name is None else name
        if name not in names:
            raise LayerNotFoundError(f"no {group[:-1]} named {name!r}; the run has {list(names)}")
        return self._with_sample_coords(self._group(group)[name])

    def inputs(self, name: str | None = None) -> xr.DataArray | None:
        """A stored model input (the first by default), or ``None`` if inputs were not kept."""
        return self._named(layout.INPUTS, self.input_names, name)

    def attributions(self, method: str | None = None) -> xr.DataArray | None:
        """An input attribution computed at capture (the first by default), committed
        samples only, with the input's dims; ``None`` if the run has none."""
        return self._named(layout.ATTRIBUTIONS, self.attribution_names, method)

    def outputs(self, name: str | None = None) -> xr.DataArray | None:
        """A stored model output (the first by default): logits or scores."""
        return self._named(layout.OUTPUTS, self.output_names, name)

    def _root_var(self, name: str) -> xr.DataArray | None:
        if not len(self._indices):
            return None
        root = self._group("")
        return root[name] if name in root.variables else None

    @property
    def labels(self) -> xr.DataArray | None:
        """Labels over ``sample``, or ``None``."""
        return self._root_var(layout.LABEL)

    @property
    def predictions(self) -> xr.DataArray | None:
        """Top-1 predicted classes over ``sample``, or ``None``."""
        return self._root_var(layout.PREDICTION)

    @property
    def target_classes(self) -> xr.DataArray | None:
        """The class each sample's stored gradients differentiate, over ``sample``, or
        ``None`` (no gradients, a callable target, or a run from before it was stored)."""
        return self._root_var(layout.TARGET_CLASS)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Names of the model's classes (``class_names=`` at capture), or ``None``."""
        names = self._attrs.get("class_names")
        return tuple(str(n) for n in names) if names else None

    # ------------------------------------------------------------------ statistics
    def stats(self, key: str) -> xr.Dataset:
        """Statistics of one layer's activation over the committed samples.

        Reads only the small per-block partials (never the activations); see
        docs/contracts.md for the variables.
        """
        key = self._check_key(key)
        node = self._layer(key)
        reduced, edges = self._reduced(key)
        sample_mean, sample_max = self._sample_stats(key)
        channel = layout.CHANNEL_DIM
        data_vars: dict[str, Any] = {
            "count": (channel, reduced.count, {"long_name": "finite values"}),
            "mean": (channel, reduced.mean, {"long_name": "mean"}),
            "std": (channel, reduced.std, {"long_name": "standard deviation"}),
            "min": (channel, reduced.min, {"long_name": "minimum"}),
            "max": (channel, reduced.max, {"long_name": "maximum"}),
            "zero_fraction": (
                channel,
                reduced.zero_fraction,
                {"long_name": "fraction of exact zeros"},
            ),
            "nonfinite": (channel, reduced.nonfinite, {"long_name": "NaN or infinite values"}),
            "histogram": ("bin", reduced.histogram, {"long_name": "values per bin"}),
            "underflow": ((), reduced.underflow, {"long_name": "values below the first edge"}),
            "overflow": ((), reduced.overflow, {"long_name": "values at or above the last edge"}),
            "zeros": ((), reduced.zeros, {"long_name": "exact zeros"}),
            "sample_mean": sample_mean,
            "sample_max": sample_max,
        }
        centers = (edges[:-1] + edges[1:]) / 2
        attrs = {k: node.attrs.get(k) for k in ("name", "layer_type", "long_name", "channel_dim")}
        attrs["key"] = key
        return xr.Dataset(
            data_vars,
            coords={"bin_edges": ("bin_edge", edges), "bin_center": ("bin", centers)},
            attrs=attrs,
        )

    @property
    def _flat_stats(self) -> bool:
        """Whether every layer's statistics share the root ``stats`` group (schema 2)."""
        return int(self._attrs.get("schema", 1)) >= 2

    def _stats_index(self) -> StatsIndex:
        if self._stats_index_cache is None:
            group = zarr.open_group(self._store, path=layout.RUN_STATS, mode="r")
            self._stats_index_cache = StatsIndex.from_attrs(group.attrs)
        return self._stats_index_cache

    def _sample_stats(self, key: str) -> tuple[xr.DataArray, xr.DataArray]:
        """The layer's ``sample_mean`` and ``sample_max`` over ``(sample, channel)``."""
        if not self._flat_stats:
            stats_node = self._layer(key, layout.STATS)
            return stats_node[layout.SAMPLE_MEAN], stats_node[layout.SAMPLE_MAX]
        group = self._group(layout.RUN_STATS)
        span = {layout.STAT_CHANNEL_DIM: self._stats_index().channel_span(key)}
        rename = {layout.STAT_CHANNEL_DIM: layout.CHANNEL_DIM}
        mean, maximum = (
            group[name].isel(span).rename(rename)
            for name in (layout.SAMPLE_MEAN, layout.SAMPLE_MAX)
        )
        return mean, maximum

    def _reduced(self, key: str) -> tuple[Any, np.ndarray]:
        """The layer's reduced statistics and bin edges, cached per commit state."""
        if key not in self._stats_cache:
            if self._flat_stats:
                self._stats_cache[key] = self._reduce_flat_stats(key)
            else:
                self._stats_cache[key] = self._reduce_stats(key)
        return self._stats_cache[key]

    def _flat_partials(self, *, summary: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every layer's bin edges and the committed partials (or, with ``summary``, the
        summary covering them) along the flat axes; cached per commit state."""
        if summary and self._flat_cache is not None:
            return self._flat_cache
        group = zarr.open_group(self._store, path=layout.RUN_STATS, mode="r")
        edges = np.asarray(cast("zarr.Array[Any]", group[layout.BIN_EDGES])[...])
        committed = int(self._counts.sum())
        partials: tuple[np.ndarray, np.ndarray] | None = None
        try:
            if not summary:
                raise KeyError(layout.SUMMARY_MOMENTS)
            merged = cast("zarr.Array[Any]", group[layout.SUMMARY_MOMENTS])
            histogram = cast("zarr.Array[Any]", group[layout.SUMMARY_HISTOGRAM])
            if committed == merged.attrs.get("committed") == histogram.attrs.get("committed"):
                partials = (np.asarray(merged[...])[None], np.asarray(histogram[...])[None])
        except KeyError:
            pass  # still capturing, or too few blocks for a summary
        if partials is None:
            blocks = np.flatnonzero(self._counts)
            upto = int(blocks[-1]) + 1 if len(blocks) else 0
            moments = cast("zarr.Array[Any]", group[layout.BLOCK_MOMENTS])
            histograms = cast("zarr.Array[Any]", group[layout.BLOCK_HISTOGRAM])
            partials = (
                np.asarray(moments[:upto])[blocks],
                np.asarray(histograms[:upto])[blocks],
            )
        flat = (edges, *partials)
        if summary:
            self._flat_cache = flat
        return flat

    def _reduce_flat_stats(self, key: str, *, summary: bool = True) -> tuple[Any, np.ndarray]:
        """One layer's span of the flat statistics, reduced (schema 2)."""
        edges, moments, histograms = self._flat_partials(summary=summary)
        index = self._stats_index()
        reduced = reduce_blocks(
            moments[:, :, index.channel_span(key)], histograms[:, index.slot_span(key)]
        )
        return reduced, edges[index.edge_span(key)]

    def _reduce_stats(self, key: str) -> tuple[Any, np.ndarray]:
        """Schema 1: read the layer's small stats arrays with zarr directly: one concurrent
        read per array, no Dask graph (a Dask read of one chunk per block cost ~1 ms a
        block).  A finished run's summary is used when it covers exactly the committed
        samples."""
        group = zarr.open_group(self._store, path=layout.stats_path(key), mode="r")
        edges = np.asarray(cast("zarr.Array[Any]", group[layout.BIN_EDGES])[...])
        committed = int(self._counts.sum())
        try:
            summary = cast("zarr.Array[Any]", group[layout.SUMMARY_MOMENTS])
            if summary.attrs.get("committed") == committed:
                histogram = cast("zarr.Array[Any]", group[layout.SUMMARY_HISTOGRAM])
                if histogram.attrs.get("committed") == committed:
                    moments = np.asarray(summary[...])[None]
                    return reduce_blocks(moments, np.asarray(histogram[...])[None]), edges
        except KeyError:
            pass  # still capturing, or captured before summaries existed
        return self._reduce_stats_partials(key, group), edges

    def _reduce_stats_partials(self, key: str, group: Any = None) -> Any:
        """Reduce the committed blocks' partials, not a summary (a run still capturing, or
        resumed)."""
        if self._flat_stats:
            return self._reduce_flat_stats(key, summary=False)[0]
        if group is None:
            group = zarr.open_group(self._store, path=layout.stats_path(key), mode="r")
        blocks = np.flatnonzero(self._counts)
        upto = int(blocks[-1]) + 1 if len(blocks) else 0
        moments = np.asarray(group[layout.BLOCK_MOMENTS][:upto])[blocks]
        histograms = np.asarray(group[layout.BLOCK_HISTOGRAM][:upto])[blocks]
        return reduce_blocks(moments, histograms)

    # ------------------------------------------------------------------ sizes
    def stored_bytes(self) -> int:
        """Bytes the run occupies in its store (compressed)."""
        return int(total_size(self._location.store))

    def logical_bytes(self) -> int:
        """Bytes of the committed samples' arrays, uncompressed."""
        if self._raw_tree is None:
            return 0
        return int(sum(node.dataset.nbytes for node in self.tree.subtree))

    def __repr__(self) -> str:
        total = "?" if self.total is None else self.total
        return (
            f"<tensortap.Run {self.path!r} {self.status}: {self.samples}/{total} samples, "
            f"{len(self.layers)} layers>"
        )
