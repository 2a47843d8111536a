"""Streaming statistics against NumPy on the full-precision values."""

from __future__ import annotations

import numpy as np
import pytest

from tensortap.core.stats import (
    block_stats,
    choose_edges,
    edges_of_ranges,
    reduce_blocks,
    to_channels_last,
    value_range,
)


def _reduce(blocks: list[np.ndarray], edges: np.ndarray):
    parts = [block_stats(b, edges) for b in blocks]
    return parts, reduce_blocks(
        np.stack([p.moments for p in parts]), np.stack([p.histogram for p in parts])
    )


def test_moments_match_numpy_over_blocks() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(70, 6, 6, 5)) * (rng.random((70, 6, 6, 5)) > 0.3)
    data = data.astype(np.float32)
    x3 = to_channels_last(data, ("height", "width", "channel"), "channel")
    edges = choose_edges(x3[:32])
    _, r = _reduce([x3[:32], x3[32:64], x3[64:]], edges)
    flat = data.reshape(-1, 5).astype(np.float64)
    np.testing.assert_array_equal(r.count, np.full(5, 70 * 36))
    np.testing.assert_allclose(r.mean, flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(r.std, flat.std(0), rtol=1e-9)
    np.testing.assert_array_equal(r.min, flat.min(0))
    np.testing.assert_array_equal(r.max, flat.max(0))
    np.testing.assert_allclose(r.zero_fraction, (flat == 0).mean(0))
    np.testing.assert_array_equal(r.nonfinite, 0)


def test_histogram_counts_are_exact() -> None:
    rng = np.random.default_rng(1)
    first = rng.normal(size=(16, 10, 3)).astype(np.float32)
    later = (rng.normal(size=(16, 10, 3)) * 4).astype(np.float32)  # spills outside the edges
    later[0, 0, 0] = 0.0
    edges = choose_edges(first, bins=64)
    _, r = _reduce([first, later], edges)
    values = np.concatenate([first.ravel(), later.ravel()]).astype(np.float64)
    assert r.histogram.sum() + r.underflow + r.overflow == values.size
    assert r.underflow == int((values < edges[0]).sum())
    assert r.overflow == int((values >= edges[-1]).sum())
    assert r.zeros == int((values == 0).sum())
    reference, _ = np.histogram(values, bins=edges)
    # The guessed slot is corrected against the edges: exactly np.histogram's half-open bins
    # (the first block's min and max lie exactly on edges here).
    np.testing.assert_array_equal(r.histogram, reference)


def test_histogram_exact_on_values_away_from_edges() -> None:
    values = np.repeat(np.arange(0.25, 8, 0.5, dtype=np.float32), 3).reshape(1, -1, 1)
    edges = np.linspace(0.0, 8.0, 17)
    part = block_stats(values, edges)
    np.testing.assert_array_equal(part.histogram[:16], np.full(16, 3))


def test_nonfinite_values_are_counted_and_excluded() -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    data[0, 1, 2] = np.nan
    data[1, 3, 0] = np.inf
    edges = choose_edges(data)
    assert np.isfinite(edges).all()
    _, r = _reduce([data], edges)
    np.testing.assert_array_equal(r.nonfinite, [1, 0, 1])
    np.testing.assert_array_equal(r.count, [7, 8, 7])
    for c in range(3):
        column = data[..., c].ravel()
        finite = column[np.isfinite(column)].astype(np.float64)
        assert r.mean[c] == pytest.approx(finite.mean())
        assert r.std[c] == pytest.approx(finite.std())
        assert r.max[c] == finite.max()
    assert r.histogram.sum() + r.underflow + r.overflow == 22


def test_per_sample_mean_and_max() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(4, 3, 5, 2)).astype(np.float32)  # channels-first (torch)
    x3 = to_channels_last(data, ("channel", "height", "width"), "channel")
    part = block_stats(x3, choose_edges(x3))
    np.testing.assert_allclose(
        part.sample_mean, data.astype(np.float64).mean(axis=(2, 3)), atol=1e-7
    )
    np.testing.assert_array_equal(part.sample_max, data.max(axis=(2, 3)))


def test_no_channel_dim_is_one_channel() -> None:
    data = np.arange(6, dtype=np.float32).reshape(6)
    x3 = to_channels_last(data, (), None)
    assert x3.shape == (6, 1, 1)
    _, r = _reduce([x3], choose_edges(x3))
    assert r.count.tolist() == [6]


def test_empty_reduction_is_nan_not_error() -> None:
    r = reduce_blocks(np.zeros((0, 7, 3)), np.zeros((0, 10), np.int64))
    assert r.count.tolist() == [0, 0, 0] and np.isnan(r.mean).all()


def test_compiled_kernel_equals_the_numpy_path() -> None:
    """The one-pass kernel (core/_stats_kernel.py) against the NumPy reference path:
    counts, extremes, zeros and histogram slots exactly, sums to float64 rounding."""
    from tensortap.core import _stats_kernel

    if _stats_kernel._compiled() is None:
        pytest.skip("numba is not installed or TENSORTAP_NUMBA=0")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 50, 7)).astype(np.float32)
    edges = choose_edges(x)
    x[0, :5, 0] = edges[3]  # exactly on an edge
    x[1, :5, 1] = np.nextafter(np.float32(edges[5]), np.float32(-np.inf))  # just below one
    x[2, :3, 2], x[2, 3, 2] = 0.0, -0.0
    x[5, :4, 6], x[5, 4:8, 6] = 1e30, -1e30  # under- and overflow
    finite = x.copy()  # the vectorised kernel's case
    x[3, :3, 3] = [np.nan, np.inf, -np.inf]  # the exact kernel's case
    x[4, :, 4] = np.nan  # a sample whose channel has no finite value
    infinite = x.copy()
    infinite[1, 7, 2] = np.inf  # alone: the last slot's guess plus one
    strided = np.ascontiguousarray(x.transpose(0, 2, 1)).transpose(0, 2, 1)
    for values in (finite, x, infinite, strided):
        fast, reference = block_stats(values, edges), block_stats(values, edges, kernel=False)
        np.testing.assert_array_equal(fast.histogram, reference.histogram)
        np.testing.assert_array_equal(fast.sample_max, reference.sample_max)
        exact = [0, 3, 4, 5, 6]  # count, min, max, zeros, non-finite
        np.testing.assert_array_equal(fast.moments[exact], reference.moments[exact])
        # channel 6 sums ±1e30: float64 cancellation depends on the order of the sum
        np.testing.assert_allclose(fast.moments[1:3, :6], reference.moments[1:3, :6], rtol=1e-12)
        np.testing.assert_allclose(fast.sample_mean[:, :6], reference.sample_mean[:, :6], rtol=1e-6)


@pytest.mark.parametrize(
    ("low", "high", "bins"),
    [(-3.0, 3.0, 64), (0.0, 6.0, 64), (1000.0, 1000.5, 64), (-1e-6, 2e-6, 7), (-5e4, 1e5, 200)],
)
def test_compiled_histogram_is_exact_around_every_edge(low: float, high: float, bins: int) -> None:
    """Values on, just below and just above each float32 slot bound (where the kernel's
    float32 guess can be off by one), for ranges near and far from zero."""
    from tensortap.core import _stats_kernel
    from tensortap.core.stats import slot_bounds

    if _stats_kernel._compiled() is None:
        pytest.skip("numba is not installed or TENSORTAP_NUMBA=0")
    edges = np.linspace(low, high, bins + 1)
    bounds = slot_bounds(edges)[1:-1]
    around = [bounds]
    for direction in (-np.inf, np.inf):
        step = bounds
        for _ in range(3):  # 1, 2 and 3 float32 steps away
            step = np.nextafter(step, np.float32(direction))
            around.append(step)
    rng = np.random.default_rng(bins)
    inside = rng.uniform(low, high, 4000).astype(np.float32)
    values = np.concatenate([*around, inside]).astype(np.float32)
    values = rng.permutation(values)[: values.size // 8 * 8].reshape(2, -1, 4)
    fast, reference = block_stats(values, edges), block_stats(values, edges, kernel=False)
    np.testing.assert_array_equal(fast.histogram, reference.histogram)
    wide = values.astype(np.float64).ravel()
    counts, _ = np.histogram(wide[wide < edges[-1]], bins=edges)  # half-open like ours
    np.testing.assert_array_equal(fast.histogram[:bins], counts)


def test_channels_first_maps_reduced_in_lanes_equal_the_numpy_path() -> None:
    """NCHW maps (PyTorch) viewed channels-last are reduced in lanes of contiguous
    positions (core/_stats_kernel.py): the same statistics as the NumPy path, with
    edges, zeros, out-of-range and non-finite values, and one-channel maps."""
    from tensortap.core import _stats_kernel

    if _stats_kernel._compiled() is None:
        pytest.skip("numba is not installed or TENSORTAP_NUMBA=0")
    rng = np.random.default_rng(2)
    nchw = rng.standard_normal((5, 6, 16, 32)).astype(np.float32)  # 8 rows of 64 lanes
    edges = choose_edges(nchw)
    nchw[0, 1, 0, :4] = edges[7]
    nchw[1, 2, 3, :4] = np.nextafter(np.float32(edges[9]), np.float32(-np.inf))
    nchw[2, 3, 1, :6] = 0.0
    nchw[3, 4, 2, :3] = [1e30, -1e30, 1e30]
    with_nan = nchw.copy()
    with_nan[4, 5, 0, :2] = [np.nan, np.inf]
    relu = np.maximum(nchw[:, :4], 0)  # zero is the lowest edge, half the values zeros
    relu[0, 0, 0, :3] = -0.0
    cases = [
        (nchw, 6, edges),
        (with_nan, 6, edges),
        (np.ascontiguousarray(nchw[:, :1]), 1, edges),
        (relu, 4, choose_edges(relu)),
    ]
    for values, channels, edges in cases:
        assert (edges[0] == 0) == (values is relu)
        x3 = to_channels_last(values, ("channel", "height", "width"), "channel")
        assert _stats_kernel._lanes(x3) > 0 and x3.shape[2] == channels
        fast, reference = block_stats(x3, edges), block_stats(x3, edges, kernel=False)
        np.testing.assert_array_equal(fast.histogram, reference.histogram)
        np.testing.assert_array_equal(fast.sample_max, reference.sample_max)
        exact = [0, 3, 4, 5, 6]
        np.testing.assert_array_equal(fast.moments[exact], reference.moments[exact])
        finite = [c for c in range(channels) if c != 4]  # channel 4 sums ±1e30
        np.testing.assert_allclose(
            fast.moments[1:3, finite], reference.moments[1:3, finite], rtol=1e-12
        )
        np.testing.assert_allclose(
            fast.sample_mean[:, finite], reference.sample_mean[:, finite], rtol=1e-6
        )
    # Maps with fewer rows of lanes (the digits CNN's 8x8) take the contiguous path.
    maps = np.ascontiguousarray(nchw[:, :, :8, :8])
    small = to_channels_last(maps, ("channel", "height", "width"), "channel")
    assert _stats_kernel._lanes(small) == 0


def test_value_range_is_numpys_finite_min_and_max() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(size=(6, 5, 3)).astype(np.float32)
    assert value_range(data) == (float(data.min()), float(data.max()))
    data[0, 0, 0], data[1, 2, 1], data[5, 4, 2] = np.nan, np.inf, -np.inf
    finite = data[np.isfinite(data)]
    assert value_range(data) == (float(finite.min()), float(finite.max()))
    assert value_range(np.full(4, np.nan, np.float32)) is None
    assert value_range(np.zeros((0, 3), np.float32)) is None


def test_edges_of_the_parts_ranges_equal_the_edges_of_their_join() -> None:
    rng = np.random.default_rng(5)
    parts = [rng.normal(i, 1 + i, size=(4, 7, 2)).astype(np.float32) for i in range(3)]
    parts[0][0, 0, 0] = np.nan  # in the first part, as a first batch's NaN
    parts.append(np.full((2, 7, 2), np.inf, np.float32))  # a part without a finite value
    joined = np.concatenate(parts)
    finite = joined[np.isfinite(joined)].astype(np.float64)
    span = finite.max() - finite.min()
    reference = np.linspace(finite.min() - span / 2, finite.max() + span / 2, 129)
    np.testing.assert_array_equal(edges_of_ranges([value_range(p) for p in parts]), reference)
    np.testing.assert_array_equal(choose_edges(joined), reference)
