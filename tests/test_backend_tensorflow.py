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
        (
            layer.name,
            "call" in vars(layer),
            type(layer).call is getattr(layer.call, "__func__", None),
        )
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


# -- leaks ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nested() -> Any:
    return models.nested_functional()


def test_no_wrapper_survives_and_predictions_identical(nested: Any) -> None:
    from tensortap.core.targets import resolve_target

    model, x, _ = nested
    backend = TensorFlowBackend()
    graph = backend.graph(model)
    before = model(x, training=False).numpy()
    with backend.session(model, graph.select("*block_1*"), gradients=True) as session:
        assert not any("call" in vars(layer) for layer in all_layers(model))  # only while tracing
        session.run(x)
    assert not any("call" in vars(layer) for layer in all_layers(model))
    np.testing.assert_array_equal(model(x, training=False).numpy(), before)

    def fails(outputs: Any, labels: Any) -> Any:
        raise ZeroDivisionError("mid-capture")

    with pytest.raises(ZeroDivisionError):
        with backend.session(model, graph.nodes, gradients=True, target=resolve_target(fails)) as s:
            s.run(x)
    assert not any("call" in vars(layer) for layer in all_layers(model))
    np.testing.assert_array_equal(model(x, training=False).numpy(), before)


def test_nested_keys_and_score(nested: Any) -> None:
    model, x, _ = nested
    graph = TensorFlowBackend().graph(model)
    assert f"{models.BASE}.block_1_expand" in graph
    assert graph[f"{models.BASE}.block_1_expand"].dims == ("height", "width", "channel")
    assert graph.extra["score"] == "model output"  # linear logits: nothing to undo
    seq, _, _ = models.sequential_input()
    assert TensorFlowBackend().graph(seq).extra["score"] == "logits (pre-softmax)"


def test_keys_for_shared_and_multi_output_layers() -> None:
    shared = TensorFlowBackend().graph(models.shared()[0])
    assert shared.keys == ("shared", "shared@1", "logits")
    assert shared["shared@1"].call_index == 1
    lstm = TensorFlowBackend().graph(models.recurrent_states()[0])
    assert {"lstm", "lstm:1", "lstm:2"} <= set(lstm.keys)
    assert lstm["lstm"].dims == ("time", "feature")


def test_same_signature_traced_once() -> None:
    model, x, _ = models.sequential_no_input()
    backend = TensorFlowBackend()
    with backend.session(model, backend.graph(model).nodes) as session:
        session.run(x)
        session.run(x[:1])  # another batch size reuses the trace (unknown batch axis)
        assert len(session._steps) == 1


def test_later_sessions_reuse_the_step_and_see_new_weights() -> None:
    model, x, _ = models.sequential_input()
    backend = TensorFlowBackend()
    nodes = backend.graph(model).nodes
    with backend.session(model, nodes) as first:
        before = first.run(x)
        (step,) = first._steps.values()
    for weight in model.weights:  # e.g. a training step between two captures
        weight.assign(weight.numpy() * 0.5)
    expected = model.predict(x, verbose=0)
    with TensorFlowBackend().session(model, nodes) as second:
        after = second.run(x)
        assert list(second._steps.values()) == [step]  # no second trace
    (name,) = after.outputs
    np.testing.assert_array_equal(after.outputs[name], expected)
    assert not np.array_equal(after.outputs[name], before.outputs[name])


# -- bad input: one clear message each -------------------------------------------------
def test_input_shape_and_dtype_mismatch() -> None:
    from tensortap.core.errors import InputMismatchError

    model, x, _ = models.sequential_input()
    backend = TensorFlowBackend()
    with backend.session(model, backend.graph(model).nodes[:1]) as session:
        with pytest.raises(
            InputMismatchError, match=r"shape \(4, 9, 8, 3\).*expects \(batch, 8, 8, 3\)"
        ):
            session.run(np.zeros((4, 9, 8, 3), "float32"))
        with pytest.raises(InputMismatchError, match="dtype <U1"):
            session.run(np.full((1, 8, 8, 3), "a"))
        # safe casts are fine: float64 and uint8 images become float32
        assert session.run(x.astype("float64")).activations["conv"].dtype == np.float32
        session.run((x * 0).astype("uint8"))


def test_unknown_layer_suggests() -> None:
    from tensortap.core.errors import LayerNotFoundError

    graph = TensorFlowBackend().graph(models.sequential_input()[0])
    with pytest.raises(LayerNotFoundError, match="did you mean: conv"):
        graph.select("cnov")


def test_model_never_built() -> None:
    from tensortap.core.errors import ModelNotBuiltError

    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ModelNotBuiltError, match="call the model on a batch"):
        TensorFlowBackend().graph(model)
    with pytest.raises(ModelNotBuiltError, match="Input"):
        TensorFlowBackend().graph(models.SmallResNet())


def test_target_class_out_of_range_and_missing_labels() -> None:
    from tensortap.core.errors import TargetError
    from tensortap.core.targets import resolve_target

    model, x, _ = models.sequential_input()
    backend = TensorFlowBackend()
    nodes = backend.graph(model).nodes
    with backend.session(model, nodes, gradients=True, target=resolve_target(5)) as session:
        with pytest.raises(TargetError, match=r"0\.\.4"):
            session.run(x)
    with backend.session(model, nodes, gradients=True, target=resolve_target("label")) as session:
        with pytest.raises(TargetError, match="needs labels"):
            session.run(x)


def test_not_a_keras_model() -> None:
    from tensortap.core.errors import UnsupportedModelError
    from tensortap.core.registry import backend_for

    with pytest.raises(UnsupportedModelError, match="not a model tensortap can capture"):
        backend_for(object())
    with pytest.raises(UnsupportedModelError, match="not a Keras 3 model"):
        TensorFlowBackend().graph(np.zeros(3))
    assert isinstance(backend_for(models.sequential_input()[0]), TensorFlowBackend)


# -- data, files, fingerprint --------------------------------------------------------------
def test_dataset_batches_and_fingerprint(tmp_path: Path) -> None:
    model, x, y = models.sequential_input()
    backend = TensorFlowBackend()
    batches = list(backend.batches(tf.data.Dataset.from_tensor_slices((x, y)), 3))
    assert [b[0].shape[0] for b in batches] == [3, 1]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    assert backend.batches(x, 3) is None
    path = tmp_path / "m.keras"
    model.save(path)
    assert TensorFlowBackend.can_load(str(path))
    loaded = backend.load_model(str(path))
    assert backend.fingerprint(loaded) == backend.fingerprint(model)
    loaded.layers[0].kernel.assign(loaded.layers[0].kernel + 1.0)
    assert backend.fingerprint(loaded) != backend.fingerprint(model)
    assert backend.model_info(model)["class"] == "Sequential"


def test_capture_callback_writes_one_training_run(tmp_path: Path) -> None:
    import tensortap as tt

    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="relu", name="h"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).random((12, 4), dtype=np.float32)
    y = np.arange(12) % 3
    # one run with a step axis (issue 14), not one run per epoch
    callback = tt.CaptureCallback(
        (x[:4], y[:4]),
        tmp_path / "fit.zarr",
        every_n_epochs=2,
        layers="h",
        policy=tt.Policy(gradients=True),
        target="label",
    )
    model.fit(x, y, epochs=4, verbose=0, callbacks=[callback])
    run = tt.open_run(tmp_path / "fit.zarr")
    np.testing.assert_array_equal(run.steps["epoch"], [1, 3])
    assert run.layers == ("h",) and run.samples == 4
    assert run.gradient("h", step=int(run.step_values[-1])).shape == (4, 5)
    run = run.at(int(run.step_values[-1]))
    np.testing.assert_array_equal(run.activation("h").values, model.get_layer("h")(x[:4]).numpy())
