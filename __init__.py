"""tensortap: capture, store and look at what every layer of a neural network computes.

>>> import tensortap as tt
>>> run = tt.capture(model, x, store="runs/exp.zarr", layers="conv*", gradients=True)
>>> tt.cam(run, "conv2d_1", method="gradcam")

See README.md and docs/ for the run-store format and the backend interface.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tensortap.core.errors import *  # noqa: F403  (the error classes are public API)
from tensortap.core.errors import __all__ as _error_names
from tensortap.core.graph import CaptureGraph, CaptureNode, TensorSpec
from tensortap.core.version import __version__ as __version__

# Public names imported on first use: `import tensortap` stays fast and framework-free.
_LAZY = {
    "capture": "tensortap.core.engine",
    "capture_distributed": "tensortap.core.distributed",
    "open_run": "tensortap.core.run",
    "Run": "tensortap.core.run",
    "cam": "tensortap.core.cam",
    "fused_cam": "tensortap.core.cam_fusion",
    "explain": "tensortap.core.explain",
    "attribute": "tensortap.core.attribution",
    "faithfulness": "tensortap.core.faithfulness",
    "read_explanation": "tensortap.core.explanation_store",
    "graph": "tensortap.core.engine",
    "CaptureCallback": "tensortap.backends.keras_callback",
    "Monitor": "tensortap.backends.torch_monitor",
    "Policy": "tensortap.core.training",
    "TrainingRun": "tensortap.core.training_run",
    "backend_for": "tensortap.core.registry",
    "get_backend": "tensortap.core.registry",
    "list_backends": "tensortap.core.registry",
    "register_backend": "tensortap.core.registry",
    "verify": "tensortap.core.verify",
    "viz": "tensortap.viz",
}

__all__ = [*sorted(_LAZY), "CaptureGraph", "CaptureNode", "TensorSpec", *_error_names]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tensortap' has no attribute {name!r}")
    module = import_module(_LAZY[name])
    value = module if name == "viz" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
