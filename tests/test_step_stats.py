"""A training step's statistics (core/step_stats.py): the one-call kernel of small layers
(core/_step_kernel.py) against NumPy's reference path, ``block_stats(x3, step_edges(x3))``
with the compiled kernels off."""

from __future__ import annotations

import numpy as np
import pytest

from tensortap.core import _step_kernel
from tensortap.core.stats import block_stats, to_channels_last
from tensortap.core.step_stats import step_edges, step_stats


def _reference(x3: np.ndarray) -> tuple[object, np.ndarray]:
    edges = step_edges(x3)
    return block_stats(x3, edges, kernel=False), edges


def _cases() -> list[object]:
    rng = np.random.default_rng(14)
    nchw = rng.standard_normal((64, 8, 8, 8)).astype(np.float32)
    relu = np.maximum(nchw, 0)
    relu[0, 0, 0, :2] = -0.0
    on_edges = rng.uniform(-2, 3, (16, 40, 5)).astype(np.float32)
    edges = step_edges(on_edges)
    on_edges[0, :5, 0] = edges[3]  # exactly on an edge
    on_edges[1, :5, 1] = np.nextafter(np.float32(edges[70]), np.float32(-np.inf))
    constant = np.full((4, 3, 2), 2.5, np.float32)  # no span: the edges widen around it
    huge = (rng.standard_normal((8, 6, 3)) * 3e37).astype(np.float32)  # near float32's limit
    cases = {
        "channels first": to_channels_last(nchw, ("channel", "h", "w"), "channel"),
        "relu, channels first": to_channels_last(relu, ("channel", "h", "w"), "channel"),
        "dense": rng.standard_normal((64, 1, 10)).astype(np.float32),
        "on the edges": on_edges,
        "constant": constant,
        "exploding": huge,
    }
    return [pytest.param(x3, id=name) for name, x3 in cases.items()]


@pytest.mark.parametrize("x3", _cases())
def test_small_layers_equal_the_numpy_path(x3: np.ndarray) -> None:
    if _step_kernel._compiled() is None:
        pytest.skip("numba is not installed or TENSORTAP_NUMBA=0")
    assert _step_kernel.step_finite(x3, 128) is not None  # the one-call kernel ran
    (fast, edges), (reference, reference_edges) = step_stats(x3), _reference(x3)
    np.testing.assert_array_equal(edges, reference_edges)
    np.testing.assert_array_equal(fast.histogram, reference.histogram)
    np.testing.assert_array_equal(fast.sample_max, reference.sample_max)
    exact = [0, 3, 4, 5, 6]  # count, min, max, zeros, non-finite
    np.testing.assert_array_equal(fast.moments[exact], reference.moments[exact])
    np.testing.assert_allclose(fast.moments[1:3], reference.moments[1:3], rtol=1e-12)
    np.testing.assert_allclose(fast.sample_mean, reference.sample_mean, rtol=1e-6)
    assert fast.histogram[:128].sum() + fast.histogram[128:130].sum() == x3.size


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_and_large_layers_take_the_general_path(bad: float) -> None:
    rng = np.random.default_rng(3)
    x3 = rng.standard_normal((8, 16, 4)).astype(np.float32)
    x3[2, 3, 1] = bad
    assert _step_kernel.step_finite(x3, 128) is None
    (stats, edges), (reference, reference_edges) = step_stats(x3), _reference(x3)
    np.testing.assert_array_equal(edges, reference_edges)
    np.testing.assert_array_equal(stats.histogram, reference.histogram)
    assert stats.moments[6, 1] == 1 and stats.moments[0, 1] == 8 * 16 - 1
    large = rng.standard_normal((2, _step_kernel.SMALL_VALUES, 1)).astype(np.float32)
    assert _step_kernel.step_finite(large, 128) is None
    assert _step_kernel.step_finite(x3.astype(np.float64), 128) is None
