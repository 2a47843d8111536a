"""A training step's statistics of one small layer in one compiled call (issue 14).

A training run's probe is small: the digits CNN's layers hold 0.6-32 K values.  There the
cost of :func:`tensortap.core.step_stats.step_stats` is not the reduction but the ~25 NumPy
calls around it — the finite range for the step's edges, the edges, the bin rule, the
block kernel's wrapper and the finishing of moments and histogram: ~170 µs a layer,
~1.4 ms a step of the digits CNN's eight layers, once per captured step in the training
thread.  Here the range is NumPy's ``min`` and ``max`` (which NaN and ±inf reach), and
:func:`_step_finite` does the rest in one call, for the common case of float32 values
without NaN or infinity, with the very rules of the general path:

- edges: ``step_edges`` (``np.linspace``'s ``i * step + start``, the last edge exact);
- bounds: ``slot_bounds`` (each edge rounded up to float32);
- slots: ``histogram_params``' float32 guess, corrected against the bounds;
- moments and histogram laid out as ``stats._finish`` lays them out.

Counts, extremes, zeros, slots and edges are therefore exactly those of
``block_stats(x3, step_edges(x3))``; sums are float64 in the same order.  Anything else
(NaN or infinity, another dtype, a large layer, no Numba) returns ``None`` and takes the
general path, whose vectorised block kernel is faster on large layers.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from tensortap.core import _stats_kernel

__all__ = ["SMALL_VALUES", "step_finite"]

#: The block kernel (``_stats_kernel._reduce_finite`` compiled), bound by :func:`_compiled`.
_reduce_finite_jit: Any = None
#: Layers of at most this many values take the one-call kernel: below it the calls around
#: the block kernel cost more than the reduction (a 1 MiB layer reduces in ~0.4 ms).
SMALL_VALUES = 1 << 18


def _step_finite(x3: Any, low: float, high: float, bins: int) -> Any:  # pragma: no cover - compiled
    n, positions, channels = x3.shape
    # step_edges: bins uniform bins over [low, high], the maximum inside the last one
    span = high - low
    if span <= 0:
        half = max(abs(high), 1.0) / 2
        start, stop = low - half, high + half
    else:
        start, stop = low, high + span / bins / 1024
    step = (stop - start) / bins
    if step == 0:
        return None
    edges = np.empty(bins + 1, np.float64)
    for k in range(bins + 1):
        edges[k] = k * step + start
    edges[bins] = stop
    # slot_bounds (with the block kernel's extra +inf) and histogram_params
    slots = bins + 2
    bounds = np.empty(slots + 2, np.float32)
    bounds[0] = -np.inf
    bounds[slots] = bounds[slots + 1] = np.inf
    for k in range(bins + 1):
        up = np.float32(edges[k])
        if np.float64(up) < edges[k]:
            up = np.nextafter(up, np.float32(np.inf))
        bounds[k + 1] = up
    scale = np.float32(bins / (edges[bins] - edges[0]))
    offset = np.float32(1.0 - edges[0] * np.float64(scale))
    # _stats_kernel.guess_margin, and the slot of 0.0: bounds[k] <= 0 < bounds[k + 1]
    edge = max(abs(np.float64(bounds[1])), abs(np.float64(bounds[bins + 1])))
    reach = (edge + (np.float64(bounds[bins + 1]) - np.float64(bounds[1])) / bins) * scale
    margin = np.float32(min(2.0**-21 * (2 * slots + abs(np.float64(offset)) + 3 * reach), 1.0))
    zero_slot = np.int32(0)
    for k in range(slots + 1):
        if bounds[k] <= 0:
            zero_slot = np.int32(k)
    sums, squares, lows, highs, zeros, counts, bad = _reduce_finite_jit(
        x3, scale, offset, bounds, slots, margin, zero_slot
    )
    if bad:
        return None
    # stats._finish
    count = n * positions
    moments = np.empty((7, channels), np.float64)
    sample_mean = np.empty((n, channels), np.float32)
    all_zeros = 0
    for c in range(channels):
        total = 0.0
        total_squares = 0.0
        minimum = np.float32(np.inf)
        maximum = np.float32(-np.inf)
        zero_count = 0
        for i in range(n):
            total += sums[i, c]
            total_squares += squares[i, c]
            minimum = min(minimum, lows[i, c])
            maximum = max(maximum, highs[i, c])
            zero_count += zeros[i, c]
            sample_mean[i, c] = np.float32(sums[i, c] / positions)
        mean = total / count
        moments[0, c] = count
        moments[1, c] = mean
        moments[2, c] = max(total_squares - count * mean * mean, 0.0)
        moments[3, c] = minimum
        moments[4, c] = maximum
        moments[5, c] = zero_count
        moments[6, c] = 0.0
        all_zeros += zero_count
    histogram = np.empty(bins + 3, np.int64)
    histogram[:bins] = counts[1 : bins + 1]
    histogram[bins] = counts[0]
    histogram[bins + 1] = counts[bins + 1]
    histogram[bins + 2] = all_zeros
    return moments, histogram, sample_mean, highs, edges


@functools.cache
def _compiled() -> Any:
    """:func:`_step_finite` compiled by Numba (imported on first use), or ``None``."""
    if _stats_kernel._compiled() is None:  # no Numba, or TENSORTAP_NUMBA=0
        return None
    from numba import njit

    global _reduce_finite_jit  # the block kernel, called from the compiled code
    _reduce_finite_jit = _stats_kernel._compiled_finite()
    return njit(nogil=True, cache=True)(_step_finite)


def step_finite(
    x3: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(moments, histogram, sample_mean, sample_max, edges)`` of a small float32 layer
    without NaN or infinity, or ``None`` where the general path must run.

    Parameters
    ----------
    x3 : ndarray, shape (sample, positions, channel)
        The layer's values (a channels-first view is copied channels-last for the block
        kernel, as the general path does).
    bins : int
        Number of histogram bins.
    """
    if x3.dtype != np.float32 or x3.ndim != 3 or not 0 < x3.size <= SMALL_VALUES:
        return None
    kernel = _compiled()
    if kernel is None:
        return None
    low, high = float(x3.min()), float(x3.max())  # NaN and ±inf reach one of them
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    # The block kernel reads each position's channels as one contiguous row.
    return kernel(np.ascontiguousarray(x3), low, high, bins)  # type: ignore[no-any-return]
