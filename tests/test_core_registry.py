"""Backend registry: built-ins, entry points, broken plugins, clobber refusal."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tensortap.core import registry
from tensortap.core.backend import Backend
from tensortap.core.errors import BackendNotFoundError, UnsupportedModelError


class ToyBackend(Backend):
    name = "toy"
    model_modules = ("toyframework",)

    def graph(self, model: Any) -> Any:
        raise NotImplementedError

    def session(
        self, model: Any, nodes: Any, *, gradients: bool = False, target: Any = None
    ) -> Any:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved = dict(registry._registered), dict(registry._CLASSES)
    registry.refresh_backends()
    yield
    registry._registered.clear()
    registry._registered.update(saved[0])
    registry._CLASSES.clear()
    registry._CLASSES.update(saved[1])
    registry.refresh_backends()


def fake_entry_points(*entries: tuple[str, str]) -> Any:
    def entry_points(group: str) -> list[Any]:
        assert group == registry.ENTRY_POINT_GROUP
        return [
            SimpleNamespace(name=n, value=v, dist=SimpleNamespace(name=f"{n}-plugin"))
            for n, v in entries
        ]

    return entry_points


def test_builtin_tensorflow_listed() -> None:
    assert "tensorflow" in registry.list_backends()
    assert registry.known_backends["tensorflow"][0].endswith(":TensorFlowBackend")
    with pytest.raises(TypeError):
        registry.known_backends["x"] = ("a", "b", ())  # type: ignore[index]


def test_entry_point_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry, "entry_points", fake_entry_points(("toy", f"{__name__}:ToyBackend"))
    )
    registry.refresh_backends()
    assert registry.list_backends()["toy"][1] == "pip install toy-plugin"
    assert isinstance(registry.get_backend("toy"), ToyBackend)


def test_broken_plugin_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points(
            ("missing", "tensortap_no_such_module:Backend"), ("bad", "tensortap.core.errors:Nope")
        ),
    )
    registry.refresh_backends()
    with pytest.warns(RuntimeWarning, match="missing.*unavailable.*pip install missing-plugin"):
        with pytest.raises(BackendNotFoundError, match="cannot be imported"):
            registry.get_backend("missing")
    with pytest.warns(RuntimeWarning, match="'bad' failed to load"):
        with pytest.raises(BackendNotFoundError):
            registry.get_backend("bad")


def test_register_and_clobber() -> None:
    registry.register_backend("toy", ToyBackend)
    assert isinstance(registry.get_backend("toy"), ToyBackend)
    with pytest.raises(ValueError, match="already registered; pass clobber=True"):
        registry.register_backend("toy", ToyBackend)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_backend("tensorflow", ToyBackend)
    registry.register_backend("toy", ToyBackend, clobber=True)


def test_unknown_name_and_unsupported_model() -> None:
    with pytest.raises(BackendNotFoundError, match="unknown backend 'nope'; must be one of"):
        registry.get_backend("nope")
    with pytest.raises(UnsupportedModelError, match="builtins.object is not a model"):
        registry.backend_for(object())


def test_backend_for_chooses_by_class_hierarchy() -> None:
    registry.register_backend("toy", ToyBackend)
    model = type("Net", (), {"__module__": "toyframework.nn"})()
    assert isinstance(registry.backend_for(model), ToyBackend)
