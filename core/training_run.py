"""Reading training runs: :class:`TrainingRun` (what ``open_run`` returns for a run with a
``step`` axis) and :class:`StepView` (one step, read like a capture run).

Like :class:`tensortap.core.run.Run`, a reader sees **committed** steps only: it reads the
commit record first and the arrays after, so a run read while it trains, or after the
training was killed, shows every committed step and nothing half-written.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any, cast

import numpy as np
import xarray as xr
import zarr

from tensortap.core.errors import (
    CorruptRunError,
    LayerNotFoundError,
    NoGradientsError,
    StorageError,
)
from tensortap.core.store import layout, steps
from tensortap.core.store.run_stats import StatsIndex
from tensortap.core.store.storage import Location, read_json, total_size

__all__ = ["StepView", "TrainingRun", "is_training_run"]


def is_training_run(attrs: dict[str, Any]) -> bool:
    """Whether a root ``tensortap`` block describes a training run."""
    return attrs.get("kind") == steps.KIND


def _step_stats(moments: np.ndarray, histogram: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    """Per-step statistics from per-step partials (each step is one partial: no merge)."""
    count, mean, m2, minimum, maximum, zeros, nonfinite = np.moveaxis(moments, 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(m2 / count)
        zero_fraction = zeros / (count + nonfinite)
    return {
        "count": (("step", "channel"), np.nan_to_num(count).astype(np.int64)),
        "mean": (("step", "channel"), np.where(count > 0, mean, np.nan)),
        "std": (("step", "channel"), std),
        "min": (("step", "channel"), minimum),
        "max": (("step", "channel"), maximum),
        "zero_fraction": (("step", "channel"), zero_fraction),
        "nonfinite": (("step", "channel"), np.nan_to_num(nonfinite).astype(np.int64)),
        "histogram": (("step", "bin"), histogram[:, :-3]),
        "underflow": ("step", histogram[:, -3]),
        "overflow": ("step", histogram[:, -2]),
        "zeros": ("step", histogram[:, -1]),
        "bin_edges": (("step", "bin_edge"), edges),
        "bin_center": (("step", "bin"), (edges[:, :-1] + edges[:, 1:]) / 2),
    }


_LONG_NAMES = {
    "count": "finite values",
    "mean": "mean",
    "std": "standard deviation",
    "min": "minimum",
    "max": "maximum",
    "zero_fraction": "fraction of exact zeros",
    "nonfinite": "NaN or infinite values",
    "histogram": "values per bin",
    "underflow": "values below the first edge",
    "overflow": "values at or above the last edge",
    "zeros": "exact zeros",
}


class TrainingRun:
    """A training run: the probe captured at many steps; committed steps only.

    Attributes
    ----------
    path : str
        Where the run lives.
    """

    def __init__(self, location: Location, attrs: dict[str, Any]) -> None:
        self._location = location
        self.path = location.url
        if attrs.get("schema") not in steps.READABLE_SCHEMAS:
            readable = " and ".join(str(v) for v in steps.READABLE_SCHEMAS)
            raise CorruptRunError(
                f"the training run at {location.url!r} has schema {attrs.get('schema')!r}; "
                f"this tensortap reads training-run schemas {readable} — open it with the "
                f"tensortap that wrote it (version {attrs.get('version')!r}) or train again"
            )
        self._attrs = attrs
        self.refresh()

    # ------------------------------------------------------------------ loading
    def refresh(self) -> TrainingRun:
        """Re-read the commit record (follow a training in progress)."""
        store = self._location.store
        meta = read_json(store, "zarr.json")
        if isinstance(meta, dict):
            block = meta.get("attributes", {}).get(layout.ATTRS_KEY)
            if isinstance(block, dict):
                self._attrs = block
        try:
            record = zarr.open_array(store, path=layout.COMMIT, mode="r")
            committed = np.flatnonzero(np.asarray(record[...]))
            root = zarr.open_group(store, mode="r")
            coords = {
                name: np.asarray(cast("zarr.Array[Any]", root[name])[...])[committed]
                for name in (steps.STEP, steps.EPOCH, steps.BATCH, steps.WALL_TIME)
            }
            has = np.asarray(cast("zarr.Array[Any]", root[steps.HAS_TENSORS])[...])[committed]
        except KeyError:
            committed = np.zeros(0, np.int64)
            coords = {n: np.zeros(0) for n in (steps.STEP, steps.EPOCH, steps.BATCH, "wall_time")}
            has = np.zeros(0, np.int8)
        except OSError as err:
            raise StorageError(f"cannot read the run at {self.path!r}: {err}") from err
        except (ValueError, TypeError) as err:
            raise CorruptRunError(
                f"the commit record of {self.path!r} is damaged ({err}); the run cannot be read"
            ) from err
        self._positions = committed
        self._coords = coords
        self._has_tensors = has.astype(bool)
        self._datasets: dict[str, xr.Dataset] = {}
        return self

    def _dataset(self, group: str) -> xr.Dataset:
        """One group's arrays (lazy), sliced to the committed steps, step coordinates on."""
        if group not in self._datasets:
            store = self._location.store
            chunks: dict[str, int] | None = (
                None if isinstance(store, zarr.storage.MemoryStore) else {}
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ds = xr.open_dataset(
                        store,  # type: ignore[arg-type]  # xarray's zarr engine takes a store
                        engine="zarr",
                        group=group or None,
                        chunks=chunks,
                        consolidated=False,
                        decode_timedelta=False,
                    )
                except OSError as err:
                    raise StorageError(f"cannot read the run at {self.path!r}: {err}") from err
            if steps.STEP in ds.dims:
                ds = ds.isel({steps.STEP: self._positions}).assign_coords(self._step_coords())
            self._datasets[group] = ds
        return self._datasets[group]

    def _step_coords(self) -> dict[str, Any]:
        c = self._coords
        return {
            steps.STEP: (steps.STEP, c[steps.STEP].astype(np.int64)),
            steps.EPOCH: (steps.STEP, c[steps.EPOCH].astype(np.int64)),
            steps.BATCH: (steps.STEP, c[steps.BATCH].astype(np.int64)),
            steps.WALL_TIME: (steps.STEP, c[steps.WALL_TIME]),
            steps.HAS_TENSORS: (steps.STEP, self._has_tensors),
        }

    # ------------------------------------------------------------------ metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """The ``tensortap`` block of the root attrs."""
        return dict(self._attrs)

    @property
    def status(self) -> str:
        """``"capturing"`` while training, then ``"complete"`` (or ``"failed"``)."""
        return str(self._attrs.get("status"))

    @property
    def layers(self) -> tuple[str, ...]:
        """Watched node keys, in model order."""
        return tuple(self._attrs.get("layers", ()))

    @property
    def samples(self) -> int:
        """Samples in the probe."""
        return int(self._attrs.get("samples") or 0)

    @property
    def steps(self) -> xr.Dataset:
        """The committed steps: coordinates ``step`` (global training step), ``epoch``,
        ``batch`` (within the epoch), ``wall_time`` (s since 1970, UTC) and ``has_tensors``."""
        return xr.Dataset(coords=self._step_coords())

    @property
    def step_values(self) -> np.ndarray:
        """Global training steps of the committed steps, in order."""
        return self._coords[steps.STEP].astype(np.int64)

    @property
    def tensor_steps(self) -> np.ndarray:
        """The committed steps that stored full tensors."""
        values: np.ndarray = self.step_values[self._has_tensors]
        return values

    @property
    def trigger(self) -> dict[str, Any] | None:
        """The non-finite trigger, ``{"step", "layer", "where"}``, if it fired."""
        trigger = self._attrs.get("trigger")
        return dict(trigger) if isinstance(trigger, dict) else None

    @property
    def class_names(self) -> list[str] | None:
        """Class names given at capture, if any."""
        names = self._attrs.get("class_names")
        return list(names) if names else None

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the stored probe inputs."""
        return tuple(self._attrs.get("inputs", ()))

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the model outputs (not stored for training runs)."""
        return ()

    def _check_key(self, key: str) -> None:
        if key not in self.layers:
            close = difflib.get_close_matches(key, self.layers, n=5, cutoff=0.5)
            raise LayerNotFoundError(
                f"layer {key!r} is not in the training run at {self.path!r}; did you mean: "
                f"{', '.join(close or self.layers[:5])}? (run.layers lists all)"
            )

    def _position(self, step: int) -> int:
        where = np.flatnonzero(self.step_values == int(step))
        if not len(where):
            shown = ", ".join(map(str, self.step_values[:8]))
            more = "..." if len(self.step_values) > 8 else ""
            raise LayerNotFoundError(
                f"step {step} is not a committed step of {self.path!r}; its steps are "
                f"{shown}{more} (run.steps lists all)"
            )
        return int(where[-1])

    def node(self, key: str) -> dict[str, Any]:
        """The layer group's attrs (``name``, ``layer_type``, ``dims``, ``channel_dim``...)."""
        self._check_key(key)
        group = zarr.open_group(self._location.store, path=layout.layer_path(key), mode="r")
        return dict(group.attrs)

    # ------------------------------------------------------------------ arrays
    def _tensor(self, key: str, name: str, step: int | None) -> xr.DataArray:
        ds = self._dataset(layout.layer_path(key))
        if name not in ds:
            policy = self._attrs.get("policy", {})
            raise NoGradientsError(
                f"the training run at {self.path!r} stored no {name} tensors for {key!r} "
                f"(policy {policy}); capture with policy='full'"
                + (" and Policy(gradients=True)" if name == layout.GRADIENT else "")
            )
        array = ds[name]
        if step is None:
            return array.isel({steps.STEP: np.flatnonzero(self._has_tensors)})
        position = self._position(step)
        if not self._has_tensors[position]:
            raise NoGradientsError(
                f"step {step} of {self.path!r} stored statistics only; steps with tensors: "
                f"{list(map(int, self.tensor_steps[:8]))} (run.tensor_steps)"
            )
        return array.isel({steps.STEP: position})

    def activation(self, key: str, step: int | None = None) -> xr.DataArray:
        """Probe activations of ``key``: dims ``(step, sample, ...)`` over the steps that
        stored tensors, or ``(sample, ...)`` at one global ``step``."""
        self._check_key(key)
        return self._tensor(key, layout.ACTIVATION, step)

    def has_gradient(self, key: str) -> bool:
        """Whether gradient tensors were stored for ``key``."""
        self._check_key(key)
        return layout.GRADIENT in self._dataset(layout.layer_path(key))

    def gradient(self, key: str, step: int | None = None) -> xr.DataArray:
        """Gradients of the target on the probe, like :meth:`activation`."""
        self._check_key(key)
        return self._tensor(key, layout.GRADIENT, step)

    def inputs(self, name: str | None = None) -> xr.DataArray | None:
        """The stored probe input (the first by default)."""
        names = self.input_names
        if not names:
            return None
        name = names[0] if name is None else name
        if name not in names:
            raise LayerNotFoundError(f"no input named {name!r}; the run has {list(names)}")
        return self._dataset(layout.INPUTS)[name]

    def outputs(self, name: str | None = None) -> None:
        """Training runs store no model outputs."""
        return None

    @property
    def labels(self) -> xr.DataArray | None:
        """The probe's labels over ``sample``, or ``None``."""
        root = self._dataset("")
        return root[layout.LABEL] if layout.LABEL in root.variables else None

    @property
    def predictions(self) -> None:
        """Training runs store no predictions."""
        return None

    # ------------------------------------------------------------------ statistics
    def stats(self, key: str, step: int | None = None, *, of: str = "activation") -> xr.Dataset:
        """Statistics of ``key`` per committed step, from the stored partials.

        Parameters
        ----------
        key : str
            A watched layer.
        step : int, optional
            One global step: the Dataset then has the variables of ``Run.stats``
            (``count(channel)``, ..., ``histogram(bin)``, ``bin_edges(bin_edge)``).
        of : {"activation", "gradient"}
            Statistics of the activations or of the gradients.

        Returns
        -------
        xr.Dataset
            Dims ``(step, channel)``, ``(step, bin)``; each step has its own
            ``bin_edges(step, bin_edge)``.
        """
        self._check_key(key)
        if of not in ("activation", "gradient"):
            raise LayerNotFoundError(f"of={of!r} is not allowed; use 'activation' or 'gradient'")
        rows = self._positions
        upto = int(rows[-1]) + 1 if len(rows) else 0
        per_layer = self._attrs.get("schema") in steps.PER_LAYER_STATS
        if per_layer:  # schemas 1 and 2: a statistics group in each layer's group
            group = layout.STATS if of == "activation" else steps.GRADIENT_STATS
            path = f"{layout.layer_path(key)}/{group}"
        else:
            path = steps.STEP_STATS if of == "activation" else steps.STEP_GRADIENT_STATS
        missing = NoGradientsError(
            f"the training run at {self.path!r} has no {of} statistics for {key!r}"
            + ("; capture with Policy(gradients=True)" if of == "gradient" else "")
        )
        try:
            zgroup = zarr.open_group(self._location.store, path=path, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as err:
            raise missing from err
        spans = None if per_layer else StatsIndex.from_attrs(zgroup.attrs)
        if spans is not None and key not in spans.layers:
            raise missing
        whole = slice(None)

        def read(name: str, span: slice = whole) -> np.ndarray:
            values = np.asarray(cast("zarr.Array[Any]", zgroup[name])[:upto])[rows]
            return values[..., span]

        channels = whole if spans is None else spans.channel_span(key)
        data = _step_stats(
            read(steps.MOMENTS_ARRAY, channels),
            read(steps.HISTOGRAM_ARRAY, whole if spans is None else spans.slot_span(key)),
            read(layout.BIN_EDGES, whole if spans is None else spans.edge_span(key)),
        )
        data["sample_mean"] = (("step", "sample", "channel"), read(layout.SAMPLE_MEAN, channels))
        data["sample_max"] = (("step", "sample", "channel"), read(layout.SAMPLE_MAX, channels))
        node = self.node(key)
        attrs = {k: node.get(k) for k in ("name", "layer_type", "long_name", "channel_dim")}
        attrs.update(key=key, of=of)
        coords = self._step_coords()
        edges = data.pop("bin_edges")
        centers = data.pop("bin_center")
        ds = xr.Dataset(data, coords={**coords, "bin_edges": edges, "bin_center": centers})
        for name, long_name in _LONG_NAMES.items():
            ds[name].attrs["long_name"] = long_name
        ds.attrs.update(attrs)
        if step is not None:
            ds = ds.isel(step=self._position(step))
        return ds

    def weight_stats(self, of: str = "weights") -> xr.Dataset:
        """Per-parameter statistics per step: ``mean``, ``std``, ``min``, ``max``,
        ``zero_fraction``, ``nonfinite`` over ``(step, parameter)`` (``Policy(weights=True)``);
        ``of="gradients"`` for the weight gradients (frameworks that keep them)."""
        name = steps.WEIGHT_MOMENTS if of == "weights" else steps.WEIGHT_GRADIENT_MOMENTS
        try:
            group = zarr.open_group(self._location.store, path=steps.WEIGHTS, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as err:
            raise NoGradientsError(
                f"the training run at {self.path!r} has no weight statistics; capture with "
                "Policy(weights=True)"
            ) from err
        rows = self._positions
        upto = int(rows[-1]) + 1 if len(rows) else 0
        moments = np.asarray(cast("zarr.Array[Any]", group[name])[:upto])[rows]
        count, mean, m2, minimum, maximum, zeros, nonfinite = np.moveaxis(moments, 2, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            data = {
                "count": count,
                "mean": mean,
                "std": np.sqrt(m2 / count),
                "min": minimum,
                "max": maximum,
                "zero_fraction": zeros / (count + nonfinite),
                "nonfinite": nonfinite,
            }
        dims = ("step", steps.PARAMETER_DIM)
        params = list(self._attrs.get("parameters", ()))
        return xr.Dataset(
            {k: (dims, v) for k, v in data.items()},
            coords={**self._step_coords(), steps.PARAMETER_DIM: params},
            attrs={"of": of},
        )

    # ------------------------------------------------------------------ sizes
    @property
    def total(self) -> None:
        """A training run has no planned sample count (``Run.total``'s counterpart)."""
        return None

    def stored_bytes(self) -> int:
        """Bytes the run occupies in its store."""
        return int(total_size(self._location.store))

    # ------------------------------------------------------------------ one step
    def at(self, step: int) -> StepView:
        """One committed step, read like a capture run (``viz.compare(run.at(a), run.at(b))``)."""
        self._position(step)
        return StepView(self, int(step))

    def __repr__(self) -> str:
        return (
            f"<tensortap.TrainingRun {self.path!r} {self.status}: {len(self.step_values)} "
            f"steps ({len(self.tensor_steps)} with tensors), {self.samples} probe samples, "
            f"{len(self.layers)} layers>"
        )


class StepView:
    """One step of a :class:`TrainingRun`, with the reading interface of a capture run."""

    def __init__(self, run: TrainingRun, step: int) -> None:
        self.run = run
        self.step = step
        self.path = f"{run.path.rstrip('/')}@step{step}"

    layers = property(lambda self: self.run.layers)
    samples = property(lambda self: self.run.samples)
    attrs = property(lambda self: self.run.attrs)
    status = property(lambda self: self.run.status)
    input_names = property(lambda self: self.run.input_names)
    output_names = property(lambda self: ())
    labels = property(lambda self: self.run.labels)
    predictions = property(lambda self: None)

    @property
    def sample_indices(self) -> np.ndarray:
        """Indices of the probe samples."""
        return np.arange(self.run.samples)

    def node(self, key: str) -> dict[str, Any]:
        """The layer group's attrs."""
        return self.run.node(key)

    def activation(self, key: str) -> xr.DataArray:
        """The probe's activations at this step."""
        return self.run.activation(key, step=self.step)

    def has_gradient(self, key: str) -> bool:
        """Whether gradients were stored at this step."""
        return self.run.has_gradient(key)

    def gradient(self, key: str) -> xr.DataArray:
        """The probe's gradients at this step."""
        return self.run.gradient(key, step=self.step)

    def stats(self, key: str) -> xr.Dataset:
        """The layer's statistics at this step (the variables of ``Run.stats``)."""
        return self.run.stats(key, step=self.step)

    def inputs(self, name: str | None = None) -> xr.DataArray | None:
        """The stored probe input."""
        return self.run.inputs(name)

    def outputs(self, name: str | None = None) -> None:
        """Not stored for training runs."""
        return None

    def __repr__(self) -> str:
        return f"<tensortap.StepView step {self.step} of {self.run.path!r}>"
