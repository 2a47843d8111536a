"""The PyTorch backend (issue 6): capture graph, fidelity, no leftovers, discovery, errors.

Fidelity bars: activations equal to a reference that calls the submodules directly;
gradients within 1e-5 of ``torch.autograd.grad`` on that reference.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tensortap.backends.torch import TorchBackend  # noqa: E402
from tensortap.core import registry  # noqa: E402
from tensortap.core.errors import (  # noqa: E402
    InputMismatchError,
    ModelNotBuiltError,
    TargetError,
    TensortapError,
    UnsupportedModelError,
)
from tensortap.core.targets import resolve_target  # noqa: E402
from tensortap.core.testing import BackendTests, ModelCase  # noqa: E402


def _load_models() -> Any:
    # pytest runs with --import-mode=importlib, so tests/ is not on sys.path.
    spec = importlib.util.spec_from_file_location(
        "torch_models", Path(__file__).with_name("torch_models.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("torch_models", module)
    spec.loader.exec_module(module)
    return module


models = _load_models()
CASES = {case.name: case for case in models.CASES}
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)  # two cores shared by several test runs


@pytest.fixture
def backend() -> Any:
    return TorchBackend()


def _as_tuple(example: Any) -> tuple[Any, ...]:
    return example if isinstance(example, tuple) else (example,)


def _first(output: Any) -> Any:
    if isinstance(output, dict):
        return next(iter(output.values()))
    return output[0] if isinstance(output, (tuple, list)) else output


def _reference(case: Any, model: nn.Module, example: Any) -> tuple[dict[str, Any], Any]:
    model.eval()
    tensors = [torch.tensor(x) for x in _as_tuple(example)]
    activations, output = case.reference(model, *tensors)
    scores = activations[case.score_key] if case.score_key else _first(output)
    return activations, scores.reshape(scores.shape[0], -1)


def _hooks(model: nn.Module) -> list[dict[str, int]]:
    return [{name: len(getattr(m, name)) for name in HOOK_DICTS} for m in model.modules()]


def _capture(backend: Any, model: nn.Module, example: Any, **kwargs: Any) -> tuple[Any, Any]:
    graph = backend.graph(model, example)
    inputs = dict(zip((s.name for s in graph.inputs), _as_tuple(example), strict=True))
    with backend.session(model, graph.nodes, **kwargs) as session:
        return graph, session.run(inputs)


# -- capture graph ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_graph_keys_match_reference(backend: Any, name: str) -> None:
    case = CASES[name]
    model, example = case.build(), case.example()
    graph = backend.graph(model, example)
    with torch.no_grad():
        reference, _ = _reference(case, model, example)
    assert set(graph.keys) == set(reference)
    if case.keys is not None:
        assert graph.keys == case.keys  # execution order: a container follows its children
    for node in graph:
        assert node.shape == tuple(reference[node.key].shape[1:])


def test_graph_nodes_describe_modules(backend: Any) -> None:
    model = CASES["resnet"].build()
    graph = backend.graph(model, CASES["resnet"].example())
    node = graph["layer1.0.conv2"]
    assert (node.name, node.layer_type, node.path) == (
        "layer1.0.conv2",
        "Conv2d",
        ("layer1", "0", "conv2"),
    )
    assert node.dims == ("channel", "height", "width") and node.is_spatial
    assert graph["layer2.0.relu@1"].call_index == 1
    assert graph["fc"].dims == ("unit",)
    assert graph.inputs[0].name == "x" and graph.inputs[0].dims == ("channel", "height", "width")
    assert graph.outputs[0].name == "output"
    assert {n.key for n in graph.select(nn.Conv2d)} >= {"conv1", "layer2.0.downsample.0"}
    assert graph.params == sum(p.numel() for p in model.parameters())
    assert "layer1.0.conv2" in str(graph)


def test_graph_names_inputs_and_outputs(backend: Any) -> None:
    two_inputs = backend.graph(CASES["two_inputs"].build(), CASES["two_inputs"].example())
    assert [s.name for s in two_inputs.inputs] == ["image", "extra"]
    two_heads = backend.graph(CASES["two_heads"].build(), CASES["two_heads"].example())
    assert [s.name for s in two_heads.outputs] == ["classes", "box"]
    tuples = backend.graph(CASES["tuple_outputs"].build(), CASES["tuple_outputs"].example())
    assert [s.name for s in tuples.outputs] == ["output_0", "output_1"]
    assert tuples["split:1"].output_index == 1


def test_graph_needs_an_example_once(backend: Any) -> None:
    assert TorchBackend.needs_example_inputs is True
    model = CASES["called_twice"].build()
    with pytest.raises(ModelNotBuiltError, match="inputs=x"):
        backend.graph(model)
    traced = backend.graph(model, CASES["called_twice"].example())
    assert backend.graph(model) is traced  # cached, also for a fresh backend instance
    assert TorchBackend().graph(model) is traced
    model.extra = nn.Linear(2, 2)  # an edited model needs a new trace
    with pytest.raises(ModelNotBuiltError):
        backend.graph(model)


def test_a_fresh_instance_of_a_traced_architecture_reuses_its_trace(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new model per training run (issue 14) is not traced again, unless its
    structure or its inputs' shapes differ; its activations still come from itself."""
    from tensortap.backends import torch as torch_backend

    case = CASES["resnet"]
    example = case.example()
    first = backend.graph(case.build(), example)
    fresh = case.build()
    traces: list[int] = []
    original = torch_backend.build_graph  # the real tracer, counted
    monkeypatch.setattr(
        torch_backend, "build_graph", lambda *a, **k: traces.append(1) or original(*a, **k)
    )
    assert backend.graph(fresh, example) is first and not traces
    assert backend.graph(fresh) is first  # now cached for this instance too
    wider = np.concatenate([example, example], axis=-1)  # another per-sample shape
    assert backend.graph(case.build(), wider) is not first and len(traces) == 1
    edited = case.build()
    edited.extra = nn.Linear(2, 2)
    assert backend.graph(edited, example) is not first and len(traces) == 2
    monkeypatch.undo()
    with backend.session(fresh, first.nodes) as session:
        result = session.run({first.inputs[0].name: example})
    with torch.no_grad():
        reference = fresh.eval()(torch.from_numpy(example)).numpy()
    np.testing.assert_allclose(result.outputs[first.outputs[0].name], reference, rtol=1e-6)


# -- fidelity ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_activations_equal_reference(backend: Any, name: str) -> None:
    case = CASES[name]
    model, example = case.build(), case.example()
    graph, result = _capture(backend, model, example)
    with torch.no_grad():
        reference, _ = _reference(case, model, example)
    assert set(result.activations) == set(graph.keys)
    for key, value in result.activations.items():
        np.testing.assert_array_equal(value, reference[key].numpy(), err_msg=key)
    assert result.gradients == {}
    assert result.target_classes is None and result.target_values is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_autograd(backend: Any, name: str) -> None:
    case = CASES[name]
    model, example = case.build(), case.example()
    graph, result = _capture(backend, model, example, gradients=True)
    reference, scores = _reference(case, model, example)
    classes = scores.argmax(dim=1)
    values = scores.gather(1, classes[:, None]).squeeze(1)
    keys = list(graph.keys)
    found = torch.autograd.grad(values.sum(), [reference[k] for k in keys], allow_unused=True)
    np.testing.assert_array_equal(result.target_classes, classes.numpy())
    np.testing.assert_allclose(result.target_values, values.detach().numpy(), rtol=0, atol=1e-5)
    for key, grad in zip(keys, found, strict=True):
        expected = np.zeros(reference[key].shape) if grad is None else grad.numpy()
        np.testing.assert_allclose(result.gradients[key], expected, rtol=0, atol=1e-5, err_msg=key)
        np.testing.assert_array_equal(result.activations[key], reference[key].detach().numpy())


def test_softmax_model_differentiates_logits(backend: Any) -> None:
    case = CASES["sequential"]
    model, example = case.build(), case.example()
    graph, result = _capture(backend, model, example, gradients=True)
    logits = result.activations["5"]
    np.testing.assert_allclose(result.target_values, logits.max(axis=1), atol=1e-6)
    with backend.session(model, graph.nodes[:1]) as session:
        assert session.info == {"score": "logits (pre-softmax)", "target": "predicted"}


def test_targets_class_label_and_callable(backend: Any) -> None:
    model, example = CASES["two_heads"].build(), CASES["two_heads"].example()
    graph = backend.graph(model, example)
    nodes = graph.select(["body"])
    with backend.session(model, nodes, gradients=True, target=resolve_target(2)) as session:
        fixed = session.run({"x": example})
    assert list(fixed.target_classes) == [2] * len(example)
    labels = np.array([0, 1, 2, 3])
    with backend.session(model, nodes, gradients=True, target=resolve_target("label")) as session:
        by_label = session.run({"x": example}, labels=labels)
        explicit = session.run({"x": example}, classes=labels)
    np.testing.assert_array_equal(by_label.target_classes, labels)
    np.testing.assert_array_equal(by_label.gradients["body"], explicit.gradients["body"])

    def box_area(outputs: dict[str, Any], labels: Any) -> Any:
        assert isinstance(labels, torch.Tensor)
        return outputs["box"].prod(dim=1)

    with backend.session(model, nodes, gradients=True, target=resolve_target(box_area)) as session:
        custom = session.run({"x": example}, labels=labels)
    assert custom.target_classes is None
    np.testing.assert_allclose(custom.target_values, custom.outputs["box"].prod(axis=1), atol=1e-6)
    with backend.session(model, nodes, gradients=True, target=resolve_target(9)) as session:
        with pytest.raises(TargetError, match="0..3"):
            session.run({"x": example})


def test_frozen_model_still_has_gradients(backend: Any) -> None:
    model, example = CASES["resnet"].build(), CASES["resnet"].example()
    model.requires_grad_(False)
    _, result = _capture(backend, model, example, gradients=True)
    assert np.abs(result.gradients["layer2"]).sum() > 0


# -- the model is left as it was --------------------------------------------------------
def _state(model: nn.Module) -> tuple[Any, ...]:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.grad for p in model.parameters()],
        _hooks(model),
    )


def _assert_unchanged(model: nn.Module, before: tuple[Any, ...]) -> None:
    weights, training, grads, hooks = _state(model)
    assert weights.keys() == before[0].keys()
    assert all(torch.equal(weights[k], before[0][k]) for k in weights)  # BN stats too
    assert training == before[1]
    assert all(g is None for g in grads)
    assert hooks == before[3] and not any(any(h.values()) for h in hooks)


@pytest.mark.parametrize("gradients", [False, True])
def test_capture_leaves_model_unchanged(backend: Any, gradients: bool) -> None:
    model, example = CASES["resnet"].build(), CASES["resnet"].example()
    model.train()
    model.layer1.eval()  # a mixed train/eval model must stay mixed
    before = _state(model)
    reference = model.eval()(torch.tensor(example)).detach()
    model.train().layer1.eval()
    _, result = _capture(backend, model, example, gradients=gradients)
    _assert_unchanged(model, before)
    np.testing.assert_array_equal(result.outputs["output"], reference.numpy())


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.explode = False

    def forward(self, x: Any) -> Any:
        if self.explode:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("gradients", [False, True])
def test_no_hook_survives_an_exception(backend: Any, gradients: bool) -> None:
    model = nn.Sequential(nn.Linear(6, 6), _Exploding(), nn.ReLU())
    model.train()
    example = np.ones((3, 6), np.float32)
    graph = backend.graph(model, example)
    before = _state(model)
    model[1].explode = True
    session = backend.session(model, graph.nodes, gradients=gradients)
    with pytest.raises(RuntimeError, match="boom"), session:
        session.run({"input": example})
    _assert_unchanged(model, before)
    session.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        session.run({"input": example})


def test_no_hook_survives_a_failing_target(backend: Any) -> None:
    model, example = CASES["called_twice"].build(), CASES["called_twice"].example()
    graph = backend.graph(model, example)
    before = _state(model)

    def broken(outputs: Any, labels: Any) -> Any:
        raise ValueError("bad target")

    with backend.session(model, graph.nodes, gradients=True, target=resolve_target(broken)) as s:
        with pytest.raises(ValueError, match="bad target"):
            s.run({"x": example})
    _assert_unchanged(model, before)


# -- errors -----------------------------------------------------------------------------
def test_input_mismatch_is_one_clear_line(backend: Any) -> None:
    model, example = CASES["resnet"].build(), CASES["resnet"].example()
    graph = backend.graph(model, example)
    with backend.session(model, graph.nodes[:1]) as session:
        for bad in (example[:, :2], example.astype(np.int64), example[..., :4]):
            with pytest.raises(InputMismatchError) as info:
                session.run({"x": bad})
            assert "\n" not in str(info.value) and "(3, 8, 8)" in str(info.value)
        with pytest.raises(InputMismatchError, match="takes inputs"):
            session.run({"image": example})
        session.run({"x": example.astype(np.float64)})  # floats are cast
    assert isinstance(info.value, ValueError) and isinstance(info.value, TensortapError)
    with pytest.raises(InputMismatchError, match="do not fit TinyResNet") as info:
        backend.graph(CASES["resnet"].build(), np.zeros((2, 5, 8, 8), np.float32))
    assert "\n" not in str(info.value)


def test_unsupported_objects(backend: Any) -> None:
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        backend.graph(torch.jit.script(nn.Linear(2, 2)), np.zeros((2, 2), np.float32))
    with pytest.raises(UnsupportedModelError):
        backend.graph(object(), np.zeros((2, 2)))


# -- discovery, data, files --------------------------------------------------------------
def test_discovered_through_the_entry_point() -> None:
    found = {e.name: e.value for e in entry_points(group="tensortap.backends")}
    assert found["torch"] == "tensortap.backends.torch:TorchBackend"
    registry.refresh_backends()
    assert "torch" in registry.list_backends()
    assert isinstance(registry.get_backend("torch"), TorchBackend)
    assert isinstance(registry.backend_for(CASES["nested"].build()), TorchBackend)
    with pytest.raises(UnsupportedModelError):
        registry.backend_for(torch.zeros(2))  # a tensor is not a model
    assert TorchBackend.channels_last is False and TorchBackend.model_modules == ("torch",)


def test_batches_from_loader_dataset_and_tensor(backend: Any) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    x, y = torch.randn(5, 3), torch.arange(5)
    loader = list(backend.batches(DataLoader(TensorDataset(x, y), batch_size=2), 99))
    assert [b[0].shape[0] for b in loader] == [2, 2, 1]
    assert isinstance(loader[0][0], np.ndarray) and loader[2][1].tolist() == [4]
    inputs_only = list(backend.batches(TensorDataset(x), 4))
    assert [b.shape for b in inputs_only] == [(4, 3), (1, 3)]
    assert [b.shape[0] for b in backend.batches(x, 3)] == [3, 2]
    assert backend.batches(np.zeros(3), 2) is None
    pairs = TensorDataset(torch.randn(5, 3, 4, 4), torch.randn(5, 6), torch.arange(5))
    several = ([(image, extra), label] for image, extra, label in pairs)
    (inputs, labels), *_ = backend.batches(DataLoader(list(several), batch_size=4), 99)
    assert [a.shape for a in inputs] == [(4, 3, 4, 4), (4, 6)] and labels.shape == (4,)
    assert isinstance(inputs, list)  # the engine reads a list as one array per input


def test_capture_from_a_dataloader_of_two_inputs(backend: Any) -> None:
    from torch.utils.data import DataLoader

    import tensortap as tt

    model = CASES["two_inputs"].build()
    image, extra = CASES["two_inputs"].example()
    labels = np.array([0, 2, 1, 2])
    # no manual trace: capture hands the loader's first batch to graph(model, inputs=...)
    items = [((image[i], extra[i]), labels[i]) for i in range(len(labels))]
    run = tt.capture(
        model,
        DataLoader(items, batch_size=3),
        layers=["conv", "head"],
        gradients=True,
        target="label",
        batch_size=2,
        progress=False,
    )
    assert run.samples == 4 and run.input_names == ("image", "extra")
    np.testing.assert_array_equal(run.labels.values, labels)
    assert run.activation("conv").dims == ("sample", "channel", "height", "width")


def test_capture_traces_from_a_one_shot_generator() -> None:
    import tensortap as tt

    model = CASES["resnet"].build().eval()
    x = CASES["resnet"].example()
    batches = (x[i : i + 2] for i in range(0, len(x), 2))  # consumed once: nothing may be lost
    run = tt.capture(model, batches, layers="layer1", batch_size=2, progress=False)
    assert run.samples == len(x)
    with torch.no_grad():
        expected = model.layer1(model.relu(model.bn1(model.conv1(torch.from_numpy(x)))))
    np.testing.assert_array_equal(run.activation("layer1").values, expected.numpy())


def test_load_model_files(backend: Any, tmp_path: Path) -> None:
    model = CASES["nested"].build()
    whole, script, weights = tmp_path / "m.pt", tmp_path / "s.pt", tmp_path / "w.pth"
    torch.save(model, whole)
    torch.jit.script(model).save(str(script))
    torch.save(model.state_dict(), weights)
    assert TorchBackend.can_load(str(whole)) and not TorchBackend.can_load(str(tmp_path))
    with pytest.warns(UserWarning, match="trust"):
        loaded = backend.load_model(str(whole))
    x = torch.tensor(CASES["nested"].example())
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UnsupportedModelError, match="TorchScript"):
            backend.load_model(str(script))
        with pytest.raises(UnsupportedModelError, match="state_dict"):
            backend.load_model(str(weights))


# -- the conformance suite (tensortap.core.testing) ---------------------------------------
def _suite_case(case: Any) -> ModelCase:
    """Adapt a :class:`TorchCase` to the suite's ``ModelCase``.

    The suite calls ``backend.graph(model)`` without inputs, so the factory traces the
    model with its batch first, as ``capture`` does with the first batch
    (``TorchBackend.needs_example_inputs``).  The model is left in train mode, so every
    test also checks that capture restores the ``training`` flag.
    """

    def factory() -> tuple[Any, Any, Any]:
        model, example = case.build(), case.example()
        graph = TorchBackend().graph(model, example)
        inputs = dict(zip((s.name for s in graph.inputs), _as_tuple(example), strict=True))
        n_classes = int(graph.outputs[0].shape[-1])
        labels = np.random.default_rng(3).integers(0, n_classes, len(_as_tuple(example)[0]))
        return model.train(), inputs if len(inputs) > 1 else example, labels

    def reference(model: nn.Module, inputs: Any) -> dict[str, np.ndarray]:
        with torch.no_grad(), _eval(model):
            activations, _ = _reference(case, model, _positional(inputs))
        return {key: value.numpy() for key, value in activations.items()}

    def gradient_reference(
        model: nn.Module, inputs: Any, classes: np.ndarray
    ) -> dict[str, np.ndarray]:
        with _eval(model):
            activations, scores = _reference(case, model, _positional(inputs))
        values = scores.gather(1, torch.as_tensor(classes)[:, None]).sum()
        keys = list(activations)
        found = torch.autograd.grad(values, [activations[k] for k in keys], allow_unused=True)
        return {
            k: np.zeros(activations[k].shape, np.float32) if g is None else g.numpy()
            for k, g in zip(keys, found, strict=True)
        }

    return ModelCase(case.name, factory, reference, gradient_reference)


def _positional(inputs: Any) -> Any:
    return tuple(inputs.values()) if isinstance(inputs, dict) else inputs


class _eval:  # noqa: N801 - used like contextlib helpers
    """Eval mode for a reference computation, restoring every ``training`` flag after."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.flags = model, [(m, m.training) for m in model.modules()]

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, flag in self.flags:
            module.training = flag


class TestTorchBackendConformance(BackendTests):
    """The same suite the TensorFlow backend passes, on seven PyTorch models."""

    backend_cls = TorchBackend

    cases = tuple(_suite_case(case) for case in models.CASES)

    def predict(self, model: nn.Module, inputs: Any) -> list[np.ndarray]:
        from tensortap.backends._torch_util import output_items

        with torch.no_grad(), _eval(model):
            output = model(*(torch.tensor(x) for x in _as_tuple(_positional(inputs))))
        return [t.numpy() for _, t in output_items(output)]

    def weights(self, model: nn.Module) -> list[np.ndarray]:
        return [t.detach().numpy().copy() for t in model.state_dict().values()]

    def leak_probe(self, model: nn.Module) -> Any:
        return (
            [{n: list(getattr(m, n)) for n in HOOK_DICTS} for m in model.modules()],
            [m.training for m in model.modules()],
            [p.grad is None for p in model.parameters()],
        )

    def callable_target(self) -> Any:
        def first_output_sum(outputs: Any, labels: Any) -> Any:
            return _first(outputs).sum(dim=1)

        return first_output_sum


# -- end to end: engine, run store, CAM and views on a torch run ---------------------------
@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any, Path]:
    import tensortap as tt

    case = CASES["resnet"]
    model, x = case.build(), case.example()
    path = tmp_path_factory.mktemp("torch") / "resnet.zarr"
    run = tt.capture(
        model,
        x,
        store=str(path),
        layers=["layer1", "layer2", "fc"],
        gradients=True,
        batch_size=3,
        progress=False,
    )
    return model, x, run, path


def test_torch_run_opens_with_plain_xarray(resnet_run: Any) -> None:
    import xarray as xr

    model, x, run, path = resnet_run
    tree = xr.open_datatree(path, engine="zarr")
    activation = tree["layers/layer2/activation"]
    assert activation.dims == ("sample", "channel", "height", "width")
    assert tree.attrs["tensortap"]["framework"] == "torch"
    assert run.layers == ("layer1", "layer2", "fc") and run.samples == len(x)
    with torch.no_grad(), _eval(model):  # batch by batch: conv kernels block by batch size
        blocks = [_reference(CASES["resnet"], model, x[i : i + 3])[0] for i in (0, 3)]
    for key in ("layer2", "fc"):
        expected = np.concatenate([block[key].numpy() for block in blocks])
        np.testing.assert_array_equal(run.activation(key).values, expected, err_msg=key)


def test_gradcam_on_nchw_maps(resnet_run: Any) -> None:
    import tensortap as tt

    _, x, run, _ = resnet_run
    a, g = run.activation("layer2").values, run.gradient("layer2").values  # (n, c, h, w)
    expected = np.maximum((g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1), 0)
    raw = tt.cam(run, "layer2", upsample=False, normalize=False)
    assert raw.dims == ("sample", "y", "x")
    np.testing.assert_allclose(raw.values, expected, rtol=1e-5, atol=1e-6)
    full = tt.cam(run, "layer2", method="gradcam++", sample=0)
    assert full.shape == (1, *x.shape[2:])  # at the input's size, found from its dims
    assert 0.0 <= float(full.min()) and float(full.max()) <= 1.0


def test_feature_maps_view_on_nchw_maps(resnet_run: Any) -> None:
    pytest.importorskip("holoviews")
    from tensortap import viz

    _, _, run, _ = resnet_run
    grid = viz.feature_maps(run, "layer1", sample=1)
    n_channels = run.activation("layer1").sizes["channel"]
    assert len(grid) == n_channels
