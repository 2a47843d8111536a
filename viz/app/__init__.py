"""The served app, ``tensortap serve PATH`` (docs/design.md §5), split by what it shows.

In the spirit of ``tensorboard --logdir`` but with the full tensors:

* :mod:`.server` — the Bokeh server, one :class:`TensortapApp` per browser session;
* :mod:`.session` — the session: the open run, what the tabs share, live mode, the URL;
* :mod:`.state` — the view a URL carries (run, tab, layer, sample, channel, method…);
* :mod:`.sidebar` — run picker, layer list, sample (thumbnail, label, prediction) and
  channel;
* :mod:`.tabs` — one module per tab (feature maps, samples, distributions, CAM,
  compare), each a small class over the :mod:`tensortap.viz` functions;
* :mod:`.slots` — drawing a view when visible, in place when it can;
* :mod:`.summaries`, :mod:`.clicks` — the thumbnail and layer table; tile click-through.
"""

from __future__ import annotations

from tensortap.viz.app.server import make_server, serve
from tensortap.viz.app.session import TensortapApp
from tensortap.viz.app.state import ViewState
from tensortap.viz.app.summaries import input_thumbnail, layer_table
from tensortap.viz.app.tabs.cam import CAM_METHODS
from tensortap.viz.catalog import RunAccessError, RunCatalog, RunEntry, is_run_dir

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
