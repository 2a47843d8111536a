"""Conformance suite every tensortap backend passes (like ``zarr.testing.store.StoreTests``).

Testing a backend takes a subclass that names the backend class, lists model cases and
fills in three small framework hooks::

    from tensortap.core.testing import BackendTests, ModelCase

    class TestMyBackend(BackendTests):
        backend_cls = MyBackend
        cases = (ModelCase("mlp", make_mlp, mlp_reference, mlp_gradients), ...)

        def predict(self, model, inputs): ...      # the model's own outputs, graph order
        def weights(self, model): ...              # list of weight arrays
        def leak_probe(self, model): ...           # comparable snapshot of hooks/wrappers
        def callable_target(self): ...             # (outputs, labels) -> per-sample scalar

Each :class:`ModelCase` builds a model and a small batch and brings its own *reference*:
a function that computes the expected activation of some node keys without tensortap
(a flat sub-model, or calling the layers/submodules one by one), and optionally the
expected gradients of ``sum_i score[i, classes[i]]`` with respect to them, where ``score``
is what the backend reports in ``session.info["score"]`` (the pre-softmax logits when the
model ends in a softmax).  The generic tests compare the backend against them: activations
bit-equal, gradients within ``1e-5`` relative to their scale, outputs equal to the model's
own prediction, nothing changed or left behind — also after an exception.

This module imports no framework: it only calls the backend and the hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

from tensortap.core.backend import Backend
from tensortap.core.errors import InputMismatchError, LayerNotFoundError, TargetError
from tensortap.core.graph import CaptureGraph
from tensortap.core.targets import Target, resolve_target

__all__ = ["BackendTests", "ModelCase", "as_input_dict"]

#: Factory: ``() -> (model, inputs, labels)``; inputs an array or a dict by input name.
Factory = Callable[[], tuple[Any, Any, Any]]
#: Activation reference: ``(model, inputs) -> {node key: expected activation}``.
Reference = Callable[[Any, Any], Mapping[str, np.ndarray]]
#: Gradient reference: ``(model, inputs, classes) -> {node key: expected gradient}``.
GradientReference = Callable[[Any, Any, np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ModelCase:
    """One model the conformance suite runs, with its independent reference.

    Attributes
    ----------
    id : str
        Test id (``"sequential"``, ``"nested_functional"``).
    factory : callable
        ``() -> (model, inputs, labels)``; ``labels`` may be ``None``.  Keep models tiny.
    reference : callable
        ``(model, inputs) -> {key: array}`` computed without tensortap.  Keys it returns
        must exist in the capture graph; the activations must match bit for bit.
    gradient_reference : callable, optional
        ``(model, inputs, classes) -> {key: array}``: gradients of
        ``sum_i score[i, classes[i]]`` (see the module docstring); within ``1e-5``.
    classification : bool
        Whether the first output holds class scores (enables the target tests).
    """

    id: str
    factory: Factory
    reference: Reference
    gradient_reference: GradientReference | None = None
    classification: bool = True


def as_input_dict(graph: CaptureGraph, inputs: Any) -> dict[str, np.ndarray]:
    """Inputs as ``{input name: ndarray}`` (a bare array stands for the only input)."""
    if isinstance(inputs, Mapping):
        return {name: np.asarray(value) for name, value in inputs.items()}
    return {graph.inputs[0].name: np.asarray(inputs)}


def assert_gradients_close(actual: np.ndarray, expected: np.ndarray, key: str) -> None:
    """Within ``1e-5`` of the reference, relative to the gradient's overall scale."""
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=key)


class BackendTests:
    """Base class of the conformance suite; subclass it, set :attr:`backend_cls` and
    :attr:`cases`, implement the hooks.  Every test runs once per case (``case`` fixture),
    except the selection/target tests, which use the first classification case.
    """

    backend_cls: ClassVar[type[Backend]]
    cases: ClassVar[Sequence[ModelCase]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cases = list(cls.__dict__.get("cases", ()))
        if cases:
            # parametrise the `built` fixture with the subclass's own cases, built once per class
            @pytest.fixture(scope="class", params=cases, ids=[c.id for c in cases])
            def built(self: Any, request: Any) -> tuple[ModelCase, Any, Any, Any]:
                case = request.param
                model, inputs, labels = case.factory()
                return case, model, inputs, labels

            cls.built = built  # type: ignore[attr-defined]

    # -- hooks a subclass implements -----------------------------------------------------
    def predict(self, model: Any, inputs: Any) -> Sequence[np.ndarray]:
        """The model's own outputs for ``inputs``, flattened in graph output order."""
        raise NotImplementedError

    def weights(self, model: Any) -> Sequence[np.ndarray]:
        """Every weight of ``model`` as a NumPy array."""
        raise NotImplementedError

    def leak_probe(self, model: Any) -> Any:
        """A comparable snapshot of whatever a session could attach (wrappers, hooks)."""
        raise NotImplementedError

    def callable_target(self) -> Callable[..., Any]:
        """A framework target ``(outputs, labels) -> per-sample scalar``."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def backend(self) -> Backend:
        return self.backend_cls()

    @pytest.fixture(scope="class")
    def captured(self, built: Any, backend: Backend) -> dict[str, Any]:
        """One capture of every node (with gradients when supported) per case."""
        case, model, inputs, _ = built
        graph = backend.graph(model)
        feed = as_input_dict(graph, inputs)
        before = (self.leak_probe(model), [w.copy() for w in self.weights(model)])
        classes = None
        gradients = self.backend_cls.supports_gradients and case.classification
        if gradients:
            n_classes = graph.outputs[0].shape[-1]
            batch = next(iter(feed.values())).shape[0]
            classes = np.arange(batch, dtype=np.int64) % int(n_classes or 1)
        target = Target("classes", classes=classes) if gradients else None
        with backend.session(model, graph.nodes, gradients=gradients, target=target) as session:
            result = session.run(feed, classes=classes)
            info = dict(session.info)
        return {
            "graph": graph,
            "feed": feed,
            "result": result,
            "classes": classes,
            "before": before,
            "info": info,
        }

    def _classifier(self, built: Any) -> None:
        # target tests trace several sessions: one classification case is enough
        first = next((c for c in self.cases if c.classification), None)
        if first is None or built[0].id != first.id:
            pytest.skip("target tests run on the first classification case only")

    # -- graph ---------------------------------------------------------------------------
    def test_graph_keys_unique_and_stable(self, built: Any) -> None:
        _, model, _, _ = built
        first, second = self.backend_cls().graph(model), self.backend_cls().graph(model)
        assert len(set(first.keys)) == len(first.keys) > 0
        assert first == second
        assert str(first)  # the printable table

    def test_node_shapes_match_capture(self, captured: dict[str, Any]) -> None:
        graph, result = captured["graph"], captured["result"]
        assert list(result.activations) == list(graph.keys)
        for node in graph:
            value = result.activations[node.key]
            assert len(node.dims) == len(node.shape) == value.ndim - 1, node.key
            assert all(
                s is None or s == v for s, v in zip(node.shape, value.shape[1:], strict=True)
            ), node.key
            assert str(value.dtype) == node.dtype, node.key

    # -- fidelity ------------------------------------------------------------------------
    def test_activations_match_reference(self, built: Any, captured: dict[str, Any]) -> None:
        case, model, inputs, _ = built
        expected = case.reference(model, inputs)
        assert expected, f"case {case.id!r}: the reference returned no key"
        for key, value in expected.items():
            assert key in captured["graph"], f"reference key {key!r} is not in the graph"
            np.testing.assert_array_equal(captured["result"].activations[key], value, err_msg=key)

    def test_gradients_match_reference(self, built: Any, captured: dict[str, Any]) -> None:
        case, model, inputs, _ = built
        if not self.backend_cls.supports_gradients:
            pytest.skip(f"{self.backend_cls.name} does not support gradients")
        if case.gradient_reference is None or not case.classification:
            pytest.skip(f"case {case.id!r} has no gradient reference")
        expected = case.gradient_reference(model, inputs, captured["classes"])
        assert expected, f"case {case.id!r}: the gradient reference returned no key"
        result = captured["result"]
        np.testing.assert_array_equal(result.target_classes, captured["classes"])
        for key, value in expected.items():
            assert_gradients_close(result.gradients[key], value, key)

    def test_outputs_match_prediction(self, built: Any, captured: dict[str, Any]) -> None:
        _, model, inputs, _ = built
        outputs = captured["result"].outputs
        assert list(outputs) == [spec.name for spec in captured["graph"].outputs]
        for (name, value), own in zip(outputs.items(), self.predict(model, inputs), strict=True):
            np.testing.assert_allclose(value, own, rtol=1e-5, atol=1e-6, err_msg=name)

    def test_run_batches_equals_batch_by_batch(self, built: Any, backend: Backend) -> None:
        """Several batches in one call (``run_batches``) give exactly what running them one
        by one gives: the model sees one batch at a time (issue 12)."""
        case, model, inputs, _ = built
        graph = backend.graph(model)
        feed = as_input_dict(graph, inputs)
        n = next(iter(feed.values())).shape[0]
        gradients = self.backend_cls.supports_gradients and case.classification
        classes = None
        if gradients:
            classes = np.arange(n, dtype=np.int64) % int(graph.outputs[0].shape[-1] or 1)
        target = Target("classes", classes=classes) if gradients else None
        with backend.session(model, graph.nodes, gradients=gradients, target=target) as session:
            for size in (1, n + 1):  # whole batches, then one batch shorter than the size
                grouped = session.run_batches(feed, size, classes=classes)
                singles = [
                    session.run(
                        {name: value[i : i + size] for name, value in feed.items()},
                        classes=None if classes is None else classes[i : i + size],
                    )
                    for i in range(0, n, size)
                ]
                for field in ("outputs", "activations", "gradients"):
                    found = getattr(grouped, field)
                    assert list(found) == list(getattr(singles[0], field)), field
                    for key, value in found.items():
                        expected = np.concatenate([getattr(r, field)[key] for r in singles])
                        np.testing.assert_array_equal(value, expected, err_msg=f"{field} {key}")
                for field in ("target_classes", "target_values", "predictions"):
                    parts = [getattr(r, field) for r in singles]
                    value = getattr(grouped, field)
                    if parts[0] is None:
                        assert value is None, field
                    else:
                        np.testing.assert_array_equal(value, np.concatenate(parts), err_msg=field)

    # -- no side effects -----------------------------------------------------------------
    def test_model_untouched(self, built: Any, captured: dict[str, Any]) -> None:
        _, model, inputs, _ = built
        probe, weights = captured["before"]
        assert self.leak_probe(model) == probe
        for before, after in zip(weights, self.weights(model), strict=True):
            np.testing.assert_array_equal(before, after)
        again = self.predict(model, inputs)
        for name, value in captured["result"].outputs.items():
            np.testing.assert_allclose(
                value, again[list(captured["result"].outputs).index(name)], rtol=1e-5, atol=1e-6
            )

    def test_nothing_left_after_exception(self, built: Any, backend: Backend) -> None:
        case, model, inputs, _ = built
        graph = backend.graph(model)
        feed = as_input_dict(graph, inputs)
        probe = self.leak_probe(model)
        own = self.predict(model, inputs)

        class Boom(Exception):
            pass

        with pytest.raises(Boom):  # an error raised by user code inside the session
            with backend.session(model, graph.nodes[:1]) as session:
                session.run(feed)
                raise Boom
        assert self.leak_probe(model) == probe
        if self.backend_cls.supports_gradients:

            def explode(outputs: Any, labels: Any) -> Any:
                raise Boom  # raised while the model is being run, wrappers in place

            with pytest.raises(Boom):
                with backend.session(
                    model, graph.nodes, gradients=True, target=resolve_target(explode)
                ) as session:
                    session.run(feed)
            assert self.leak_probe(model) == probe
        for before, after in zip(own, self.predict(model, inputs), strict=True):
            np.testing.assert_array_equal(before, after)

    def test_session_close_twice(self, built: Any, backend: Backend) -> None:
        _, model, inputs, _ = built
        graph = backend.graph(model)
        session = backend.session(model, graph.nodes[:1])
        session.run(as_input_dict(graph, inputs))
        session.close()
        session.close()

    def test_input_mismatch(self, built: Any, backend: Backend) -> None:
        _, model, inputs, _ = built
        graph = backend.graph(model)
        feed = as_input_dict(graph, inputs)
        name = graph.inputs[0].name
        with backend.session(model, graph.nodes[:1]) as session:
            with pytest.raises(InputMismatchError, match=name):
                session.run({**feed, name: feed[name][..., None]})  # one dimension too many
            with pytest.raises(InputMismatchError):
                session.run({**feed, "not_an_input": feed[name]})

    # -- selection (first classification case) -------------------------------------------
    def test_selection(self, built: Any, backend: Backend) -> None:
        if built[0].id != self.cases[0].id:
            pytest.skip("selection tests run on the first case only")
        _, model, _, _ = built
        graph = backend.graph(model)
        keys = graph.keys
        assert graph.select("*") == graph.nodes
        assert [n.key for n in graph.select([keys[-1], keys[0]])] == [keys[0], keys[-1]]
        assert graph.select(f"re:^{_escape(keys[0])}$")[0].key == keys[0]
        assert graph.select(keys[0][:-1] + "*")[0].key == keys[0]
        assert graph.select(lambda n: n.key == keys[-1])[0].key == keys[-1]
        klass = _load_class(graph.nodes[0].type_names[0])
        assert all(
            klass.__name__ == n.layer_type or graph.nodes[0].type_names[0] in n.type_names
            for n in graph.select(klass)
        )
        with pytest.raises(LayerNotFoundError, match=_escape(keys[0])):
            graph.select(keys[0] + "_typo")

    # -- targets -------------------------------------------------------------------------
    def _target_run(self, built: Any, backend: Backend, target: Any, classes: Any = None) -> Any:
        _, model, inputs, labels = built
        graph = backend.graph(model)
        feed = as_input_dict(graph, inputs)
        with backend.session(
            model, graph.nodes[-1:], gradients=True, target=resolve_target(target)
        ) as session:
            result = session.run(feed, classes=classes, labels=labels)
        key = graph.nodes[-1].key
        assert result.gradients[key].shape == result.activations[key].shape
        assert np.isfinite(result.gradients[key]).all()
        return result, graph, feed, labels

    def test_target_predicted(self, built: Any, backend: Backend) -> None:
        self._classifier(built)
        if not self.backend_cls.supports_gradients:
            pytest.skip("no gradients")
        result, graph, _, _ = self._target_run(built, backend, "predicted")
        scores = result.outputs[graph.outputs[0].name].reshape(len(result.target_classes), -1)
        np.testing.assert_array_equal(result.target_classes, scores.argmax(axis=1))

    def test_target_class_and_array(self, built: Any, backend: Backend) -> None:
        self._classifier(built)
        if not self.backend_cls.supports_gradients:
            pytest.skip("no gradients")
        result, graph, feed, _ = self._target_run(built, backend, 1)
        n = len(next(iter(feed.values())))
        np.testing.assert_array_equal(result.target_classes, np.ones(n, dtype=np.int64))
        if "output" in str(graph.extra.get("score", "model output")):
            scores = result.outputs[graph.outputs[0].name].reshape(n, -1)
            np.testing.assert_allclose(result.target_values, scores[:, 1], rtol=1e-6)
        per_sample = np.arange(n, dtype=np.int64) % 2
        result, *_ = self._target_run(built, backend, per_sample, classes=per_sample)
        np.testing.assert_array_equal(result.target_classes, per_sample)

    def test_target_label_and_callable(self, built: Any, backend: Backend) -> None:
        self._classifier(built)
        if not self.backend_cls.supports_gradients:
            pytest.skip("no gradients")
        _, model, inputs, labels = built
        if labels is not None:
            result, *_ = self._target_run(built, backend, "label")
            flat = np.asarray(labels)
            flat = flat.argmax(axis=1) if flat.ndim == 2 and flat.shape[1] > 1 else flat.reshape(-1)
            np.testing.assert_array_equal(result.target_classes, flat)
        result, *_ = self._target_run(built, backend, self.callable_target())
        assert result.target_values is not None and result.target_values.ndim == 1

    def test_target_errors(self, built: Any, backend: Backend) -> None:
        self._classifier(built)
        if not self.backend_cls.supports_gradients:
            pytest.skip("no gradients")
        _, model, inputs, _ = built
        graph = backend.graph(model)
        feed = as_input_dict(graph, inputs)
        n = len(next(iter(feed.values())))
        n_classes = int(graph.outputs[0].shape[-1] or 0)
        with backend.session(
            model, graph.nodes[-1:], gradients=True, target=resolve_target(n_classes)
        ) as session:
            with pytest.raises(TargetError, match="out of range|range over"):
                session.run(feed, classes=np.full(n, n_classes, dtype=np.int64))
        with backend.session(
            model, graph.nodes[-1:], gradients=True, target=resolve_target("label")
        ) as session:
            with pytest.raises(TargetError, match="label"):
                session.run(feed, labels=None)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def _load_class(dotted: str) -> type:
    import importlib

    module, _, qualname = dotted.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]
