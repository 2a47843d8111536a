"""Views in Jupyter with no extra call: HoloViews' notebook extension loaded on import.

A HoloViews object is shown as text (``:NdLayout [channel]``) until ``hv.extension(...)``
ran in the notebook.  Importing :mod:`tensortap.viz` inside a Jupyter kernel loads it
(Bokeh, the interactive back end); :func:`notebook` does the same explicitly, e.g. to
switch to Matplotlib.  Outside a kernel nothing happens.
"""

from __future__ import annotations

import os
import sys

import holoviews as hv

__all__ = ["in_jupyter_kernel", "notebook"]

#: Set to ``0`` to keep ``import tensortap.viz`` from loading the notebook extension.
AUTO_ENV = "TENSORTAP_NOTEBOOK"


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython over ZMQ), not a terminal."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and "ZMQ" in type(shell).__name__


def notebook(backend: str = "bokeh") -> None:
    """Load HoloViews' notebook extension, so views render as plots in Jupyter.

    Parameters
    ----------
    backend : {"bokeh", "matplotlib"}
        Bokeh (interactive; the default) or Matplotlib (static PNGs).
    """
    from tensortap.viz._backend import load_backends

    load_backends()
    hv.extension(backend)


def auto_notebook() -> bool:
    """Call :func:`notebook` once when imported inside a Jupyter kernel; returns whether."""
    if os.environ.get(AUTO_ENV, "1") == "0" or not in_jupyter_kernel():
        return False
    notebook()
    return True
