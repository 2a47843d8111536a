"""Per-channel quantiles of runs larger than memory, on Dask (:func:`quantiles`; the exact
algorithm is in :mod:`tensortap.core.exact_quantiles`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from dask.delayed import delayed

from tensortap.core import exact_quantiles as eq
from tensortap.core._analysis_blocks import (
    _attrs,
    _block_arrays,
    _channel,
    _compute,
    _layer,
    _tree,
    _values_2d,
    sample_positions,
)
from tensortap.core.errors import DataError

__all__ = ["quantiles"]


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
