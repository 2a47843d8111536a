"""Statistics reduced in the TensorFlow backend's compiled step (``BatchResult.partial_stats``)
agree with the NumPy path: counts, histogram, min, max, zeros and non-finite exactly, moments
to float64 summation-order tolerance; activations stay bit-equal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import tensortap as tt  # noqa: E402
from tensortap.backends.tensorflow import TensorFlowBackend  # noqa: E402
from tensortap.core.stats import (  # noqa: E402
    block_stats,
    block_stats_from_partials,
    choose_edges,
    to_channels_last,
)

#: The step sums in float64 too, only in another order than NumPy's pairwise sums.
RTOL = 1e-9


def _model() -> Any:
    """Identity (``linear``) first, so crafted inputs reach a captured layer unchanged;
    ``log`` makes -inf (zeros) and NaN (negatives); ``total`` has no channel dimension."""
    inputs = keras.Input((8, 8, 3), name="x")
    ident = keras.layers.Activation("linear", name="ident")(inputs)
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(ident)
    logged = keras.layers.Lambda(lambda t: tf.math.log(t), name="logged")(ident)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(conv)
    total = keras.layers.Lambda(lambda t: tf.reduce_sum(t, axis=-1), name="total")(pooled)
    dense = keras.layers.Dense(5, name="dense")(pooled)
    keras.utils.set_random_seed(1)
    return keras.Model(inputs, [dense, total, logged], name="partials")


def _batches() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    first = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
    second = rng.standard_normal((6, 8, 8, 3)).astype(np.float32) * 1.5
    # values exactly on the edges (decided from the first batch) and their neighbours, exact
    # zeros, and non-finite values
    edges = choose_edges(first).astype(np.float32)
    special = np.concatenate(
        [
            edges,
            np.nextafter(edges, np.float32(np.inf)),
            np.nextafter(edges, np.float32(-np.inf)),
            [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30],
        ]
    ).astype(np.float32)
    flat = second.reshape(-1)
    flat[: special.size] = special
    second[5, :, :, 1] = np.nan  # a sample's channel without any finite value
    return first, second


def _keys(graph: Any) -> list[str]:
    return [n.key for n in graph.nodes if n.name in ("ident", "conv", "logged", "total", "pool")]


def _compare(numpy_stats: Any, partial_stats: Any) -> None:
    a, b = numpy_stats.moments, partial_stats.moments
    exact = [0, 3, 4, 5, 6]  # count, min, max, zeros, nonfinite
    np.testing.assert_array_equal(a[exact], b[exact])
    np.testing.assert_allclose(a[1], b[1], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(a[2], b[2], rtol=RTOL, atol=1e-5)
    np.testing.assert_array_equal(numpy_stats.histogram, partial_stats.histogram)
    np.testing.assert_array_equal(numpy_stats.sample_max, partial_stats.sample_max)
    np.testing.assert_allclose(
        numpy_stats.sample_mean, partial_stats.sample_mean, rtol=RTOL, atol=1e-6
    )


def test_partials_agree_with_numpy_and_activations_unchanged() -> None:
    model = _model()
    backend = TensorFlowBackend()
    graph = backend.graph(model)
    keys = _keys(graph)
    nodes = [graph[k] for k in keys]
    first, second = _batches()
    with backend.session(model, nodes) as session:
        plain = session.run({"x": first})
        assert plain.partial_stats is None
        edges = {k: choose_edges(np.asarray(plain.activations[k])) for k in keys}
        before = session.run({"x": second})
        session.set_histogram_edges(edges)
        result = session.run({"x": second})
    assert result.partial_stats is not None and set(result.partial_stats) == set(keys)
    for node in nodes:
        act = np.asarray(result.activations[node.key])
        np.testing.assert_array_equal(act, np.asarray(before.activations[node.key]))
        x3 = to_channels_last(act, node.dims, node.channel_dim)
        _compare(
            block_stats(x3, edges[node.key]),
            block_stats_from_partials(result.partial_stats[node.key], edges[node.key], x3.shape),
        )
    logged = next(n for n in nodes if n.name == "logged")
    assert result.partial_stats[logged.key]["count"].min() == 0  # a channel without a finite
    total = next(n for n in nodes if n.name == "total")
    assert total.channel_dim is None and result.partial_stats[total.key]["sum"].shape == (6, 1)


def test_partials_shape_checked() -> None:
    edges = np.linspace(0, 1, 9)
    good = {k: np.zeros((2, 3)) for k in ("count", "sum", "sumsq", "min", "max", "zeros")}
    good["histogram"] = np.zeros(10, np.int64)
    block_stats_from_partials(good, edges, (2, 5, 3))
    with pytest.raises(ValueError, match="'sum' has shape"):
        block_stats_from_partials(good | {"sum": np.zeros((2, 4))}, edges, (2, 5, 3))
    with pytest.raises(ValueError, match="'histogram'"):
        block_stats_from_partials(good | {"histogram": np.zeros(9)}, edges, (2, 5, 3))
    with pytest.raises(ValueError, match="lack"):
        block_stats_from_partials({"count": good["count"]}, edges, (2, 5, 3))


def test_capture_stats_same_with_and_without_partials(monkeypatch: Any) -> None:
    model = _model()
    first, second = _batches()
    x = np.concatenate([first, second, second[::-1]])  # batches of 4: the edges' batch, then 3
    layers = ["ident", "conv", "logged", "total", "pool"]
    monkeypatch.setattr(TensorFlowBackend, "supports_partial_stats", True)
    with_partials = tt.capture(model, x, layers=layers, batch_size=4, progress=False)
    monkeypatch.setattr(TensorFlowBackend, "supports_partial_stats", False)
    without = tt.capture(model, x, layers=layers, batch_size=4, progress=False)
    for key in with_partials.layers:
        np.testing.assert_array_equal(
            with_partials.activation(key).values, without.activation(key).values
        )
        a, b = without.stats(key), with_partials.stats(key)
        for name in (
            "count",
            "min",
            "max",
            "zero_fraction",
            "nonfinite",
            "histogram",
            "underflow",
            "overflow",
        ):
            if name in a:
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        for name in ("mean", "std"):
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=RTOL, atol=1e-6)
