"""Views of tensortap runs: every function returns a HoloViews object.

>>> from tensortap import viz
>>> viz.save(viz.feature_maps(run, "conv2d", sample=0), "maps.png")    # doctest: +SKIP

Views read runs (or objects with the same reader API, docs/contracts.md), find dimensions by
name, and import no framework.  They style themselves for Bokeh (HTML, notebooks,
``tensortap serve``) and Matplotlib (PNG export without a browser).  The served app lives
in :mod:`tensortap.viz.app`; its names are imported on first use (Panel is heavy).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tensortap.viz._backend import load_backends
from tensortap.viz.cam_overlay import cam_grid, cam_overlay
from tensortap.viz.compare import compare, compare_table
from tensortap.viz.distributions import (
    distribution,
    distributions,
    histogram_quantiles,
    layer_summary,
)
from tensortap.viz.export import save
from tensortap.viz.feature_maps import feature_map, feature_maps, feature_mosaic
from tensortap.viz.gallery import gallery
from tensortap.viz.top_samples import top_sample_positions, top_samples
from tensortap.viz.units import dead_units, unit_health

__all__ = [
    "cam_grid",
    "cam_overlay",
    "compare",
    "compare_table",
    "dead_units",
    "distribution",
    "distributions",
    "feature_map",
    "feature_maps",
    "feature_mosaic",
    "gallery",
    "histogram_quantiles",
    "layer_summary",
    "save",
    "serve",
    "top_sample_positions",
    "top_samples",
    "unit_health",
]

#: Names of the served app, imported from viz/app/ on first use.
_SERVER = ("serve", "make_server", "TensortapApp", "RunCatalog")

load_backends()


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        value = getattr(import_module("tensortap.viz.app"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tensortap.viz' has no attribute {name!r}")
