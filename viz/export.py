"""Export a view: PNG through Matplotlib (no browser), or self-contained HTML through Bokeh.

HTML inlines BokehJS (``bokeh.resources.INLINE``, about 3 MB), so a report opens on a
machine without network; :func:`save` checks the written page holds no external script.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import re
from pathlib import Path
from typing import Any

import holoviews as hv

from tensortap.core.errors import ViewError
from tensortap.viz._backend import has_matplotlib, load_backends
from tensortap.viz._titles import fit_titles

__all__ = ["save"]

#: Margin around the drawn area of a PNG, in inches.
_PAD = 0.15
#: ``<script ... src="http...">`` or ``src="//cdn..."``: a page that would need the network.
EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)
#: Panel's own stylesheets and icons, which its ``save`` leaves on its CDN even with
#: INLINE resources (holoviz/panel#6759): ``ImportedStyleSheet`` URLs and favicon links.
PANEL_CDN = re.compile(
    r"https://cdn\.holoviz\.org/panel/[^/\"']+/dist/([^\"'?\s)\\]+)(\?[^\"'\s)\\]*)?"
)


def save(
    obj: Any,
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Write a view to ``path``: ``.png`` (Matplotlib) or ``.html`` (Bokeh, inline resources).

    Parameters
    ----------
    obj : holoviews object
        What a ``viz`` function returned.  A ``DynamicMap`` needs a live Python process:
        index one frame first (``dmap[layer, sample, channel]``).
    path : str or Path
        Ends in ``.png`` or ``.html``.
    width, height : int, optional
        PNG size in pixels.  One of them scales the figure's natural size (its aspect
        and layout kept); both set the figure to exactly that size.  Ignored for HTML.
    dpi : int
        PNG resolution when no size is given.
    title : str, optional
        Title of the HTML page.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html"):
        raise ViewError(f"cannot export to {path.name!r}: the file must end in .png or .html")
    if isinstance(obj, hv.DynamicMap):
        raise ViewError(
            "a DynamicMap is live and cannot be exported: index one frame first, "
            "e.g. viz.feature_map(run)[layer, sample, channel]"
        )
    if not isinstance(obj, hv.core.Dimensioned):
        raise ViewError(
            f"cannot export {type(obj).__name__}: pass what a tensortap.viz function returns"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    load_backends()
    if suffix == ".html":
        _save_html(obj, path, title)
    else:
        _save_png(obj, path, width, height, dpi)
    return path


def _save_html(obj: Any, path: Path, title: str | None) -> None:
    from bokeh.resources import INLINE

    obj = fit_titles(obj)  # Bokeh cuts a title at the canvas edge: wrap it instead
    hv.save(obj, str(path), backend="bokeh", resources=INLINE, title=title or "tensortap")
    text = _inline_panel_assets(path.read_text(encoding="utf-8", errors="replace"))
    path.write_text(text, encoding="utf-8")
    leftover = PANEL_CDN.search(text) or EXTERNAL_SCRIPT.search(text)
    if leftover:  # would break offline: refuse rather than ship it
        raise ViewError(
            f"{path} references {leftover.group(0)!r}; the export is not self-contained"
        )


def _inline_panel_assets(text: str) -> str:
    """Replace Panel's CDN stylesheet and icon URLs by ``data:`` URIs of its bundled files."""
    import panel

    dist = Path(panel.__file__).parent / "dist"

    def data_uri(match: re.Match[str]) -> str:
        local = dist / match.group(1)
        if not local.is_file():
            return match.group(0)  # left for the check above to report
        mime = mimetypes.guess_type(local.name)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(local.read_bytes()).decode('ascii')}"

    return PANEL_CDN.sub(data_uri, text)


def _save_png(obj: Any, path: Path, width: int | None, height: int | None, dpi: int) -> None:
    if not has_matplotlib():
        raise ViewError(
            "PNG export needs Matplotlib: pip install 'tensortap[viz]' (or export .html)"
        )
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    figure = hv.render(obj, backend="matplotlib")
    canvas = FigureCanvasAgg(figure)  # HoloViews leaves a bare canvas that cannot measure text
    buffer = io.BytesIO()
    try:
        if width and height:  # exactly this size: the figure is laid out for it
            figure.set_size_inches(width / dpi, height / dpi)
            figure.savefig(buffer, dpi=dpi, format="png", facecolor="white")
        else:
            # Crop to what is drawn (HoloViews' figures leave titles hanging out or wide
            # margins); a requested width or height scales the resolution, not the layout.
            bbox = figure.get_tightbbox(canvas.get_renderer()).padded(_PAD)
            if width or height:
                dpi = width / bbox.width if width else height / bbox.height  # type: ignore[operator]
            figure.savefig(buffer, dpi=dpi, format="png", facecolor="white", bbox_inches=bbox)
    finally:
        plt.close(figure)
    image = Image.open(buffer)
    if width or height:  # the crop rounds to whole pixels: fix the last one or two
        w, h = image.size
        size = (width or round(w * height / h), height or round(h * width / w))  # type: ignore[operator]
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
    image.save(path, format="PNG")
