"""One pass over a block for every streamed statistic, compiled with Numba when installed.

The NumPy path in :mod:`tensortap.core.stats` needs a dozen passes over each block (max,
min, sums, squares, zeros, and the histogram's guess, clip, cast, two corrections and
bincount); on W1 (855 MB a batch) that cost more CPU than the model itself.  These kernels
read each value once.  The common case, a block without NaN or infinity, takes
:func:`_reduce_finite`: per position, a few loops over the contiguous channels that the
compiler vectorises (sums, squares, min, max, zeros, a non-finite flag, the histogram
guess and whether it lies close enough to a bin boundary to need checking), then a scalar
loop that corrects the flagged guesses and counts them all into four interleaved histogram
copies (consecutive increments of one slot would otherwise wait on each other): about
2.7 GB/s on one core here, ~9× the NumPy path.  A block holding a non-finite value is
reduced again by :func:`_reduce_py`, which skips such values one by one (~1 GB/s).  Both
release the GIL, so the writer threads reduce several layers at once; they are
single-threaded on purpose (a parallel Numba kernel called from several threads at once is
not safe with every threading layer).

Results are those of the NumPy path: counts, minima, maxima, zeros and histogram slots
exactly (the same bin rule, :func:`tensortap.core.stats.histogram_params`); sums and sums
of squares in float64, summed in another order (differences of order 1e-16 relative).
``TENSORTAP_NUMBA=0`` turns it off.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

__all__ = ["BlockReductions", "reduce_block"]

#: finite count, sum, sum of squares, min, max, zeros (per sample × channel), non-finite
#: count (per channel) and histogram slot counts.
BlockReductions = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]

#: ``TENSORTAP_NUMBA=0`` turns the kernel off (the NumPy path then runs everywhere).
_ENABLED = os.environ.get("TENSORTAP_NUMBA", "1") != "0"


def _reduce_py(
    x3: Any, scale: Any, offset: Any, bounds: Any, slots: int
) -> Any:  # pragma: no cover - compiled
    n, positions, channels = x3.shape
    finite = np.zeros((n, channels), np.int64)
    sums = np.zeros((n, channels), np.float64)
    squares = np.zeros((n, channels), np.float64)
    low = np.full((n, channels), np.inf, np.float32)
    high = np.full((n, channels), -np.inf, np.float32)
    zeros = np.zeros((n, channels), np.int64)
    counts = np.zeros(slots, np.int64)
    top = np.float32(slots - 1)
    for i in range(n):
        for p in range(positions):
            for c in range(channels):
                v = x3[i, p, c]
                if not np.isfinite(v):
                    continue
                finite[i, c] += 1
                w = np.float64(v)
                sums[i, c] += w
                squares[i, c] += w * w
                if v < low[i, c]:
                    low[i, c] = v
                if v > high[i, c]:
                    high[i, c] = v
                if v == 0:
                    zeros[i, c] += 1
                # the shared bin rule: a float32 guess, corrected against the bounds
                t = v * scale + offset
                t = min(max(t, np.float32(0)), top)
                s = int(t)
                if v < bounds[s]:
                    s -= 1
                elif v >= bounds[s + 1]:
                    s += 1
                counts[s] += 1
    return finite, sums, squares, low, high, zeros, counts


def _reduce_finite(
    x3: Any, scale: Any, offset: Any, bounds: Any, slots: int, margin: Any, zero_slot: int
) -> Any:  # pragma: no cover - compiled
    """:func:`_reduce_py` for blocks of finite values; ``bad`` counts the others (then the
    results are void and the caller falls back).

    Each loop over the channels of a position touches few arrays: LLVM vectorises a loop
    only when it can check at run time that its arrays do not overlap, and gives up past
    a handful of such checks (one loop for everything ran at half the speed).  A guess
    within ``margin`` of a slot boundary is flagged (bit 24) and corrected against
    ``bounds`` in the counting loop; every other guess is exact (:func:`guess_margin`).
    Exact zeros take ``zero_slot``, their slot found once by the caller: after a ReLU half
    the values are zeros, and where zero is an edge (a ReLU layer's lowest) each of them
    was flagged, and its correction's unpredictable branch made the kernel ~2× slower.
    """
    n, positions, channels = x3.shape
    sums = np.zeros((n, channels), np.float64)
    squares = np.zeros((n, channels), np.float64)
    low = np.full((n, channels), np.inf, np.float32)
    high = np.full((n, channels), -np.inf, np.float32)
    zeros = np.zeros((n, channels), np.int32)
    # ``bounds`` ends with one more +inf and ``counts`` with one more slot, where +inf
    # (a non-finite value, so a void result) lands instead of out of bounds.
    counts = np.zeros((4, slots + 1), np.int64)
    guess = np.empty(channels, np.int32)
    bad = np.zeros(channels, np.int32)
    top = np.float32(slots - 1)
    zero = np.float32(0)
    flag = np.int32(1 << 24)
    for i in range(n):
        sums_i, squares_i, low_i, high_i, zeros_i = sums[i], squares[i], low[i], high[i], zeros[i]
        for p in range(positions):
            row = x3[i, p]
            for c in range(channels):
                w = np.float64(row[c])
                sums_i[c] += w
                squares_i[c] += w * w
            for c in range(channels):
                v = row[c]
                low_i[c] = min(v, low_i[c])
                high_i[c] = max(v, high_i[c])
            for c in range(channels):
                v = row[c]
                zeros_i[c] += np.int32(v == zero)
                bad[c] += np.int32(v - v != zero)  # NaN for NaN and ±inf
            for c in range(channels):
                t = row[c] * scale + offset
                near = np.int32(abs(t - np.rint(t)) < margin)
                t = t if t > zero else zero  # NaN too: every guess indexes ``bounds``
                g = np.int32(t if t < top else top) | (near << 24)
                guess[c] = zero_slot if row[c] == zero else g
            for c in range(channels):  # count, correcting the few flagged guesses
                s = guess[c]
                if s >= flag:
                    s -= flag
                    v = row[c]
                    if v < bounds[s]:
                        s -= 1
                    elif v >= bounds[s + 1]:
                        s += 1
                counts[c & 3, s] += 1
    # Summed here: returning the copies made the whole kernel ~1.5× slower (Numba 0.68).
    return sums, squares, low, high, zeros, counts.sum(axis=0), bad.sum()


def guess_margin(scale: np.float32, offset: np.float32, bounds: np.ndarray) -> np.float32:
    """How close to a whole number a bin guess ``t = x * scale + offset`` must come for
    its slot to need the exact comparison with ``bounds``.

    The guess's slot boundaries sit at whole ``t``.  Three float32 roundings move them:
    ``scale`` and ``offset`` themselves (at most ``(bins + |offset|) * 2**-24`` in ``t``),
    the stored edges rounded up to float32 (``max|edge| * scale * 2**-23``), and the
    product and sum that make ``t`` (``(|x * scale| + |t|) * 2**-24``, with ``|x| <=
    max|edge|`` plus a bin near any boundary).  A guess at least their sum away from every
    whole number is therefore in its exact slot; the margin is that sum, doubled.  Far
    outside the edges the guess is clamped to under- or overflow, which is exact too.
    """
    bins = len(bounds) - 3
    edge = float(max(abs(bounds[1]), abs(bounds[-2])))
    reach = (edge + (float(bounds[-2]) - float(bounds[1])) / max(bins, 1)) * float(scale)
    total = 2 * (bins + 2) + abs(float(offset)) + 3 * reach
    return np.float32(min(2.0**-21 * total, 1.0))


@functools.cache
def _compiled() -> Any:
    """The exact kernel compiled by Numba (imported on first use: it costs ~0.5 s), or
    ``None``."""
    if not _ENABLED:
        return None
    try:
        from numba import njit
    except ImportError:  # numba is a dependency, but stay usable without it
        return None
    return njit(nogil=True, cache=True)(_reduce_py)


@functools.cache
def _compiled_finite() -> Any:
    """:func:`_reduce_finite` compiled (only asked for once :func:`_compiled` exists)."""
    from numba import njit

    return njit(nogil=True, cache=True, boundscheck=False)(_reduce_finite)


#: Lane widths tried for channels-first maps, widest first (see :func:`reduce_block`).
_LANE_WIDTHS = (64, 32)
#: Up to this many channels a channels-first map is reduced in lanes (interleaved timings
#: on TinyResNet's maps: 1.1-1.2x faster at 8 channels, none at 16).
_FEW_CHANNELS = 8
#: ... and only when each map holds at least this many rows of lanes: the lanes' partial
#: results are as large as the map divided by its rows, so a small map (the digits CNN's
#: 8×8: one row) spent 5× the kernel's time summing them (issue 14; 32×32 maps have 16).
_MIN_LANE_ROWS = 8


def _lanes(x3: np.ndarray) -> int:
    """Lane width for a channels-first ``(sample, positions, channel)`` view whose
    positions are contiguous within each channel, or 0 where the lanes do not apply."""
    n, positions, channels = x3.shape
    item = x3.itemsize
    contiguous_maps = (
        x3.strides[1] == item
        and (channels == 1 or x3.strides[2] == positions * item)
        and (n == 1 or x3.strides[0] == positions * channels * item)
    )
    if not contiguous_maps or channels > _FEW_CHANNELS:
        return 0
    return next(
        (w for w in _LANE_WIDTHS if positions % w == 0 and positions // w >= _MIN_LANE_ROWS), 0
    )


def reduce_block(
    x3: np.ndarray, scale: np.float32, offset: np.float32, bounds: np.ndarray
) -> BlockReductions | None:
    """Per ``(sample, channel)`` finite count, sum, sum of squares, min, max and zeros, per
    channel non-finite count, and histogram slot counts — or ``None`` when the kernel does
    not apply (no Numba, turned off, or not float32 values).

    Parameters
    ----------
    x3 : ndarray, shape (sample, positions, channel)
    scale, offset, bounds
        The bin rule of :func:`tensortap.core.stats.histogram_params` and ``slot_bounds``.
    """
    kernel = _compiled() if x3.dtype == np.float32 and x3.ndim == 3 else None
    if kernel is None or len(bounds) >= 1 << 24:  # slot numbers must stay below the flag
        return None
    slots = len(bounds) - 1
    n, positions, channels = x3.shape
    lanes = _lanes(x3)
    args = (x3, np.float32(scale), np.float32(offset), np.asarray(bounds, np.float32), slots)
    padded = np.append(args[3], np.float32(np.inf))
    margin = guess_margin(args[1], args[2], args[3])
    # the exact slot of 0.0 (and -0.0): bounds[k] <= 0 < bounds[k + 1]
    zero_slot = np.int32(np.searchsorted(args[3], np.float32(0), side="right") - 1)
    if lanes:
        # Channels-first layers (PyTorch's NCHW) with few channels: each (sample, channel)
        # map is contiguous, so it is cut into rows of ``lanes`` positions and reduced as
        # ``lanes`` pseudo-channels of one pseudo-sample; the lanes are then reduced here.
        # The kernel's loops then run over ``lanes`` values instead of a handful of
        # channels, without a transposing copy (TinyResNet's 8-channel maps: 1.1-1.2x
        # faster).  Counts, extremes, zeros and slots are the same; only the order of the
        # float64 sums differs.
        rows = np.moveaxis(x3, 2, 1).reshape(n * channels, positions // lanes, lanes)
        parts = _compiled_finite()(rows, *args[1:3], padded, slots, margin, zero_slot)
        sums, squares = (p.sum(axis=1).reshape(n, channels) for p in parts[:2])
        low, high = (parts[i].reshape(n, channels, lanes) for i in (2, 3))
        low, high = low.min(axis=2), high.max(axis=2)
        zeros32 = parts[4].sum(axis=1, dtype=np.int64).reshape(n, channels)
        slot_counts, bad = parts[5], parts[6]
    else:
        # Channels-last data, or a channels-first view that cannot be cut into lanes: a
        # strided view would be read out of order, so it is made contiguous first (it
        # costs less than it saves); the order of reduction is the same.
        args = (np.ascontiguousarray(x3), *args[1:])
        sums, squares, low, high, zeros32, slot_counts, bad = _compiled_finite()(
            *args[:3], padded, slots, margin, zero_slot
        )
    if bad == 0:
        finite = np.full(sums.shape, x3.shape[1], np.int64)
        zeros = zeros32.astype(np.int64)
        counts = slot_counts[:slots]
    else:
        finite, sums, squares, low, high, zeros, counts = kernel(*args)
    nonfinite = (x3.shape[1] - finite).sum(axis=0)
    return finite, sums, squares, low, high, zeros, nonfinite, counts
