"""keract on legacy Keras 2 (``tf_keras``, ``TF_USE_LEGACY_KERAS=1``): every layer's activations.

Usage: ``python keract_legacy.py SAMPLES REPEATS``; prints ``{"seconds": [...], "layers": n,
"bytes": n, "versions": {...}}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keract  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402


def seed_cnn() -> tf_keras.Model:
    """The seed's small CNN, as in benchmarks/bench_peers.py, written for Keras 2."""
    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            layers.InputLayer((28, 28, 3)),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ]
    )


def main() -> None:
    samples, repeats = int(sys.argv[1]), int(sys.argv[2])
    x = np.random.default_rng(0).random((samples, 28, 28, 3), dtype=np.float32)
    model = seed_cnn()
    keract.get_activations(model, x[:32])  # warm: keract builds its functions once
    seconds, layers, size = [], 0, 0
    for _ in range(repeats):
        started = time.perf_counter()
        activations = keract.get_activations(model, x)
        seconds.append(time.perf_counter() - started)
        layers = len(activations)
        size = sum(int(np.asarray(v).nbytes) for v in activations.values())
        del activations
    versions = {"keract": keract.__version__ if hasattr(keract, "__version__") else "?"}
    versions |= {"tf_keras": tf_keras.__version__, "tensorflow": tf.__version__}
    print(json.dumps({"seconds": seconds, "layers": layers, "bytes": size, "versions": versions}))


if __name__ == "__main__":
    main()
