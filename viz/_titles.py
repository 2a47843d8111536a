"""Titles that fit their plot in Bokeh: long titles wrapped onto lines the plot can hold.

Bokeh draws a title on the canvas in one line from the frame's left edge and cuts what
passes the canvas edge, so a nested layer key (``mobilenetv2_1.00_224.block_16_project``)
with a sample caption lost its end.  The wrap works from the plot's width and the title's
font size with a deliberately wide character estimate; ``tests/test_pictures_titles.py``
checks the result with the browser's own text measurement.
"""

from __future__ import annotations

import html
import re
from typing import Any

import holoviews as hv

__all__ = ["fit_titles", "wrap_title"]

#: Width of one character in ems: bold Helvetica/Arial averages about 0.5 em, so 0.62
#: errs towards a line too short rather than one that runs off the canvas.
_EM_PER_CHAR = 0.62
#: Room left of the frame (the y axis and its label) that the title's line starts after.
_LEFT_ROOM_PX = 64
#: Width of the ``Div`` that holds a layout's title (HoloViews' ``_get_title_div``).
_LAYOUT_TITLE_PX = 450
#: Where a long title may break: after a separator, a space, a dot or an underscore.
_BREAKS = re.compile(r"(?<= · )|(?<=[ ._/])")


def _font_px(size: Any) -> float:
    """``'16px'`` or ``'12pt'`` (Bokeh's ``text_font_size``) in pixels; 16 when unknown."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(px|pt)?\s*", str(size or ""))
    if not match:
        return 16.0
    value = float(match.group(1))
    return value * 4 / 3 if match.group(2) == "pt" else value


def wrap_title(text: str, max_chars: int) -> str:
    """``text`` on lines of at most ``max_chars`` characters, broken at separators first.

    Parameters
    ----------
    text : str
        The title; line breaks already in it are kept.
    max_chars : int
        Longest line allowed (at least 8).

    Returns
    -------
    str
        The title with ``"\\n"`` between lines; a piece with no break point longer than a
        line is cut at ``max_chars``.
    """
    max_chars = max(8, max_chars)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for piece in (p for p in _BREAKS.split(paragraph) if p):
            while len(piece) > max_chars:  # no break point: cut it
                if line:
                    lines.append(line.rstrip())
                    line = ""
                lines.append(piece[:max_chars])
                piece = piece[max_chars:]
            if len(line) + len(piece.rstrip()) > max_chars and line:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)


def _fit(plot: Any, element: Any) -> None:
    """HoloViews hook: wrap the Bokeh figure's title to the figure's width."""
    figure = plot.state
    title = getattr(figure, "title", None)
    text = getattr(title, "text", None)
    if not text:
        return
    width = figure.width or (figure.frame_width and figure.frame_width + _LEFT_ROOM_PX)
    if not width:
        return
    char_px = _EM_PER_CHAR * _font_px(title.text_font_size)
    max_chars = int((width - _LEFT_ROOM_PX) / char_px)
    title.text = wrap_title(text, max_chars)


def fit_titles(obj: Any) -> Any:
    """A copy of ``obj`` whose Bokeh plots wrap their titles to fit their width.

    Parameters
    ----------
    obj : holoviews object
        A view; elements, overlays and the elements of layouts each get the hook.

    Returns
    -------
    holoviews object
        The same view with a ``hooks`` option added for the Bokeh back end.
    """

    def add_hook(part: Any) -> Any:
        hooks = list(hv.Store.lookup_options("bokeh", part, "plot").kwargs.get("hooks", []))
        if _fit not in hooks:
            hooks.append(_fit)
        return part.opts(hooks=hooks, backend="bokeh", clone=True)

    if isinstance(obj, (hv.Element, hv.Overlay)):
        return add_hook(obj)
    obj = obj.map(add_hook, [hv.Element, hv.Overlay])
    if isinstance(obj, (hv.Layout, hv.NdLayout, hv.GridSpace)):
        obj = _wrap_layout_title(obj)
    return obj


def _wrap_layout_title(layout: Any) -> Any:
    """The layout's title as HTML lines that fit the ``Div`` HoloViews puts it in.

    That ``Div`` is 450 px wide and does not wrap (``white-space: nowrap``), so a long
    title ran past it and past a narrow grid; ``<br>`` breaks it, and escaping keeps a
    ``<`` in a title (``max <= 0``) from being read as a tag.
    """
    title = hv.Store.lookup_options("bokeh", layout, "plot").kwargs.get("title")
    if not title or "{" in str(title):  # HoloViews' own format string: left as it is
        return layout
    max_chars = int(_LAYOUT_TITLE_PX / (_EM_PER_CHAR * _font_px("12pt")))
    lines = wrap_title(str(title), max_chars).split("\n")
    return layout.opts(
        title="<br>".join(html.escape(x) for x in lines), backend="bokeh", clone=True
    )
