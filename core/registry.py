"""Backend registry: built-ins plus the ``tensortap.backends`` entry-point group.

Modelled on xarray's engine registry and fsspec's ``known_implementations``: backends are
named by dotted paths and imported lazily, each with an install hint; third parties register
through an entry point; a plugin that fails to import is a warning, never a crash.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from tensortap.core.backend import Backend, model_type_modules
from tensortap.core.errors import BackendNotFoundError, UnsupportedModelError

__all__ = [
    "backend_for",
    "get_backend",
    "list_backends",
    "refresh_backends",
    "register_backend",
]

ENTRY_POINT_GROUP = "tensortap.backends"

_BUILTIN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (dotted path, install hint, model modules, checked without importing)
    "tensorflow": (
        "tensortap.backends.tensorflow:TensorFlowBackend",
        "pip install 'tensortap[tensorflow]'",
        ("keras", "tf_keras", "tensorflow"),
    ),
}
_registered: dict[str, tuple[str, str, tuple[str, ...]]] = {}
known_backends = MappingProxyType(_BUILTIN)


def register_backend(
    name: str, target: str | type[Backend], *, install_hint: str = "", clobber: bool = False
) -> None:
    """Register a backend by class or ``"module:Class"`` path.

    Raises
    ------
    ValueError
        When ``name`` is taken and ``clobber`` is false.
    """
    if not clobber and (name in _registered or name in _BUILTIN):
        raise ValueError(f"backend {name!r} is already registered; pass clobber=True to replace it")
    if isinstance(target, type):
        _CLASSES[name] = target
        target_path = f"{target.__module__}:{target.__qualname__}"
        modules = tuple(target.model_modules)
    else:
        target_path, modules = target, ()
    _registered[name] = (target_path, install_hint, modules)
    refresh_backends()


_CLASSES: dict[str, type[Backend]] = {}


@functools.lru_cache(maxsize=1)
def list_backends() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Every known backend: ``{name: (dotted path, install hint, model modules)}``."""
    found = dict(_BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in found:
            found[entry.name] = (
                entry.value,
                f"pip install {entry.dist.name if entry.dist else entry.name}",
                (),
            )
    found.update(_registered)
    return found


def refresh_backends() -> None:
    """Forget the cached entry-point scan (after installing a plugin)."""
    list_backends.cache_clear()
    _load.cache_clear()


@functools.cache
def _load(name: str) -> type[Backend] | None:
    if name in _CLASSES:
        return _CLASSES[name]
    path, hint, _ = list_backends()[name]
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except ImportError as err:
        warnings.warn(
            f"tensortap backend {name!r} is unavailable ({err}); to use it: {hint}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    except Exception as err:  # a broken plugin must not break tensortap
        warnings.warn(
            f"tensortap backend {name!r} failed to load: {err!r}", RuntimeWarning, stacklevel=3
        )
        return None
    return cls  # type: ignore[no-any-return]


def get_backend(name: str) -> Backend:
    """An instance of the backend called ``name``.

    Raises
    ------
    BackendNotFoundError
        When no backend has that name, or its framework is not installed.
    """
    backends = list_backends()
    if name not in backends:
        raise BackendNotFoundError(
            f"unknown backend {name!r}; must be one of: {sorted(backends)}. "
            "Third-party backends register under the 'tensortap.backends' entry point"
        )
    cls = _load(name)
    if cls is None:
        raise BackendNotFoundError(
            f"backend {name!r} cannot be imported; to use it: {backends[name][1]}"
        )
    return cls()


def backend_for(model: Any) -> Backend:
    """The backend that accepts ``model``, chosen from its class hierarchy.

    Raises
    ------
    UnsupportedModelError
        When no backend accepts the object.
    """
    modules = set(model_type_modules(model))
    for name, (_, _, declared) in list_backends().items():
        if declared and not modules & set(declared):
            continue  # decided without importing the framework
        cls = _load(name)
        if cls is not None and cls.accepts(model):
            return cls()
    raise UnsupportedModelError(
        f"{type(model).__module__}.{type(model).__qualname__} is not a model tensortap can "
        f"capture; pass a Keras model or a torch.nn.Module (backends: {sorted(list_backends())})"
    )
