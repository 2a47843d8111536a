"""Draw a new frame into the Bokeh models already on screen, without HoloViews.

A frame pushed through a Pipe'd DynamicMap still goes through HoloViews' whole update
(options, ranges, styles, glyph properties: 30-50 ms per plot in the serve benchmark)
though only the data, colour range and title differ.  When the new frame has the kind,
options and bounds of the one on screen, :func:`write_in_place` writes just those into
the plot's ``ColumnDataSource``, colour mapper and title; anything else is left to the
caller's normal update.

Handled: ``hv.Image`` (any value dimensions), ``hv.RGB``, ``hv.Labels`` and overlays of
them, drawn into a ``pn.pane.HoloViews`` (of a DynamicMap or not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import holoviews as hv
import numpy as np

__all__ = ["write_in_place"]

#: Options a new frame may change: written below.  Any other option must be equal.
_WRITTEN = {"title", "clim", "cmap"}


def write_in_place(pane: Any, obj: Any) -> bool:
    """Write ``obj`` into the Bokeh models that ``pane`` shows, if it has the same kind.

    Parameters
    ----------
    pane
        A ``pn.pane.HoloViews`` whose plot is drawn (has Bokeh models).
    obj
        The new frame: an element or overlay like the one the plot drew.

    Returns
    -------
    bool
        Whether every model of every root was written; ``False`` (nothing written) for a
        frame of another kind, options or bounds, or a pane not drawn yet.
    """
    plots = [plot for plot, _ in getattr(pane, "_plots", {}).values()]
    if not plots:
        return False
    writes: list[Callable[[], None]] = []
    for plot in plots:
        planned = _plan(plot, obj)
        if planned is None:
            return False
        writes.extend(planned)
    document = plots[0].document
    _dispatch(document, lambda: [write() for write in writes])
    return True


def _dispatch(document: Any, write: Callable[[], Any]) -> None:
    """Run ``write`` the way HoloViews runs its own updates: at once when this session's
    document may be changed now (its events then go straight to the browser), else on
    the session's next tick."""
    from panel.io.document import unlocked
    from panel.io.state import state

    if (
        document is not None
        and document.session_context is not None
        and not state._unblocked(document)
    ):
        document.add_next_tick_callback(write)
        return
    with unlocked():
        write()


def _pairs(plot: Any, obj: Any) -> list[tuple[Any, hv.Element]] | None:
    """(element plot, new element) for each element of ``obj``; ``None`` if they differ
    from what the plot drew."""
    current = plot.current_frame
    if type(current) is not type(obj):
        return None
    if isinstance(obj, hv.Overlay):
        subplots = list(plot.subplots.values())
        elements = list(obj.values())
        if len(subplots) != len(elements):
            return None
        return list(zip(subplots, elements, strict=True))
    return [(plot, obj)]


def _plan(plot: Any, obj: Any) -> list[Callable[[], None]] | None:
    """The writes that draw ``obj`` into ``plot`` (computed first: nothing is written
    unless every part can be)."""
    pairs = _pairs(plot, obj)
    if pairs is None or not _same_options(plot.current_frame, obj, outer=True):
        return None
    writes = []
    for subplot, element in pairs:
        old = subplot.current_frame
        if (
            type(old) is not type(element)
            or _labels(old) != _labels(element)
            or getattr(subplot, "invert_axes", False)
            or not _same_options(old, element)
        ):
            return None
        write = _element_write(subplot, old, element)
        if write is None:
            return None
        writes.append(write)
    title = _title(obj)
    figure = plot.handles.get("plot")
    if figure is not None and figure.title is not None:
        if title is None:  # HoloViews would make one up (from labels): only "" is kept
            if figure.title.text or _title(plot.current_frame) is not None or obj.label:
                return None
        elif "{" in title:  # a template HoloViews would fill in
            return None
        else:
            writes.append(lambda: _set(figure.title, text=title))
    return writes


def _labels(element: hv.Element) -> list[tuple[str, str, Any]]:
    """What the axes, colour bar and hover tool print of the element's dimensions."""
    return [(d.name, d.label, d.unit) for d in element.dimensions()]


def _options(element: Any) -> dict[str, Any]:
    opts = element.opts.get("plot", backend="bokeh").kwargs
    return {**opts, **element.opts.get("style", backend="bokeh").kwargs}


def _same_options(old: Any, new: Any, *, outer: bool = False) -> bool:
    """Whether two frames differ at most in the options written here.

    For an overlay (``outer``) only its own options: its elements are compared one by
    one.
    """
    if outer and not isinstance(new, hv.Overlay):
        return True

    def kept(element: Any) -> dict[str, Any]:
        return {k: v for k, v in _options(element).items() if k not in _WRITTEN}

    try:
        return bool(kept(old) == kept(new))
    except (TypeError, ValueError):  # options that do not compare (arrays): redraw
        return False


def _title(obj: Any) -> str | None:
    """The title the frame asks for: the overlay's own, else its first element's."""
    parts = list(obj.values()) if isinstance(obj, hv.Overlay) else []
    for element in [obj, *parts]:
        title = element.opts.get("plot", backend="bokeh").kwargs.get("title")
        if title is not None:
            return str(title)
    return None


def _element_write(plot: Any, old: hv.Element, new: hv.Element) -> Callable[[], None] | None:
    source = plot.handles.get("source")
    if source is None:
        return None
    if isinstance(new, (hv.Image, hv.RGB)):
        if old.bounds.lbrt() != new.bounds.lbrt():  # the axis ranges would not follow
            return None
        data = _rgb_data(new) if isinstance(new, hv.RGB) else _image_data(new, source.data)
        if data is None:
            return None
    elif isinstance(new, hv.Labels):
        data, _, _ = plot.get_data(new, {}, {})
    else:
        return None
    if set(data) != set(source.data):
        return None
    mapper = None
    if isinstance(new, hv.Image) and not isinstance(new, hv.RGB):  # RGB: no colour mapper
        mapper = _mapper_update(plot, new)
        if mapper is None:
            return None

    def write() -> None:
        source.data = data
        if mapper:
            _set(plot.handles["color_mapper"], **mapper)

    return write


def _image_data(element: hv.Image, shown: dict[str, Any]) -> dict[str, Any] | None:
    """What HoloViews' ImagePlot puts in its source: the first value dimension as
    ``image``, the others (hover columns) under their names, and the bounds."""
    from holoviews.core.util import dimension_sanitizer

    left, bottom, right, top = element.bounds.lbrt()
    data: dict[str, Any] = {"x": [left], "y": [bottom], "dw": [right - left], "dh": [top - bottom]}
    for i, vdim in enumerate(element.vdims):
        key = "image" if i == 0 else dimension_sanitizer(vdim.name)
        if key not in shown:  # HoloViews sends extra value dims only with a hover tool
            continue
        values = element.dimension_values(vdim, flat=False)
        if values.dtype.kind == "b":
            values = values.astype(np.int8)
        if 0 in values.shape:
            return None
        data[key] = [values]
    return data


def _rgb_data(element: hv.RGB) -> dict[str, Any] | None:
    """What HoloViews' RGBPlot puts in its source: RGBA bytes packed in uint32."""
    pixels = np.dstack([element.dimension_values(d, flat=False) for d in element.vdims])
    if pixels.ndim != 3 or 0 in pixels.shape:
        return None
    missing = np.isnan(pixels) if pixels.dtype.kind == "f" else None
    if pixels.dtype.kind == "f":
        pixels = np.where(missing, 0.0, pixels)
        if pixels.max() <= 1:
            pixels = pixels * 255
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.shape[2] == 3:
        pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    packed = np.ascontiguousarray(pixels).view(np.uint32).reshape(pixels.shape[:2])
    if missing is not None:
        packed[missing.any(axis=-1)] = 0
    left, bottom, right, top = element.bounds.lbrt()
    return {
        "image": [packed],
        "x": [left],
        "y": [bottom],
        "dw": [right - left],
        "dh": [top - bottom],
    }


def _mapper_update(plot: Any, element: hv.Image) -> dict[str, Any] | None:
    """The colour mapper's new ``low``, ``high`` and ``palette``; ``None`` when the frame
    leaves its range to HoloViews (no finite ``clim``) or uses colour levels."""
    from holoviews.plotting.util import process_cmap

    if "color_mapper" not in plot.handles or plot.color_levels is not None:
        return None
    options = _options(element)
    clim = options.get("clim")
    if clim is None or not all(np.isfinite(c) for c in clim):
        return None
    update: dict[str, Any] = {"low": float(clim[0]), "high": float(clim[1])}
    cmap = options.get("cmap")
    if cmap is not None:
        update["palette"] = process_cmap(cmap, None)
    return update


def _set(model: Any, **values: Any) -> None:
    """Set only the properties that change (each change is a message to the browser)."""
    changed = {k: v for k, v in values.items() if getattr(model, k) != v}
    if changed:
        model.update(**changed)
