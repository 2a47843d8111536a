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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import compute
from dask.delayed import delayed

from tensortap.core import exact_quantiles as eq
from tensortap.core.distributed_checks import check_client
from tensortap.core.errors import DataError
from tensortap.core.graph import channel_dim
from tensortap.core.stats import block_stats, merge_blocks, reduce_blocks, to_channels_last

__all__ = [
    "compare_runs",
    "histogram",
    "quantiles",
    "sample_positions",
    "subset_stats",
    "top_samples",
]

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


# ---------------------------------------------------------------------------- quantiles
def _count_partial(
    block: np.ndarray,
    dims: tuple[str, ...],
    channel: str | None,
    low: np.ndarray,
    shift: int,
    bits: int,
) -> tuple[np.ndarray, np.ndarray]:
    return eq.count_window(_values_2d(block, dims, channel), low, shift, bits)


def _sum_pairs(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return sum(p[0] for p in parts), sum(p[1] for p in parts)  # type: ignore[return-value]


def _pieces(x2: np.ndarray) -> Any:
    """Row slices of a ``(values, channel)`` block holding about 2**19 values each: the
    float64 temporaries of one piece stay small whatever the block size."""
    step = max(1, 2**19 // max(1, x2.shape[1]))
    for first in range(0, x2.shape[0], step):
        yield x2[first : first + step].astype(np.float64)


def _minmax_partial(
    block: np.ndarray, dims: tuple[str, ...], channel: str | None
) -> tuple[np.ndarray, np.ndarray]:
    x2 = _values_2d(block, dims, channel)
    low = np.full(x2.shape[1], np.inf)
    high = np.full(x2.shape[1], -np.inf)
    for piece in _pieces(x2):
        nan = np.isnan(piece)
        low = np.minimum(low, np.where(nan, np.inf, piece).min(axis=0, initial=np.inf))
        high = np.maximum(high, np.where(nan, -np.inf, piece).max(axis=0, initial=-np.inf))
    return low, high


def _merge_minmax(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.min([p[0] for p in parts], axis=0), np.max([p[1] for p in parts], axis=0)


def _value_partial(
    block: np.ndarray,
    dims: tuple[str, ...],
    channel: str | None,
    low: np.ndarray,
    width: np.ndarray,
    bins: int,
) -> np.ndarray:
    """Per-channel counts in ``bins`` equal value bins over ``[low, low + bins * width]``."""
    x2 = _values_2d(block, dims, channel)
    channels = x2.shape[1]
    counts = np.zeros(channels * bins, np.int64)
    for piece in _pieces(x2):
        valid = ~np.isnan(piece)
        slot = np.floor((np.where(valid, piece, low) - low) / width)
        slot = np.clip(slot, 0, bins - 1).astype(np.int64)
        slot += np.arange(channels) * bins
        counts += np.bincount(slot[valid], minlength=channels * bins)
    return counts.reshape(channels, bins)


def quantiles(
    run: Any,
    key: str,
    q: Sequence[float] | float,
    *,
    where: Any = None,
    exact: bool = True,
    bins: int = 4096,
    method: str = "linear",
    gradient: bool = False,
    client: Any = None,
) -> xr.DataArray:
    """Per-channel quantiles of one layer's values over a subset (NaN ignored).

    Parameters
    ----------
    run : tensortap.Run
    key : str
    q : float or sequence of float
        Quantiles in ``[0, 1]``.
    where : optional
        The samples (module docstring).
    exact : bool
        ``True``: the values :func:`numpy.nanquantile` gives (``method``), found by integer
        key refinement in ``ceil(bits of the dtype / bits per pass)`` passes over the data
        (3 for float32) (:mod:`tensortap.core.exact_quantiles`).  ``False``: two passes
        (min/max, then ``bins`` value bins per channel); each result is the middle of the
        bins holding its order statistics, within the ``error_bound`` coordinate (one
        bin width) of the exact value.
    bins : int
        Value bins per channel for ``exact=False``.
    method : str
        ``"linear"`` (numpy's default), ``"lower"``, ``"higher"`` or ``"midpoint"``.
    gradient : bool
        Analyse the gradients instead of the activations.
    client : distributed.Client, optional

    Returns
    -------
    xarray.DataArray
        Dims ``("quantile", "channel")``, float64; coordinate ``error_bound`` (channel):
        0 for exact results.
    """
    qs = eq.check_quantiles(q, method)
    positions = sample_positions(run, where)
    array = _layer(run, key, gradient, positions)
    channel = _channel(run, key, array)
    dims = tuple(str(d) for d in array.dims[1:])
    dtype = np.dtype(array.dtype)
    blocks = _block_arrays(array)
    channels = int(array.sizes[channel]) if channel is not None else 1
    if exact:
        lower, upper, fraction = _exact_order_statistics(
            blocks, dims, channel, channels, dtype, qs, client
        )
        bound = np.zeros(lower.shape[0])
    else:
        lower, upper, fraction, bound = _binned_order_statistics(
            blocks, dims, channel, qs, int(bins), client
        )
    values = eq.combine_order_statistics(lower, upper, fraction, method).T  # (quantile, channel)
    return xr.DataArray(
        values,
        dims=("quantile", "channel"),
        coords={"quantile": qs, "error_bound": ("channel", bound)},
        name=f"{key} quantiles",
        attrs={
            **_attrs(run, key, where, len(positions), gradient, channel),
            "method": method,
            "exact": bool(exact),
        },
    )


def _count_pass(
    blocks: list[Any],
    dims: tuple[str, ...],
    channel: str | None,
    low: np.ndarray,
    shift: int,
    bits: int,
    client: Any,
) -> tuple[np.ndarray, np.ndarray]:
    parts = [
        delayed(_count_partial, pure=True)(block, dims, channel, low, shift, bits)
        for block in blocks
    ]
    (total,) = _compute([_tree(parts, _sum_pairs)], client)
    return np.asarray(total[0]), np.asarray(total[1])


def _exact_order_statistics(
    blocks: list[Any],
    dims: tuple[str, ...],
    channel: str | None,
    channels: int,
    dtype: np.dtype,
    qs: np.ndarray,
    client: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two order statistics around each quantile, exactly, per channel."""
    key_bits = 8 * dtype.itemsize
    eq.to_keys(np.zeros(1, dtype))  # refuses integer data before any pass
    # Pass 1: one window per channel, the whole key space; the ranks follow from its counts.
    bits = eq.bits_per_pass(channels, 1, key_bits)
    shift = key_bits - bits
    low = np.zeros((channels, 1), np.uint64)
    below, counts = _count_pass(blocks, dims, channel, low, shift, bits, client)
    n = counts.sum(axis=(1, 2))
    ranks, fraction = eq.needed_ranks(n, qs)
    wanted = ranks.shape[1]
    low = eq.narrow(
        np.repeat(low, wanted, axis=1),
        np.repeat(below, wanted, axis=1),
        np.repeat(counts, wanted, axis=1),
        ranks,
        shift,
    )
    while shift > 0:  # each pass splits every window into 2**bits and keeps one
        bits = min(eq.bits_per_pass(channels, wanted, key_bits), shift)
        shift -= bits
        below, counts = _count_pass(blocks, dims, channel, low, shift, bits, client)
        low = eq.narrow(low, below, counts, ranks, shift)
    values = eq.from_keys(low, dtype).astype(np.float64)
    values[n == 0] = np.nan  # a channel of NaN only has no quantile
    half = len(qs)
    return values[:, :half], values[:, half:], fraction


def _binned_order_statistics(
    blocks: list[Any],
    dims: tuple[str, ...],
    channel: str | None,
    qs: np.ndarray,
    bins: int,
    client: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Order statistics to within one value bin: a min/max pass, then one counting pass."""
    if bins < 1:
        raise DataError(f"bins={bins} must be at least 1")
    parts = [delayed(_minmax_partial, pure=True)(b, dims, channel) for b in blocks]
    ((low, high),) = _compute([_tree(parts, _merge_minmax)], client)
    present = np.isfinite(low) | np.isfinite(high)
    if np.isinf(low[present]).any() or np.isinf(high[present]).any():
        raise DataError("the values include infinities, which no value bin holds; use exact=True")
    low, high = np.where(present, low, 0.0), np.where(present, high, 0.0)
    width = (high - low) / bins
    safe = np.where(width > 0, width, 1.0)  # one value per channel: every count in bin 0
    parts = [delayed(_value_partial, pure=True)(b, dims, channel, low, safe, bins) for b in blocks]
    (counts,) = _compute([_tree(parts, lambda *p: sum(p))], client)
    n = counts.sum(axis=1)
    ranks, fraction = eq.needed_ranks(n, qs)
    cumulative = np.cumsum(counts, axis=1)
    chosen = (cumulative[:, None, :] <= ranks[:, :, None]).sum(axis=2)
    middle = low[:, None] + (np.minimum(chosen, bins - 1) + 0.5) * width[:, None]
    middle = np.clip(middle, low[:, None], high[:, None])
    middle[n == 0] = np.nan
    half = len(qs)
    return middle[:, :half], middle[:, half:], fraction, width


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
