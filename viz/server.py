"""Former home of the served app, kept so ``tensortap.viz.server`` imports keep working;
the app lives in :mod:`tensortap.viz.app`."""

from __future__ import annotations

from tensortap.viz.app import (
    CAM_METHODS,
    RunAccessError,
    RunCatalog,
    RunEntry,
    TensortapApp,
    ViewState,
    input_thumbnail,
    is_run_dir,
    layer_table,
    make_server,
    serve,
)

__all__ = [
    "CAM_METHODS",
    "RunAccessError",
    "RunCatalog",
    "RunEntry",
    "TensortapApp",
    "ViewState",
    "input_thumbnail",
    "is_run_dir",
    "layer_table",
    "make_server",
    "serve",
]
