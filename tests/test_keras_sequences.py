"""Recurrent layers, bare ``keras.ops`` nodes and dimension names (issue 13)."""

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


def _load(name: str) -> Any:
    # pytest runs with --import-mode=importlib, so tests/ is not on sys.path.
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


models = _load("keras_sequence_models")


def _leak_probe(model: Any) -> Any:
    operations = list(model._flatten_layers(include_self=True, recursive=True))
    operations += [op for op in getattr(model, "operations", []) if op not in operations]
    return tuple((op.name, "call" in vars(op)) for op in operations)


class TestKerasSequenceConformance(BackendTests):
    backend_cls = TensorFlowBackend
    cases = models.CASES

    def predict(self, model: Any, inputs: Any) -> list[np.ndarray]:
        return [np.asarray(t) for t in tf.nest.flatten(model(inputs, training=False))]

    def weights(self, model: Any) -> list[np.ndarray]:
        return [np.asarray(w) for w in model.weights]

    def leak_probe(self, model: Any) -> Any:
        return _leak_probe(model)

    def callable_target(self) -> Any:
        return lambda outputs, labels: tf.reduce_max(tf.nest.flatten(outputs)[0], axis=-1)
