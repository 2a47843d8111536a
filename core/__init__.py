"""Framework-free heart of tensortap: capture graph, selection, targets, engine, run store,
statistics and CAM math.  Nothing here imports a deep-learning framework or a plotting
library (tests/test_core_isolation.py)."""

from __future__ import annotations

from tensortap.core.backend import Backend, BatchResult, CaptureSession
from tensortap.core.graph import CaptureGraph, CaptureNode, TensorSpec, default_dims, make_key
from tensortap.core.registry import backend_for, get_backend, list_backends, register_backend
from tensortap.core.selection import select_nodes
from tensortap.core.targets import Target, resolve_target

__all__ = [
    "Backend",
    "BatchResult",
    "CaptureGraph",
    "CaptureNode",
    "CaptureSession",
    "Target",
    "TensorSpec",
    "backend_for",
    "default_dims",
    "get_backend",
    "list_backends",
    "make_key",
    "register_backend",
    "resolve_target",
    "select_nodes",
]
