"""One CAM explained: the input, the map with its colour bar, and the overlay, side by side.

An overlay alone hides a small input (a JET map at α 0.5 over an 8 × 8 digit leaves
nothing of the digit) and, being RGB, carries no colour bar.  Side by side the input stays
readable at any size, the map shows its scale, and the titles say which class it explains.
"""

from __future__ import annotations

import warnings
from typing import Any

import holoviews as hv
import numpy as np

from tensortap.core.cam import cam
from tensortap.viz._backend import style
from tensortap.viz._cam_text import explained_class, flat_note
from tensortap.viz._colour import resize_map, to_rgb
from tensortap.viz._run import check_sample, sample_caption, stored_input
from tensortap.viz.cam_overlay import overlay_rgb

__all__ = ["CAM_CMAP", "cam_figure"]

#: The colour map of the map panel: JET, the same colours as the OpenCV overlay.
CAM_CMAP = "jet"
#: Screen pixels of each panel's longer side (Bokeh) and inches (Matplotlib).
_PANEL_PX, _PANEL_INCHES = 260, 3.0


def _picture(pixels: np.ndarray, title: str) -> hv.RGB:
    height, width = pixels.shape[:2]
    return style(
        hv.RGB(pixels, bounds=(0, 0, width, height)),
        title=title,
        xaxis=None,
        yaxis=None,
        bokeh={"width": _PANEL_PX, "height": max(1, round(_PANEL_PX * height / width))},
        matplotlib={"fig_inches": _PANEL_INCHES},
    )


def cam_figure(
    run: Any,
    key: str,
    sample: int = 0,
    method: str = "gradcam",
    class_index: int | None = None,
    alpha: float = 0.4,
) -> hv.Layout:
    """Input | CAM with its colour bar | overlay, for one sample, titled with what it explains.

    Parameters
    ----------
    run : tensortap.Run
        Captured with ``gradients=True``.
    key : str
        A spatial layer (a unique bare layer name works too).
    sample : int
        Position among the committed samples.
    method : str
        A key of :data:`tensortap.core.cam.CAM_METHODS`.
    class_index : int, optional
        Explain this class: in a run of several targets, the sample's target of that
        class; in a run of one target, a check that it is that target's class.
    alpha : float
        Weight of the map in the overlay (the input is also shown on its own).

    Returns
    -------
    holoviews.Layout
        Three panels (two when the run kept no inputs: the map and a note).  The map panel
        is an ``hv.Image`` in [0, 1] (cmap JET, colour bar labelled with the method); a map
        that is zero or constant everywhere is marked in the titles and warned about, with
        the cause (``tt.cam(...).attrs["warning"]``).
    """
    position = check_sample(int(run.activation(key).sizes["sample"]), sample)
    result = cam(
        run, key, method=method, sample=[position], upsample=False, class_index=class_index
    )
    flat = flat_note(result, position)
    if flat:
        warnings.warn(result.attrs["warning"], stacklevel=2)
    image = stored_input(run, position)
    values = result.values[0]
    if image is not None:
        values = np.clip(resize_map(values, *image.shape[:2]), 0.0, 1.0)
    height, width = values.shape
    heat = hv.Image(
        np.ascontiguousarray(values[::-1]),
        bounds=(0, 0, width, height),
        vdims=[hv.Dimension("cam", label=f"{method} (normalised)", range=(0.0, 1.0))],
    )
    heat = style(
        heat,
        cmap=CAM_CMAP,
        clim=(0.0, 1.0),
        colorbar=True,
        xaxis=None,
        yaxis=None,
        title=f"{explained_class(result)}{flat}",
        bokeh={"width": _PANEL_PX + 70, "height": round(_PANEL_PX * height / width)},
        matplotlib={"fig_inches": _PANEL_INCHES},
    )
    caption = sample_caption(run, position)
    panels: list[Any]
    if image is None:
        warnings.warn(
            f"the run kept no model inputs: showing the {method} map of {key!r} alone",
            stacklevel=2,
        )
        panels = [heat]
    else:
        panels = [
            _picture(to_rgb(image), "input"),  # the caption is the figure's title
            heat,
            _picture(overlay_rgb(image, values, alpha), f"overlay (α {alpha:g})"),
        ]
    layout = hv.Layout(panels).cols(len(panels))
    return style(
        layout,
        title=f"{method} · {key} · {caption}{flat}",
        bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": "", "hspace": 0.35},
    )
