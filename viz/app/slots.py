"""One view of the app: a container refilled by one builder, drawing in place when it can.

Replacing a pane's object builds a new Bokeh figure (axes, tools, glyphs, colour bar:
~100-300 ms, most of an interaction's budget); a frame of the same structure and size is
written into the existing models instead (:func:`~tensortap.viz.app.inplace.write_in_place`:
data, colour range, title), or, for what that cannot write, pushed through a
:class:`holoviews.streams.Pipe` (HoloViews then updates the models, slower).  A slot
therefore keeps, per frame shape it saw last, one pane showing a DynamicMap fed by a Pipe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn

from tensortap.core.errors import TensortapError
from tensortap.viz.app.inplace import write_in_place
from tensortap.viz.app.shared import reads

__all__ = ["KEPT_PLOTS", "ViewSlot", "frame_signature"]

log = logging.getLogger(__name__)

#: Plots kept per view, one per frame shape (layer) seen last; hidden ones cost memory in
#: the browser and the server, so only a few.
KEPT_PLOTS = 3
#: Plots per row when a view is a layout of several.
PLOTS_PER_ROW = 2


def frame_signature(obj: Any) -> tuple[Any, ...] | None:
    """What must not change between two frames drawn into one plot in place.

    ``None`` for objects a DynamicMap cannot hold (layouts, grids).  Otherwise the element
    types, dimensions, plot sizes and raster shapes: a frame that differs in any of these
    (another layer's mosaic, say) gets a new plot, since Bokeh figures keep their size and
    their axis ranges would not follow.
    """
    if isinstance(obj, hv.Overlay):
        elements = list(obj.values())
    elif isinstance(obj, hv.Element):
        elements = [obj]
    else:
        return None
    parts: list[Any] = [type(obj).__name__]
    for element in elements:
        if not isinstance(element, hv.Element):
            return None
        plot = element.opts.get("plot", backend="bokeh").kwargs
        size = tuple(plot.get(k) for k in ("width", "height", "frame_width", "frame_height"))
        shape = np.shape(element.data) if isinstance(element, hv.Image) else None
        parts.append(
            (
                type(element).__name__,
                element.group,
                element.label,
                tuple(d.name for d in element.dimensions()),
                size,
                shape,
            )
        )
    return tuple(parts)


def _panes(obj: Any, options: dict[str, Any]) -> pn.viewable.Viewable:
    """A layout as one pane per plot, two plots per row.

    A ``hv.Layout`` drawn as one Bokeh grid plot came out collapsed in the browser
    (zero-width plots, only fragments of titles: issue 16) though the same object exported
    to HTML was fine, and so did plots in CSS flex boxes; separate figures in Bokeh rows
    lay out like every other plot of the page, and two per row fit a 1280-px screen.
    """
    if not isinstance(obj, hv.Layout):
        return pn.pane.HoloViews(obj, **options)
    panes = [pn.pane.HoloViews(element, **options) for element in obj]
    rows = [pn.Row(*panes[i : i + PLOTS_PER_ROW]) for i in range(0, len(panes), PLOTS_PER_ROW)]
    return pn.Column(*rows, margin=0)


def _remember(dynamic: hv.DynamicMap, pipe: hv.streams.Pipe, obj: Any) -> None:
    """Make a frame written in place (not through the Pipe) the DynamicMap's current one.

    A pane drawn again (a tab shown anew) starts from the DynamicMap's cached frame, and a
    Tap re-evaluates it from the Pipe's data: both would show the last frame HoloViews
    drew instead.  Neither update redraws anything.
    """
    pipe.update(data=obj)
    for key in list(dynamic.data):
        dynamic.data[key] = obj


class ViewSlot:
    """A named place in the page and the builder that fills it.

    Parameters
    ----------
    name
        The view's name (``feature_maps``, ``cam_grid``…); its container carries the CSS
        class ``tt-<name with dashes>``.
    build
        Returns what to show: a HoloViews object, a Panel object, or raises
        :class:`TensortapError` for "this view cannot show this" (shown as a message).
    container
        The Panel column to fill (default: a new one).
    on_tap
        Called with ``(shown object, x, y)`` when a plot of this view is clicked (data
        coordinates), for click-through from tiles to samples.

    Attributes
    ----------
    container
        The Panel object placed in the layout.
    seconds
        How long the latest :meth:`draw` took.
    """

    def __init__(
        self,
        name: str,
        build: Callable[[], Any],
        container: pn.Column | None = None,
        on_tap: Callable[[Any, float | None, float | None], None] | None = None,
    ) -> None:
        self.name = name
        self.build = build
        self.on_tap = on_tap
        self.shown: Any = None  # the object drawn last, for on_tap
        # ``is None``, not ``or``: an empty Panel column is falsy.
        self.container = (
            container
            if container is not None
            else pn.Column(css_classes=[f"tt-{name.replace('_', '-')}"], margin=0)
        )
        self.seconds = 0.0
        # (pane showing a DynamicMap, its Pipe, the signature of the frames it can take)
        self._piped: list[tuple[pn.pane.HoloViews, hv.streams.Pipe, tuple[Any, ...]]] = []

    def clear(self) -> None:
        """Empty the slot (the run closed)."""
        self._piped = []
        self.container.objects = []

    def draw(self) -> None:
        """Build the view and show it, in place when a kept plot has its frame shape."""
        started = time.perf_counter()
        try:
            with reads():
                obj = self.build()
        except TensortapError as err:  # the view cannot show this: say why, in place
            obj = pn.pane.Alert(str(err), alert_type="warning", margin=(5, 5))
        except Exception as err:
            log.exception("view %s failed", self.name)
            obj = pn.pane.Alert(
                f"{self.name.replace('_', ' ')} failed: {type(err).__name__}: {err}",
                alert_type="danger",
                margin=(5, 5),
            )
        self.shown = obj
        if isinstance(obj, (hv.core.Dimensioned, hv.core.ViewableTree)):
            if not self._send(obj):
                self._show_new_plot(obj)
        else:  # a message or a Panel object: the plots kept for this view go
            self._piped = []
            if self.container.objects != [obj]:  # the same pane, updated by the builder
                self.container.objects = [obj]
        self.seconds = time.perf_counter() - started

    def _show_new_plot(self, obj: Any) -> None:
        """Show ``obj`` in a new plot; an element or overlay is shown through a DynamicMap
        fed by a Pipe, so that later frames of the same shape are drawn in place.

        The plots of the view's last few other frame shapes stay in the page, hidden:
        going back to a layer seen before (a frequent back-and-forth) then updates its
        plot instead of building one.
        """
        signature = frame_signature(obj)
        # linked_axes=False: Panel links the ranges of every plot in the page whose
        # dimensions share names, so a 6×6 zoomed map would crop the 12×12 tiles of
        # another view to its own range (blank panes, missing titles).
        options = {"backend": "bokeh", "linked_axes": False, "margin": (0, 5)}
        view = self.container
        if signature is None:  # a layout: no DynamicMap can hold it
            self._piped = []
            view.objects = [_panes(obj, options)]
            return
        pipe = hv.streams.Pipe(data=obj)
        streams: list[Any] = [pipe]
        if self.on_tap is not None:
            # Among the DynamicMap's own streams: a Tap given only ``source=`` was not
            # attached to the plot Panel drew (no tap event reached the server).
            tap = hv.streams.Tap(x=None, y=None)
            tap.add_subscriber(self._tapped)
            streams.append(tap)
        # Not memoized: a frame written in place reaches the Pipe without a trigger
        # (_remember), and a later evaluation (a click's Tap) must return it.
        dynamic = hv.DynamicMap(hv.Callable(lambda data, **_: data, memoize=False), streams=streams)
        pane = pn.pane.HoloViews(dynamic, **options)
        kept = [entry for entry in self._piped[: KEPT_PLOTS - 1] if entry[0] in view.objects]
        for entry in kept:
            entry[0].visible = False
        self._piped = [(pane, pipe, signature), *kept]
        view.objects = [pane, *(entry[0] for entry in kept)]

    def _tapped(self, x: float | None = None, y: float | None = None, **_: Any) -> None:
        if self.on_tap is not None:
            try:
                self.on_tap(self.shown, x, y)
            except Exception:  # a click must never break the page
                log.exception("view %s: click failed", self.name)

    def _send(self, obj: Any) -> bool:
        """Draw ``obj`` into a plot this view already has for frames of its shape.

        Returns whether it did (else the caller builds a new plot).
        """
        signature = frame_signature(obj)
        view = self.container
        match = next((e for e in self._piped if e[2] == signature and e[0] in view.objects), None)
        if signature is None or match is None:
            return False
        pane, pipe, _ = match
        try:
            written = write_in_place(pane, obj)
        except Exception:  # never worse than before: HoloViews redraws the whole frame
            log.debug("view %s: writing in place failed", self.name, exc_info=True)
            written = False
        if written:
            _remember(pane.object, pipe, obj)
        else:
            try:
                pipe.send(obj)
            except Exception:  # an update HoloViews cannot do in place: draw a new plot
                log.debug("view %s: in-place update failed, redrawing", self.name, exc_info=True)
                return False
        if self._piped[0] is not match:  # back to a hidden plot: show it, hide the others
            # Visibility only: reordering view.objects would make Panel walk every model
            # of the page again (~80 ms).
            for other, *_ in self._piped:
                other.visible = other is pane
            self._piped.remove(match)
            self._piped.insert(0, match)
        return True
