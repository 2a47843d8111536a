"""Plotting back ends for the views: Bokeh for HTML and serving, Matplotlib for PNG.

Every view styles its elements for both back ends (:func:`style`), so the same object
renders in a notebook or ``tensortap serve`` (Bokeh) and exports to PNG without a browser
(Matplotlib, Agg).  Loading both is done once, here, without changing a notebook's chosen
back end: HoloViews' ``Store.current_backend`` is left as the user (or Bokeh) set it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import holoviews as hv

__all__ = ["has_matplotlib", "load_backends", "style"]

T = TypeVar("T", bound=hv.core.Dimensioned)


@cache
def has_matplotlib() -> bool:
    """Whether Matplotlib (PNG export) is installed; it is part of the ``viz`` extra."""
    try:
        import matplotlib
    except ImportError:
        return False
    # Agg draws without a display; set before pyplot is imported anywhere.
    if "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    return True


@cache
def load_backends() -> tuple[str, ...]:
    """Register the Bokeh and (if installed) Matplotlib plotting extensions; returns their names."""
    current = hv.Store.current_backend if hv.Store.renderers else None
    import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh renderer and options)

    names = ["bokeh"]
    if has_matplotlib():
        import holoviews.plotting.mpl  # noqa: F401

        names.append("matplotlib")
    hv.Store.set_current_backend(current or "bokeh")
    return tuple(names)


def style(
    obj: T,
    *,
    bokeh: dict[str, Any] | None = None,
    matplotlib: dict[str, Any] | None = None,
    **common: Any,
) -> T:
    """Apply ``common`` options plus back-end specific ones to every loaded back end.

    Parameters
    ----------
    obj : holoviews object
        Styled in place (HoloViews ``.opts`` semantics) and returned.
    bokeh, matplotlib : dict, optional
        Options only one back end knows (``width``/``tools`` vs ``fig_inches``/``aspect``).
    **common
        Options both back ends understand (``cmap``, ``clim``, ``colorbar``, ``title``...).
    """
    extra = {"bokeh": bokeh or {}, "matplotlib": matplotlib or {}}
    for backend in load_backends():
        options = {**common, **extra[backend]}
        if options:
            obj.opts(backend=backend, **options)
    return obj
