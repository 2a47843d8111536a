"""Exact per-channel quantiles of data larger than memory, in a few passes of bounded memory.

Floating-point values are mapped to unsigned integers that sort in the same order (the sign
bit flipped for positives, every bit for negatives), so the k-th smallest value of a channel
is found by narrowing an integer window: each pass counts, for every channel and wanted
rank, the keys in ``2**bits`` equal sub-windows of the current window, and keeps the
sub-window holding the rank.  Integer windows make each count exact (no rounding at bin
edges); a 32-bit float needs ``ceil(32 / bits)`` passes, after which the window holds one
key, i.e. one exact value.  Quantiles are then the order statistics combined as
:func:`numpy.quantile` combines them (the ``linear`` method by default: Hyndman & Fan 1996,
definition 7), NaN ignored as :func:`numpy.nanquantile` does.

This module holds the pure array functions; :mod:`tensortap.core.analysis` runs them over
the blocks of a run on Dask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tensortap.core.errors import DataError

__all__ = [
    "METHODS",
    "bits_per_pass",
    "count_window",
    "from_keys",
    "needed_ranks",
    "combine_order_statistics",
    "narrow",
    "check_quantiles",
    "to_keys",
]

#: The :func:`numpy.quantile` methods reproduced from two order statistics.
METHODS = ("linear", "lower", "higher", "midpoint")

_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}

#: Bytes one pass's count array may take (channels x ranks x sub-windows x 8).
COUNT_BYTES = 2 * 2**20
#: Values keyed at once inside a block (uint64 keys: 4 MiB of temporaries each).
_ROWS_VALUES = 2**19


def _check_float(dtype: np.dtype) -> None:
    if dtype.kind != "f" or dtype.itemsize not in _UNSIGNED:
        raise DataError(
            f"exact quantiles need float16, float32 or float64 values, not {dtype}; cast the "
            "array with .astype('float32') first"
        )


def to_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned keys of float ``values`` (as uint64, NaN not allowed)."""
    _check_float(values.dtype)
    unsigned = _UNSIGNED[values.dtype.itemsize]
    bits = np.ascontiguousarray(values).view(unsigned)
    sign = np.asarray(1 << (8 * values.dtype.itemsize - 1)).astype(unsigned)
    negative = (bits & sign) != 0
    keys = np.where(negative, ~bits, bits | sign)
    return keys.astype(np.uint64)


def from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The float values of ``keys`` made by :func:`to_keys` for ``dtype``."""
    dtype = np.dtype(dtype)
    _check_float(dtype)
    unsigned = _UNSIGNED[dtype.itemsize]
    narrow_keys = np.asarray(keys).astype(unsigned)
    sign = np.asarray(1 << (8 * dtype.itemsize - 1)).astype(unsigned)
    positive = (narrow_keys & sign) != 0
    bits = np.where(positive, narrow_keys & ~sign, ~narrow_keys).astype(unsigned)
    return bits.view(dtype)


def bits_per_pass(channels: int, ranks: int, key_bits: int) -> int:
    """Sub-window bits per pass: as many as fit :data:`COUNT_BYTES`, at most ``key_bits``."""
    cells = max(1, channels * ranks) * 8
    bits = int(np.floor(np.log2(max(2, COUNT_BYTES // cells))))
    return max(1, min(bits, 16, key_bits))


def needed_ranks(count: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper 0-based ranks ``(channel, quantile)`` and the fraction between them.

    The virtual index is ``(n - 1) * q``, computed as numpy computes it; ``lower = floor``, ``upper = min(lower + 1, n - 1)``.
    """
    n = np.asarray(count, np.float64)[:, None]
    virtual = (n - 1) * q[None, :]  # numpy's virtual index for these methods
    lower = np.floor(virtual)
    fraction = virtual - lower
    lower_rank = np.clip(lower, 0, np.maximum(n - 1, 0)).astype(np.int64)
    upper_rank = np.minimum(lower_rank + 1, np.maximum(n - 1, 0).astype(np.int64))
    return np.concatenate([lower_rank, upper_rank], axis=1), fraction


def count_window(
    x2: np.ndarray, low: np.ndarray, shift: int, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Count one block's keys below and inside each channel's and rank's window.

    Parameters
    ----------
    x2 : ndarray, shape (values, channel)
        Float values (NaN ignored).
    low : ndarray, shape (channel, rank), uint64
        First key of each window.
    shift : int
        Each sub-window spans ``2**shift`` keys; the window ``2**(shift + bits)``.
    bits : int
        ``2**bits`` sub-windows.

    Returns
    -------
    below : ndarray, shape (channel, rank), int64
        Keys smaller than the window.
    counts : ndarray, shape (channel, rank, 2**bits), int64
        Keys per sub-window.
    """
    channels, ranks = low.shape
    nb = 1 << bits
    below = np.zeros((channels, ranks), np.int64)
    counts = np.zeros((channels, ranks, nb), np.int64)
    if x2.size == 0:
        return below, counts
    starts = low.astype(np.uint64)
    window = np.uint64(nb) << np.uint64(shift) if shift + bits < 64 else None
    step = max(1, _ROWS_VALUES // max(1, channels))  # bounded temporaries on big blocks
    for first in range(0, x2.shape[0], step):
        piece = x2[first : first + step]
        keys = to_keys(piece)
        valid = ~np.isnan(piece)
        for r in range(ranks):
            start = starts[:, r]
            ahead = keys >= start
            ahead &= valid
            below[:, r] += np.count_nonzero(valid, axis=0) - np.count_nonzero(ahead, axis=0)
            if window is not None:  # wrapping subtraction is exact where `ahead`
                ahead &= (keys - start) < window
            rows, cols = np.nonzero(ahead)
            sub = (keys[rows, cols] - start[cols]) >> np.uint64(shift)
            slots = cols * nb + sub.astype(np.int64)
            counts[:, r] += np.bincount(slots, minlength=channels * nb).reshape(channels, nb)
    return below, counts


def narrow(
    low: np.ndarray, below: np.ndarray, counts: np.ndarray, ranks: np.ndarray, shift: int
) -> np.ndarray:
    """The next windows' first keys: the sub-window that holds each rank."""
    cumulative = below[:, :, None] + np.cumsum(counts, axis=2)
    # First sub-window whose cumulative count passes the rank (0-based).
    chosen = (cumulative <= ranks[:, :, None]).sum(axis=2)
    chosen = np.minimum(chosen, counts.shape[2] - 1).astype(np.uint64)
    out: np.ndarray = low + (chosen << np.uint64(shift))
    return out


def combine_order_statistics(
    lower: np.ndarray, upper: np.ndarray, fraction: np.ndarray, method: str
) -> np.ndarray:
    """Quantiles from the two order statistics around each virtual index, as numpy does."""
    a, b = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    step = (fraction > 0).astype(np.float64)
    gamma = {"linear": fraction, "lower": 0 * step, "higher": step, "midpoint": 0.5 * step}
    t = gamma[method]
    # numpy's _lerp: a + (b - a) t, computed from b's side when t >= 0.5 (monotone).
    diff = b - a
    result: np.ndarray = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return result


def check_quantiles(q: Sequence[float] | float, method: str) -> np.ndarray:
    """``q`` as a float64 array in ``[0, 1]``; the method among :data:`METHODS`."""
    values = np.atleast_1d(np.asarray(q, np.float64))
    if values.ndim != 1 or not np.all((values >= 0) & (values <= 1)):
        raise DataError(f"quantiles must lie in [0, 1], got {np.asarray(q).tolist()}")
    if method not in METHODS:
        raise DataError(f"quantile method {method!r} is not one of {list(METHODS)}")
    return values
