"""One pass over a block for every streamed statistic, compiled with Numba when installed.

The NumPy path in :mod:`tensortap.core.stats` needs a dozen passes over each block (max,
min, sums, squares, zeros, and the histogram's guess, clip, cast, two corrections and
bincount); on W1 (855 MB a batch) that cost more CPU than the model itself.  This kernel
reads each value once and keeps its accumulators in registers: about 1 GB/s on one core
here, 3.7× the NumPy path (benchmarks/RESULTS.md).  It releases the GIL, so the writer
threads reduce several layers at once; it is single-threaded on purpose (a parallel Numba
kernel called from several threads at once is not safe with every threading layer).

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


@functools.cache
def _compiled() -> Any:
    """The kernel compiled by Numba (imported on first use: it costs ~0.5 s), or ``None``."""
    if not _ENABLED:
        return None
    try:
        from numba import njit
    except ImportError:  # numba is a dependency, but stay usable without it
        return None
    return njit(nogil=True, cache=True)(_reduce_py)


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
    if kernel is None:
        return None
    slots = len(bounds) - 1
    finite, sums, squares, low, high, zeros, counts = kernel(
        x3, np.float32(scale), np.float32(offset), np.asarray(bounds, np.float32), slots
    )
    nonfinite = (x3.shape[1] - finite).sum(axis=0)
    return finite, sums, squares, low, high, zeros, nonfinite, counts
