"""The TensorFlow/Keras backend (issue 2): conformance suite, leaks and bad input."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tensortap.backends.tensorflow import TensorFlowBackend  # noqa: E402
from tensortap.core.testing import BackendTests  # noqa: E402


def _load_models() -> Any:
    # pytest runs with --import-mode=importlib, so tests/ is not on sys.path.
    path = Path(__file__).with_name("keras_models.py")
    spec = importlib.util.spec_from_file_location("keras_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("keras_models", module)
    spec.loader.exec_module(module)
    return module


models = _load_models()


def all_layers(model: Any) -> list[Any]:
    return list(model._flatten_layers(include_self=True, recursive=True))


def leak_probe(model: Any) -> Any:
    """Instance attributes of every layer that a capture could have added or replaced."""
    return tuple(
        (layer.name, "call" in vars(layer), type(layer).call is getattr(layer.call, "__func__", None))
        for layer in all_layers(model)
    )


class TestTensorFlowConformance(BackendTests):
    backend_cls = TensorFlowBackend
    cases = models.CASES

    def predict(self, model: Any, inputs: Any) -> list[np.ndarray]:
        return [np.asarray(t) for t in tf.nest.flatten(model(inputs, training=False))]

    def weights(self, model: Any) -> list[np.ndarray]:
        return [np.asarray(w) for w in model.weights]

    def leak_probe(self, model: Any) -> Any:
        return leak_probe(model)

    def callable_target(self) -> Any:
        return lambda outputs, labels: tf.reduce_max(tf.nest.flatten(outputs)[0], axis=-1)
