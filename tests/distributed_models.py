"""Model factories for the Dask tests, importable by worker processes, and their cluster.

A factory must return the same weights in every process (the run's fingerprint is checked on
each worker), so every initialiser has its own seed: ``keras.utils.set_random_seed`` alone is
not enough, a worker process (its thread settings differ) drew other dense weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import tensorflow as tf


class FiniteGuard(keras.layers.Layer):
    """Passes its input through, failing the batch when it holds a NaN or infinity.

    The failure tests poison one sample to make exactly one range fail on its worker.
    """

    def call(self, x: Any) -> Any:
        return tf.debugging.assert_all_finite(x, "poisoned sample")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def tiny_cnn() -> Any:
    """A tiny Keras CNN (seeded: identical weights in every process)."""
    return _cnn(guarded=True)


def tiny_cnn_unguarded() -> Any:
    """:func:`tiny_cnn` without the guard: NaN inputs flow through (non-finite input tests)."""
    return _cnn(guarded=False)


def _cnn(*, guarded: bool) -> Any:
    inputs = keras.Input((8, 8, 3), name="image")
    h = FiniteGuard(name="guard")(inputs) if guarded else inputs
    h = keras.layers.Conv2D(
        4,
        3,
        activation="relu",
        name="conv",
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
        bias_initializer=keras.initializers.RandomNormal(0.0, 0.1, seed=2),
    )(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(
        3,
        activation="softmax",
        name="dense",
        kernel_initializer=keras.initializers.GlorotUniform(seed=3),
    )(h)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def cached_models() -> int:
    """Models cached in this worker process (``client.run(cached_models)``)."""
    from tensortap.core.distributed import _MODELS

    return len(_MODELS)


@contextmanager
def two_worker_client() -> Iterator[Any]:
    """A real ``LocalCluster`` of two single-threaded worker processes, and its client."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()
