"""Analysis of runs larger than memory, on Dask: statistics, histograms, quantiles, top-k
samples and run comparison over any subset of samples (issue 18, docs/scaling.md).

Every function reads a layer block by block from the run's lazy arrays (one Dask chunk per
stored block), reduces each block to a small partial on whichever worker holds it, and
merges the partials in a tree: no worker ever holds more than a few blocks, so a run far
larger than the cluster's memory is analysed in the memory of one block per thread.  With
``client=`` the work runs on that cluster; without, on Dask's current scheduler (a
``distributed`` default client when one exists).

Results are xarray objects in the layouts the views read: :func:`subset_stats` returns the
same variables as :meth:`tensortap.Run.stats` (``viz.distributions.layer_summary`` and
``histogram_quantiles`` accept it), quantiles have a ``quantile`` dimension as
:meth:`xarray.DataArray.quantile` gives, and everything per channel uses dimension
``channel``.

Sample subsets (``where=``): ``None`` (every committed sample), ``"misclassified"``,
``"correct"``, a mapping ``{"label": 3}`` / ``{"prediction": [1, 2]}`` (keys combined with
*and*), a boolean mask over the run's samples, or an integer array of sample indices (the
``sample`` coordinate).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import delayed

from tensortap.core._analysis_blocks import (
    _attrs,
    _block_arrays,
    _channel,
    _compute,
    _layer,
    _tree,
    sample_positions,
)
from tensortap.core.analysis_quantiles import quantiles
from tensortap.core.errors import DataError
from tensortap.core.stats import block_stats, merge_blocks, reduce_blocks, to_channels_last

__all__ = [
    "compare_runs",
    "histogram",
    "quantiles",
    "sample_positions",
    "subset_stats",
    "top_samples",
]


# ---------------------------------------------------------------------------- statistics
def _stats_partial(
    block: np.ndarray, dims: tuple[str, ...], channel: str | None, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    stats = block_stats(to_channels_last(np.asarray(block), dims, channel), edges)
    return stats.moments, stats.histogram


def _merge_stats(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return merge_blocks(np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]))


def _edges(run: Any, key: str, bins: int | None, value_range: Any) -> np.ndarray:
    if value_range is None:
        if bins is not None:
            raise DataError(f"bins={bins} needs range=(low, high) too: exact bins are fixed")
        return np.asarray(run.stats(key)["bin_edges"].values, np.float64)
    low, high = (float(v) for v in value_range)
    count = 128 if bins is None else int(bins)
    if not (np.isfinite(low) and np.isfinite(high) and low < high) or count < 1:
        raise DataError(
            f"range={tuple(value_range)} with bins={bins} is not a histogram; give finite "
            "low < high and bins >= 1"
        )
    return np.linspace(low, high, count + 1)


def subset_stats(
    run: Any,
    key: str,
    *,
    where: Any = None,
    bins: int | None = None,
    range: tuple[float, float] | None = None,  # noqa: A002 - numpy.histogram's name
    gradient: bool = False,
    client: Any = None,
) -> xr.Dataset:
    """Per-channel statistics and an exact histogram of one layer over a sample subset.

    Parameters
    ----------
    run : tensortap.Run
    key : str
        Layer key.
    where : optional
        The samples (module docstring); default every committed sample.
    bins, range : optional
        Histogram bins over ``[low, high)``; default the run's stored edges, so the result
        is comparable with ``run.stats(key)`` (equal to it for ``where=None``).
    gradient : bool
        Analyse the gradients instead of the activations.
    client : distributed.Client, optional
        Where to compute.

    Returns
    -------
    xarray.Dataset
        ``count``, ``mean``, ``std``, ``min``, ``max``, ``zero_fraction``, ``nonfinite``
        over ``channel``; ``histogram`` over ``bin`` (half-open bins, a value at or above
        the last edge is ``overflow``), ``bin_edges``, ``bin_center``, ``underflow``,
        ``overflow``, ``zeros``: the variables of :meth:`tensortap.Run.stats`.
    """
    positions = sample_positions(run, where)
    array = _layer(run, key, gradient, positions)
    channel = _channel(run, key, array)
    dims = tuple(str(d) for d in array.dims[1:])
    edges = _edges(run, key, bins, range)
    parts = [
        delayed(_stats_partial, pure=True)(block, dims, channel, edges)
        for block in _block_arrays(array)
    ]
    (merged,) = _compute([_tree(parts, _merge_stats)], client)
    reduced = reduce_blocks(merged[0][None], merged[1][None])
    data_vars: dict[str, Any] = {
        "count": ("channel", reduced.count, {"long_name": "finite values"}),
        "mean": ("channel", reduced.mean, {"long_name": "mean"}),
        "std": ("channel", reduced.std, {"long_name": "standard deviation"}),
        "min": ("channel", reduced.min, {"long_name": "minimum"}),
        "max": ("channel", reduced.max, {"long_name": "maximum"}),
        "zero_fraction": ("channel", reduced.zero_fraction, {"long_name": "fraction of zeros"}),
        "nonfinite": ("channel", reduced.nonfinite, {"long_name": "NaN or infinite values"}),
        "histogram": ("bin", reduced.histogram, {"long_name": "values per bin"}),
        "underflow": ((), reduced.underflow, {"long_name": "values below the first edge"}),
        "overflow": ((), reduced.overflow, {"long_name": "values at or above the last edge"}),
        "zeros": ((), reduced.zeros, {"long_name": "exact zeros"}),
    }
    return xr.Dataset(
        data_vars,
        coords={
            "bin_edges": ("bin_edge", edges),
            "bin_center": ("bin", (edges[:-1] + edges[1:]) / 2),
        },
        attrs=_attrs(run, key, where, len(positions), gradient, channel),
    )


def histogram(
    run: Any,
    key: str,
    *,
    bins: int,
    range: tuple[float, float],  # noqa: A002 - numpy.histogram's name
    where: Any = None,
    gradient: bool = False,
    client: Any = None,
) -> xr.Dataset:
    """The exact histogram of every value of one layer over a subset: ``bins`` half-open
    bins over ``[low, high)``, with ``underflow``/``overflow`` counts (:func:`subset_stats`)."""
    stats = subset_stats(
        run, key, where=where, bins=bins, range=range, gradient=gradient, client=client
    )
    return stats[["histogram", "underflow", "overflow", "zeros"]]


# ---------------------------------------------------------------------------- top-k
def top_samples(
    run: Any,
    key: str,
    k: int = 9,
    *,
    where: Any = None,
    by: str = "mean",
    gradient: bool = False,
    client: Any = None,
) -> xr.Dataset:
    """The ``k`` samples that activate each channel most, over a subset.

    Parameters
    ----------
    run : tensortap.Run
    key : str
    k : int
        Samples per channel (at most the subset's size).
    where : optional
        The samples (module docstring).
    by : {"mean", "max"}
        A sample's score for a channel: the mean or the max over the other dimensions
        (positions), NaN ignored.
    gradient : bool
        Rank by the gradients instead of the activations.
    client : distributed.Client, optional

    Returns
    -------
    xarray.Dataset
        Over ``("rank", "channel")``, best first: ``score``, ``sample`` (the sample index,
        the run's ``sample`` coordinate) and ``position`` (its position in the run).
    """
    if by not in ("mean", "max"):
        raise DataError(f"by={by!r} is not a score; use 'mean' or 'max'")
    if int(k) < 1:
        raise DataError(f"k={k} must be at least 1")
    positions = sample_positions(run, where)
    array = _layer(run, key, gradient, positions).reset_coords(drop=True)
    channel = _channel(run, key, array)
    if channel is None:
        array, channel = array.expand_dims("channel", axis=-1), "channel"
    other = [d for d in array.dims[1:] if d != channel]
    score = (array.mean(other) if by == "mean" else array.max(other)) if other else array
    data = da.asarray(score.transpose("sample", channel).data)  # type: ignore[no-untyped-call]
    k = min(int(k), len(positions))
    largest = da.topk(data, k, axis=0)  # type: ignore[no-untyped-call]
    where_largest = da.argtopk(data, k, axis=0)  # type: ignore[no-untyped-call]
    values, index = _compute([largest, where_largest], client)
    order = np.argsort(-np.asarray(values), axis=0, kind="stable")  # best first
    values = np.take_along_axis(np.asarray(values), order, axis=0)
    index = np.take_along_axis(np.asarray(index), order, axis=0)
    run_positions = positions[index]
    return xr.Dataset(
        {
            "score": (("rank", "channel"), values, {"long_name": f"{by} per sample"}),
            "sample": (("rank", "channel"), np.asarray(run.sample_indices)[run_positions]),
            "position": (("rank", "channel"), run_positions),
        },
        coords={"rank": np.arange(k)},
        attrs={**_attrs(run, key, where, len(positions), gradient, channel), "by": by},
    )


# ---------------------------------------------------------------------------- comparison
def compare_runs(
    run_a: Any,
    run_b: Any,
    key: str,
    *,
    key_b: str | None = None,
    where: Any = None,
    gradient: bool = False,
    client: Any = None,
) -> xr.Dataset:
    """Per-channel differences of one layer between two runs, on the samples both hold.

    Parameters
    ----------
    run_a, run_b : tensortap.Run
        Two captures of the same data (two models, two checkpoints, two precisions).
    key : str
        Layer key in ``run_a`` (and in ``run_b`` unless ``key_b`` is given).
    key_b : str, optional
        The layer's key in ``run_b``.
    where : optional
        A subset of ``run_a``'s samples (module docstring).
    gradient : bool
        Compare the gradients instead of the activations.
    client : distributed.Client, optional

    Returns
    -------
    xarray.Dataset
        Over ``channel``: ``mean_a``, ``mean_b``, ``std_a``, ``std_b``, ``max_abs_diff``,
        ``mean_abs_diff``, ``rmse`` and ``correlation`` (Pearson, over samples and
        positions); attrs name both runs and the number of samples compared.
    """
    indices_a, indices_b = np.asarray(run_a.sample_indices), np.asarray(run_b.sample_indices)
    common = np.intersect1d(indices_a, indices_b)
    if where is not None:
        common = np.intersect1d(common, indices_a[sample_positions(run_a, where)])
    if not len(common):
        raise DataError(
            f"the runs {run_a.path!r} and {run_b.path!r} share no sample"
            + (f" in where={where!r}" if where is not None else "")
            + "; compare captures of the same data"
        )
    a = _layer(run_a, key, gradient, np.searchsorted(indices_a, common))
    b = _layer(run_b, key_b or key, gradient, np.searchsorted(indices_b, common))
    if a.dims != b.dims or a.shape != b.shape:
        raise DataError(
            f"layer {key!r} is {dict(a.sizes)} in {run_a.path!r} but {key_b or key!r} is "
            f"{dict(b.sizes)} in {run_b.path!r}; compare layers of the same shape and "
            "dimension order"
        )
    a = a.reset_coords(drop=True).astype(np.float64)
    b = b.reset_coords(drop=True).astype(np.float64).assign_coords(sample=a["sample"])
    channel = _channel(run_a, key, a)
    if channel is None:
        a, b, channel = a.expand_dims("channel", -1), b.expand_dims("channel", -1), "channel"
    other = [d for d in a.dims if d != channel]
    diff = a - b
    lazy: dict[str, Any] = {
        "mean_a": a.mean(other),
        "mean_b": b.mean(other),
        "std_a": a.std(other),
        "std_b": b.std(other),
        "max_abs_diff": abs(diff).max(other),
        "mean_abs_diff": abs(diff).mean(other),
        "rmse": np.sqrt((diff**2).mean(other)),
        "correlation": xr.corr(a, b, dim=other),
    }
    arrays = [v.transpose(channel).data for v in lazy.values()]
    values = _compute(arrays, client)
    return xr.Dataset(
        {name: ("channel", np.asarray(v)) for name, v in zip(lazy, values, strict=True)},
        attrs={
            "key": key,
            "run_a": str(run_a.path),
            "run_b": str(run_b.path),
            "samples": len(common),
            "source": "gradient" if gradient else "activation",
        },
    )
