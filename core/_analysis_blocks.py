"""Shared machinery of :mod:`tensortap.core.analysis`: sample subsets, one delayed NumPy
block per stored block, the reduction tree, and where to compute."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import compute
from dask.delayed import delayed

from tensortap.core.distributed_checks import check_client
from tensortap.core.errors import DataError
from tensortap.core.graph import channel_dim
from tensortap.core.stats import to_channels_last

__all__ = ["FAN_IN", "sample_positions"]

#: Partials merged per task of the reduction tree.
FAN_IN = 8


# ---------------------------------------------------------------------------- subsets
def _class_mask(run: Any, name: str, wanted: Any) -> np.ndarray:
    values = run.labels if name == "label" else run.predictions
    if values is None:
        raise DataError(
            f"where={{{name!r}: ...}} needs the run's {name}s, and {run.path!r} has none; "
            + ("capture with labels" if name == "label" else "the model is not a classifier")
        )
    return np.isin(np.asarray(values.values), np.atleast_1d(np.asarray(wanted)))


def sample_positions(run: Any, where: Any = None) -> np.ndarray:
    """Positions (0-based, along the run's ``sample`` axis) of the samples ``where`` selects.

    Parameters
    ----------
    run : tensortap.Run
    where : None, str, mapping, or array
        See the module docstring.

    Raises
    ------
    DataError
        An unknown subset, a subset that needs labels the run lacks, or one that selects
        no sample.
    """
    n = int(run.samples)
    if where is None:
        positions = np.arange(n)
    elif isinstance(where, str):
        if where not in ("misclassified", "correct"):
            raise DataError(
                f"where={where!r} is not a subset; use 'misclassified', 'correct', "
                "{'label': k}, {'prediction': k}, a boolean mask or sample indices"
            )
        if run.labels is None or run.predictions is None:
            raise DataError(
                f"where={where!r} compares labels with predictions; the run at {run.path!r} "
                "lacks one of them (capture with labels, from a classifier)"
            )
        wrong = np.asarray(run.labels.values) != np.asarray(run.predictions.values)
        positions = np.flatnonzero(wrong if where == "misclassified" else ~wrong)
    elif isinstance(where, Mapping):
        unknown = set(where) - {"label", "prediction"}
        if unknown:
            raise DataError(
                f"where= keys {sorted(unknown)} are unknown; use 'label' and 'prediction'"
            )
        mask = np.ones(n, bool)
        for name, wanted in where.items():
            mask &= _class_mask(run, name, wanted)
        positions = np.flatnonzero(mask)
    else:
        selection = np.asarray(where)
        if selection.dtype == bool:
            if selection.shape != (n,):
                raise DataError(
                    f"a boolean where= must have one entry per sample ({n}), got shape "
                    f"{selection.shape}"
                )
            positions = np.flatnonzero(selection)
        elif selection.dtype.kind in "iu":
            indices = np.asarray(run.sample_indices)
            found = np.isin(selection, indices)
            if not found.all():
                missing = selection[~found][:5].tolist()
                raise DataError(
                    f"sample indices {missing} are not committed samples of {run.path!r} "
                    f"(it holds {n}); pass values of run.sample_indices"
                )
            positions = np.searchsorted(indices, np.unique(selection))
        else:
            raise DataError(
                f"where= of type {type(where).__name__} (dtype {selection.dtype}) is not a "
                "subset; see tensortap.core.analysis for the accepted forms"
            )
    if not len(positions):
        raise DataError(f"where={where!r} selects no sample of the run at {run.path!r}")
    return positions


# ---------------------------------------------------------------------------- blocks
def _layer(run: Any, key: str, gradient: bool, positions: np.ndarray) -> xr.DataArray:
    array: xr.DataArray = run.gradient(key) if gradient else run.activation(key)
    if len(positions) != array.sizes["sample"]:
        array = array.isel(sample=positions)
    return array


def _channel(run: Any, key: str, array: xr.DataArray) -> str | None:
    dims = tuple(str(d) for d in array.dims[1:])
    stored = run.node(key).get("channel_dim")
    return stored if stored in dims else channel_dim(dims)


def _block_arrays(array: xr.DataArray) -> list[Any]:
    """One delayed NumPy block per chunk along ``sample`` (other dimensions whole)."""
    data = array.data
    if not isinstance(data, da.Array):
        data = da.from_array(  # type: ignore[no-untyped-call]
            np.asarray(data), chunks=(max(1, min(256, array.shape[0])),)
        )
    data = data.rechunk({axis: -1 for axis in range(1, data.ndim)})
    return list(data.to_delayed().ravel())


def _tree(parts: list[Any], combine: Callable[..., Any]) -> Any:
    """Merge partials ``FAN_IN`` at a time: no task ever holds many of them."""
    while len(parts) > 1:
        parts = [
            delayed(combine, pure=True)(*parts[i : i + FAN_IN])
            for i in range(0, len(parts), FAN_IN)
        ]
    return parts[0]


def _compute(lazy: Sequence[Any], client: Any) -> list[Any]:
    if client is not None:
        check_client(client)
        return list(client.gather(client.compute(list(lazy))))
    return list(compute(*lazy))  # type: ignore[no-untyped-call]


def _values_2d(block: np.ndarray, dims: tuple[str, ...], channel: str | None) -> np.ndarray:
    """A block as ``(values, channel)``: every position of every sample, per channel."""
    x3 = to_channels_last(np.asarray(block), dims, channel)
    return x3.reshape(-1, x3.shape[-1])


def _attrs(
    run: Any, key: str, where: Any, n: int, gradient: bool, channel: str | None
) -> dict[str, Any]:
    return {
        "key": key,
        "run": str(run.path),
        "where": "all" if where is None else repr(where) if not hasattr(where, "shape") else "mask",
        "samples": int(n),
        "source": "gradient" if gradient else "activation",
        "channel_dim": channel,
    }
