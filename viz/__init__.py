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
from tensortap.viz.cam_figure import cam_figure
from tensortap.viz.cam_overlay import cam_grid, cam_overlay
from tensortap.viz.compare import compare, compare_table
from tensortap.viz.distributions import (
    distribution,
    distributions,
    histogram_quantiles,
    layer_summary,
)
from tensortap.viz.explanations import explanation_overlay
from tensortap.viz.export import save
from tensortap.viz.faithfulness import faithfulness_ranking
from tensortap.viz.feature_maps import feature_map, feature_maps, feature_mosaic
from tensortap.viz.gallery import gallery
from tensortap.viz.notebook import auto_notebook, notebook
from tensortap.viz.steps import (
    compare_steps,
    dead_units_over_steps,
    histogram_over_steps,
    step_curves,
)
from tensortap.viz.top_samples import top_sample_positions, top_samples
from tensortap.viz.unit_distribution import unit_distributions
from tensortap.viz.units import dead_units, unit_health

__all__ = [
    "cam_figure",
    "cam_grid",
    "cam_overlay",
    "compare",
    "compare_steps",
    "compare_table",
    "dead_units",
    "dead_units_over_steps",
    "distribution",
    "distributions",
    "explanation_overlay",
    "faithfulness_ranking",
    "feature_map",
    "feature_maps",
    "feature_mosaic",
    "gallery",
    "histogram_over_steps",
    "histogram_quantiles",
    "layer_summary",
    "notebook",
    "save",
    "serve",
    "step_curves",
    "top_sample_positions",
    "top_samples",
    "unit_distributions",
    "unit_health",
]

#: Names of the served app, imported from viz/app/ on first use.
_SERVER = ("serve", "make_server", "TensortapApp", "RunCatalog")

load_backends()
auto_notebook()  # in Jupyter, views render as plots with no hv.extension() call


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        value = getattr(import_module("tensortap.viz.app"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tensortap.viz' has no attribute {name!r}")
