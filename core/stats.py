"""Streaming layer statistics: mergeable per-block partials and their reduction.

Every captured batch (a *block*: the samples of one chunk along the sample axis) yields a
:class:`BlockStats` computed from the full-precision activations, before any storage
``dtype`` narrowing.  Partials merge exactly (counts, min, max, histograms) or with Chan's
parallel variance formula (mean, standard deviation), so writers of disjoint sample ranges
(one thread, one Dask worker) each store their own partials and a reader reduces the
committed ones only (:func:`reduce_blocks`).

Histogram edges are fixed per layer from the first block (:func:`choose_edges`), so every
partial counts into the same bins; values outside them are counted in ``underflow`` and
``overflow`` and exact zeros in ``zeros``: ``histogram.sum() + underflow + overflow`` is
exactly the number of finite values.

References: Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
computing sample variances" (1979), for the merge of means and sums of squares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tensortap.core._stats_kernel import reduce_block

__all__ = [
    "DEFAULT_BINS",
    "MOMENTS",
    "BlockStats",
    "ReducedStats",
    "PARTIAL_KEYS",
    "block_stats",
    "block_stats_from_partials",
    "choose_edges",
    "edges_of_ranges",
    "histogram_params",
    "slot_bounds",
    "merge_blocks",
    "merge_stats",
    "reduce_blocks",
    "to_channels_last",
    "value_range",
]

#: Number of histogram bins per layer.
DEFAULT_BINS = 128
#: Rows of the stored ``block_moments`` array, in order.
MOMENTS = ("count", "mean", "m2", "min", "max", "zeros", "nonfinite")
#: Extra slots after the bins in the stored ``block_histogram`` array, in order.
HISTOGRAM_EXTRAS = ("underflow", "overflow", "zeros")
#: Keys of one layer's per-batch partial statistics computed by a backend
#: (``BatchResult.partial_stats``, see :func:`block_stats_from_partials`).
PARTIAL_KEYS = ("count", "sum", "sumsq", "min", "max", "zeros", "histogram")


@dataclass(frozen=True, slots=True)
class BlockStats:
    """Statistics of one block of samples of one layer.

    Attributes
    ----------
    moments : ndarray, shape (7, channel), float64
        Rows as in :data:`MOMENTS`: finite-value count, mean, sum of squared deviations
        from the mean (``m2``), min, max, exact-zero count, non-finite count.
    histogram : ndarray, shape (bins + 3,), int64
        Counts per bin, then underflow, overflow and exact zeros.
    sample_mean, sample_max : ndarray, shape (sample, channel), float32
        Mean and max of each channel in each sample (over finite values).
    """

    moments: np.ndarray
    histogram: np.ndarray
    sample_mean: np.ndarray
    sample_max: np.ndarray


@dataclass(frozen=True, slots=True)
class ReducedStats:
    """Statistics of a layer over many blocks (see :func:`reduce_blocks`)."""

    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    zero_fraction: np.ndarray
    nonfinite: np.ndarray
    histogram: np.ndarray
    underflow: int
    overflow: int
    zeros: int


def to_channels_last(values: np.ndarray, dims: Sequence[str], channel: str | None) -> np.ndarray:
    """View ``values`` (sample first, then ``dims``) as ``(sample, positions, channel)``.

    A layer without a channel-like dimension becomes a single channel.  Copies only when
    the channel axis is not last (channels-first frameworks).
    """
    n = values.shape[0]
    if channel is None:
        return values.reshape(n, -1, 1)
    axis = 1 + list(dims).index(channel)
    if axis != values.ndim - 1:
        values = np.moveaxis(values, axis, -1)
    return values.reshape(n, -1, values.shape[-1])


def value_range(values: np.ndarray) -> tuple[float, float] | None:
    """The finite minimum and maximum of ``values``, ``None`` when none is finite.

    The common case, every value finite, takes one ``min`` and one ``max`` reduction and no
    temporary; NaN or ±inf reach one of them, and only then are the finite values picked
    out.  The pipeline calls this on each batch of a run's first block as it arrives (the
    batch is still in cache), so the edges need no pass over the block at its end.
    """
    if not values.size:
        return None
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)):  # NaN and ±inf reach min or max
        finite = values[np.isfinite(values)]
        if not finite.size:
            return None
        low, high = float(finite.min()), float(finite.max())
    return low, high


def edges_of_ranges(
    ranges: Sequence[tuple[float, float] | None], bins: int = DEFAULT_BINS
) -> np.ndarray:
    """:func:`choose_edges` of values whose parts have these :func:`value_range` results.

    The edges depend only on the finite minimum and maximum, so the parts' ranges decide
    them (``None``: a part without a finite value).
    """
    ends = [end for r in ranges if r is not None for end in r]
    return choose_edges(np.asarray(ends, np.float64), bins)


def choose_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Fixed histogram edges for a layer, decided from its first block.

    The finite range of the block is widened by half its span on each side, so later
    blocks mostly fall inside; a range that starts at zero (ReLU outputs) keeps zero as its
    lower edge.  Returns ``bins + 1`` increasing float64 edges, uniform as
    ``np.linspace`` makes them (the fast path of ``np.histogram``).
    """
    found = value_range(values)
    low, high = (-1.0, 1.0) if found is None else found
    span = high - low
    if span <= 0:
        span = max(abs(high), 1.0)
    low = 0.0 if low == 0.0 else low - span / 2
    high = high + span / 2
    return np.linspace(low, high, bins + 1)


def _sample_moments(x3: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-sample finite count, sum, sum of squares, min, max, zeros, non-finite for
    ``x3`` of shape ``(sample, positions, channel)`` with only finite values assumed."""
    n, positions, channels = x3.shape
    sums = np.empty((n, channels), np.float64)
    squares = np.empty((n, channels), np.float64)
    zeros = np.empty((n, channels), np.int64)
    # One sample at a time keeps the temporaries small (a few MB, not a whole batch).
    for i in range(n):
        xi = x3[i]
        sums[i] = xi.sum(axis=0, dtype=np.float64)
        squares[i] = np.einsum("pc,pc->c", xi, xi, dtype=np.float64)
        zeros[i] = (xi == 0).sum(axis=0)  # 1.5x faster than count_nonzero(axis=0) here
    return sums, squares, zeros


def histogram_params(edges: np.ndarray) -> tuple[np.float32, np.float32]:
    """``(scale, offset)`` of the bin guess shared by every statistics path.

    A finite value ``x`` belongs to slot ``k`` when ``edges[k-1] <= x < edges[k]`` (slot 0
    is underflow, slots ``1..bins`` the half-open bins, ``bins + 1`` overflow: a value
    ``>= edges[-1]``) — ``np.histogram``'s rule except its closed last bin.  The slot is
    found as a float32 guess ``clip(trunc(x * scale + offset), 0, bins + 1)``, off by at
    most one near an edge (rounding, fused multiply-add or not), then corrected by exact
    comparisons with the guessed slot's bounds (:func:`slot_bounds`).  So NumPy and a
    backend's compiled step (``BatchResult.partial_stats``) count every value alike.
    """
    bins = len(edges) - 1
    low, high = float(edges[0]), float(edges[-1])
    scale = np.float32(bins / (high - low))
    return scale, np.float32(1.0 - low * float(scale))


def slot_bounds(edges: np.ndarray) -> np.ndarray:
    """``[-inf, *edges, +inf]`` as float32, each edge rounded *up* to float32.

    For a float32 ``x`` and a float64 edge ``e``, ``x < e`` exactly when ``x < up(e)``, so
    comparing in float32 against these bounds decides slot ``k`` (``bounds[k] <= x <
    bounds[k+1]``) exactly as float64 comparisons with the stored edges would.
    """
    wide = np.asarray(edges, np.float64)
    up = wide.astype(np.float32)
    low = up.astype(np.float64) < wide
    up[low] = np.nextafter(up[low], np.float32(np.inf))
    return np.concatenate([[-np.inf], up, [np.inf]]).astype(np.float32)


def _histogram(x3: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of finite ``x3`` in ``[underflow, bin 0, ..., bin n-1, overflow]``.

    Bins are half-open ``[e_k, e_k+1)`` and a value ``>= edges[-1]`` is overflow, exactly
    (:func:`histogram_params`: a float32 multiply-add guess corrected against the edges;
    faster than ``np.histogram``).  Values wider than float32 are compared as float32.
    """
    bins = len(edges) - 1
    scale, offset = histogram_params(edges)
    bounds = slot_bounds(edges)
    counts = np.zeros(bins + 2, np.int64)
    for sample in x3:  # one sample at a time: small temporaries
        x = np.asarray(sample, np.float32).ravel()
        t = np.multiply(x, scale, dtype=np.float32)
        t += offset
        np.clip(t, 0, bins + 1, out=t)
        slot = t.astype(np.intp)
        slot -= x < bounds[slot]
        slot += x >= bounds[slot + 1]
        counts += np.bincount(slot, minlength=bins + 2)
    return counts


def block_stats(x3: np.ndarray, edges: np.ndarray, *, kernel: bool = True) -> BlockStats:
    """Statistics of one block.

    Parameters
    ----------
    x3 : ndarray, shape (sample, positions, channel)
        Full-precision values, e.g. from :func:`to_channels_last`.
    edges : ndarray
        Fixed histogram edges of the layer (:func:`choose_edges`).
    kernel : bool
        Use the one-pass compiled kernel when it applies (:mod:`._stats_kernel`); ``False``
        forces the NumPy path (the reference it is tested against).

    Returns
    -------
    BlockStats
    """
    bins = len(edges) - 1
    scale, offset = histogram_params(edges)
    fast = reduce_block(x3, scale, offset, slot_bounds(edges)) if kernel else None
    if fast is not None:
        return _finish(*fast, bins)
    n, positions, channels = x3.shape
    sample_max = x3.max(axis=1)
    sample_min = x3.min(axis=1)
    finite_all = bool(np.isfinite(sample_max).all() and np.isfinite(sample_min).all())
    if finite_all:
        sums, squares, zeros = _sample_moments(x3)
        finite_counts = np.full((n, channels), positions, np.int64)
        nonfinite = np.zeros(channels, np.int64)
        values = x3
    else:
        # Rare path: mask non-finite values out (NaN and inf propagate through the sums).
        mask = np.isfinite(x3)
        clean = np.where(mask, x3, np.zeros((), x3.dtype))
        sums, squares, zeros = _sample_moments(clean)
        finite_counts = mask.sum(axis=1, dtype=np.int64)
        zeros = zeros - (positions - finite_counts)  # masked values were counted as zeros
        nonfinite = (positions - finite_counts).sum(axis=0)
        with np.errstate(invalid="ignore"):
            sample_max = np.where(mask, x3, -np.inf).max(axis=1).astype(x3.dtype)
            sample_min = np.where(mask, x3, np.inf).min(axis=1).astype(x3.dtype)
        values = x3[mask]
    counts = _histogram(values if finite_all else values.reshape(1, -1, 1), edges)
    return _finish(
        finite_counts, sums, squares, sample_min, sample_max, zeros, nonfinite, counts, bins
    )


def _finish(
    finite_counts: np.ndarray,
    sums: np.ndarray,
    squares: np.ndarray,
    sample_min: np.ndarray,
    sample_max: np.ndarray,
    zeros: np.ndarray,
    nonfinite: np.ndarray,
    counts: np.ndarray,
    bins: int,
) -> BlockStats:
    """One :class:`BlockStats` from per ``(sample, channel)`` reductions and slot counts
    (``[underflow, bins..., overflow]``); shared by the NumPy and the partials paths."""
    count = finite_counts.sum(axis=0)
    total = sums.sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        # Sum of squares about the block mean, from float64 accumulators.
        m2 = np.maximum(squares.sum(axis=0, dtype=np.float64) - count * mean * mean, 0.0)
        sample_mean = (sums / np.maximum(finite_counts, 1)).astype(np.float32)
    moments = np.stack(
        [
            count.astype(np.float64),
            mean,
            m2,
            np.where(count > 0, sample_min.min(axis=0), np.nan),
            np.where(count > 0, sample_max.max(axis=0), np.nan),
            zeros.sum(axis=0).astype(np.float64),
            nonfinite.astype(np.float64),
        ]
    )
    histogram = np.empty(bins + 3, np.int64)
    histogram[:bins] = counts[1:-1]
    histogram[bins] = counts[0]
    histogram[bins + 1] = counts[-1]
    histogram[bins + 2] = int(zeros.sum())
    return BlockStats(moments, histogram, sample_mean, np.asarray(sample_max, np.float32))


def block_stats_from_partials(
    partials: dict[str, np.ndarray], edges: np.ndarray, shape: tuple[int, int, int]
) -> BlockStats:
    """Statistics of one block from a backend's per-batch reductions.

    Parameters
    ----------
    partials : dict of str to ndarray
        Keys as in :data:`PARTIAL_KEYS`, reductions over the positions of the
        full-precision values viewed as ``(sample, positions, channel)``
        (:func:`to_channels_last`), non-finite values left out: ``count`` (finite values),
        ``sum``, ``sumsq`` (any float dtype; summed over samples here in float64), ``min``,
        ``max`` (``+inf``/``-inf`` where a sample's channel has no finite value), ``zeros``
        (exact zeros) — each of shape ``(sample, channel)`` — and ``histogram`` of shape
        ``(bins + 2,)``: underflow, the bins, overflow, by the rule of
        :func:`histogram_params`.
    edges : ndarray
        The layer's histogram edges (the ones the backend was given).
    shape : tuple of int
        ``(sample, positions, channel)`` of the values; checked against the partials.

    Returns
    -------
    BlockStats
        Counts, min, max, zeros, non-finite, histogram and ``sample_max`` equal to
        :func:`block_stats`'s exactly; means and ``m2`` to float tolerance: with float32
        per-sample sums the relative error is about ``1e-7 * sqrt(positions)`` on sums and
        means, and that times ``1 + mean**2 / variance`` on ``m2`` (the cancellation in
        ``sumsq - n * mean**2``).

    Raises
    ------
    ValueError
        When a partial is missing or has the wrong shape.
    """
    n_samples, positions, channels = shape
    bins = len(edges) - 1
    missing = [k for k in PARTIAL_KEYS if k not in partials]
    if missing:
        raise ValueError(f"partial statistics lack {missing}")
    arrays = {k: np.asarray(partials[k]) for k in PARTIAL_KEYS}
    for key in PARTIAL_KEYS[:-1]:
        if arrays[key].shape != (n_samples, channels):
            raise ValueError(
                f"partial {key!r} has shape {arrays[key].shape}, expected {(n_samples, channels)}"
            )
    if arrays["histogram"].shape != (bins + 2,):
        raise ValueError(
            f"partial 'histogram' has shape {arrays['histogram'].shape}, expected {(bins + 2,)}"
        )
    finite_counts = arrays["count"].astype(np.int64)
    return _finish(
        finite_counts,
        arrays["sum"].astype(np.float64),
        arrays["sumsq"].astype(np.float64),
        arrays["min"],
        arrays["max"],
        arrays["zeros"].astype(np.int64),
        (positions - finite_counts).sum(axis=0),
        arrays["histogram"].astype(np.int64),
        bins,
    )


def merge_stats(parts: Sequence[BlockStats]) -> BlockStats:
    """One block's statistics from those of its consecutive batches (in sample order)."""
    if len(parts) == 1:
        return parts[0]
    moments, histogram = merge_blocks(
        np.stack([p.moments for p in parts]), np.stack([p.histogram for p in parts])
    )
    return BlockStats(
        moments,
        histogram,
        np.concatenate([p.sample_mean for p in parts]),
        np.concatenate([p.sample_max for p in parts]),
    )


def merge_blocks(moments: np.ndarray, histograms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge block partials into one partial of the same form.

    The result is itself a valid block partial (rows as in :data:`MOMENTS`), so a
    summary of many blocks (written when a run finishes) reduces like any block.

    Parameters
    ----------
    moments : ndarray, shape (block, 7, channel)
    histograms : ndarray, shape (block, bins + 3)

    Returns
    -------
    moments : ndarray, shape (7, channel), float64
    histogram : ndarray, shape (bins + 3,), int64
    """
    count_b, mean_b, m2_b, min_b, max_b, zeros_b, nonfinite_b = (
        moments[:, i] for i in range(len(MOMENTS))
    )
    count = count_b.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, (count_b * mean_b).sum(axis=0) / np.maximum(count, 1), 0.0)
        # Chan et al.: M2 = sum(M2_b) + sum(n_b * (mean_b - mean)^2)
        m2 = m2_b.sum(axis=0) + (count_b * (mean_b - mean) ** 2).sum(axis=0)
        has = count_b > 0
        # all-NaN columns (no finite value anywhere) stay NaN without a warning
        minimum = np.where(has, min_b, np.inf).min(axis=0)
        maximum = np.where(has, max_b, -np.inf).max(axis=0)
    minimum = np.where(count > 0, minimum, np.nan)
    maximum = np.where(count > 0, maximum, np.nan)
    merged = np.stack(
        [count, mean, m2, minimum, maximum, zeros_b.sum(axis=0), nonfinite_b.sum(axis=0)]
    ).astype(np.float64)
    return merged, np.asarray(histograms, np.int64).sum(axis=0)


def reduce_blocks(moments: np.ndarray, histograms: np.ndarray) -> ReducedStats:
    """Merge block partials into layer statistics.

    Parameters
    ----------
    moments : ndarray, shape (block, 7, channel)
        Stacked :attr:`BlockStats.moments` of the committed blocks (or one summary row
        from :func:`merge_blocks`).
    histograms : ndarray, shape (block, bins + 3)
        Stacked :attr:`BlockStats.histogram`.

    Returns
    -------
    ReducedStats
    """
    channels = moments.shape[-1]
    if moments.shape[0] == 0:
        nan = np.full(channels, np.nan)
        bins = histograms.shape[-1] - 3
        return ReducedStats(
            np.zeros(channels, np.int64),
            nan,
            nan,
            nan,
            nan,
            nan,
            np.zeros(channels, np.int64),
            np.zeros(bins, np.int64),
            0,
            0,
            0,
        )
    merged, hist = merge_blocks(moments, histograms)
    count, mean, m2, minimum, maximum, zeros, nonfinite = merged
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, mean, np.nan)
        std = np.sqrt(m2 / count)
        zero_fraction = zeros / (count + nonfinite)
    return ReducedStats(
        count=count.astype(np.int64),
        mean=mean,
        std=std,
        min=minimum,
        max=maximum,
        zero_fraction=zero_fraction,
        nonfinite=nonfinite.astype(np.int64),
        histogram=hist[:-3],
        underflow=int(hist[-3]),
        overflow=int(hist[-2]),
        zeros=int(hist[-1]),
    )
