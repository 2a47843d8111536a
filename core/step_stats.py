"""Statistics of one training step: each layer over its own histogram edges (issue 14).

Each step has its own edges (stored with it), so exploding activations never fall off a
range fixed at step 0; views draw each step's exact bins, never re-binned.
"""

from __future__ import annotations

import numpy as np

from tensortap.core._step_kernel import step_finite
from tensortap.core.stats import DEFAULT_BINS, BlockStats, block_stats, value_range

__all__ = ["step_edges", "step_stats"]


def step_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Histogram edges of one step: ``bins`` uniform bins over its own finite range.

    The last edge sits just above the maximum, so the maximum falls in the last bin.
    """
    found = value_range(values)
    if found is None:
        return np.linspace(-1.0, 1.0, bins + 1)
    low, high = found
    span = high - low
    if span <= 0:
        half = max(abs(high), 1.0) / 2
        return np.linspace(low - half, high + half, bins + 1)
    return np.linspace(low, high + span / bins / 1024, bins + 1)


def step_stats(x3: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[BlockStats, np.ndarray]:
    """``(statistics, edges)`` of one layer's values at one step.

    Equal to ``block_stats(x3, step_edges(x3, bins))`` and its edges; a small float32
    layer without NaN or infinity takes one compiled call (:mod:`._step_kernel`).

    Parameters
    ----------
    x3 : ndarray, shape (sample, positions, channel)
        The layer's values (:func:`~tensortap.core.stats.to_channels_last`).
    bins : int
        Number of histogram bins.
    """
    fast = step_finite(x3, bins)
    if fast is not None:
        moments, histogram, sample_mean, sample_max, edges = fast
        return BlockStats(moments, histogram, sample_mean, sample_max), edges
    edges = step_edges(x3, bins)
    with np.errstate(over="ignore"):  # edges near the float32 limit (exploding values)
        return block_stats(x3, edges), edges
