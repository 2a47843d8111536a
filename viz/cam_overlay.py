"""CAM overlays: the Grad-CAM family blended over the stored input, one sample or a grid.

The maps come from :func:`tensortap.core.cam.cam` at the layer's resolution; OpenCV
resizes them to the input (bilinear), colours them (JET) and blends them over the input.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import holoviews as hv
import numpy as np

from tensortap.core.cam import cam, input_size
from tensortap.core.errors import ViewError
from tensortap.viz._backend import style
from tensortap.viz._cam_text import explained_class, flat_note, target_summary
from tensortap.viz._colour import blend, heat_rgb, resize_map, to_rgb
from tensortap.viz._mosaic import rgb_mosaic
from tensortap.viz._run import check_sample, indexed, positions, sample_caption, stored_input

__all__ = ["cam_grid", "cam_overlay", "overlay_rgb"]


def overlay_rgb(image: np.ndarray | None, values: np.ndarray, alpha: float) -> np.ndarray:
    """A [0, 1] map coloured and blended over ``image`` (resized to it), as ``uint8`` RGB.

    With ``image=None`` the coloured map alone is returned.
    """
    if image is None:
        return heat_rgb(values)
    height, width = image.shape[:2]
    return blend(to_rgb(image), heat_rgb(resize_map(values, height, width)), alpha)


def _rgb(pixels: np.ndarray, title: str, compact: bool) -> hv.RGB:
    height, width = pixels.shape[:2]
    element = hv.RGB(pixels, bounds=(0, 0, width, height))
    size = 220 if compact else 420
    return style(
        element,
        title=title,
        xaxis=None,
        yaxis=None,
        bokeh={"width": size, "height": max(1, round(size * height / width)), "toolbar": None},
        matplotlib={"fig_size": 80 if compact else 150},
    )


def cam_overlay(
    run: Any,
    key: str,
    sample: int = 0,
    method: str = "gradcam",
    class_index: int | None = None,
    alpha: float = 0.5,
    *,
    compact: bool = False,
) -> hv.RGB:
    """A class activation map blended over the stored input of one sample.

    Parameters
    ----------
    run : tensortap.Run
        Captured with ``gradients=True``.
    key : str
        A spatial layer (typically the last convolution).
    sample : int
        Position among the committed samples.
    method : str
        ``gradcam``, ``gradcam++``, ``layercam``, ``hirescam`` or ``xgradcam``.
    class_index : int, optional
        Explain this class: in a run of several targets (``target=["predicted", "label"]``,
        ``"top3"``) the sample's target of that class; in a run of one target, a check
        that it is that target's class (:func:`tensortap.core.cam_info.choose_targets`).
    alpha : float
        Weight of the map in the blend, :math:`(1-\\alpha)\\,\\text{input} + \\alpha\\,\\text{map}`.

    Returns
    -------
    holoviews.RGB
        Without stored inputs: the coloured map alone at the input size, with a note in the
        title and a warning.
    """
    activation = run.activation(key)
    position = check_sample(int(activation.sizes["sample"]), sample)
    # indexed: one sample's activation and gradient read through zarr, no Dask graph.
    result = cam(
        indexed(run), key, method=method, sample=[position], upsample=False, class_index=class_index
    )
    values = result.values[0]
    image = stored_input(run, position)
    flat = flat_note(result, position)
    if flat and not compact:
        warnings.warn(result.attrs["warning"], stacklevel=2)
    # In a grid the method and layer are in the grid's title: tiles name the sample only.
    caption = (
        f"{sample_caption(run, position)}{flat}"
        if compact
        else f"{method} · {key} · {sample_caption(run, position)} · {explained_class(result)}{flat}"
    )
    if image is None:
        warnings.warn(
            f"the run kept no model inputs: showing the {method} map of {key!r} alone",
            stacklevel=2,
        )
        size = input_size(run)
        if size is not None:
            values = np.clip(resize_map(values, *size), 0.0, 1.0)
        return _rgb(
            overlay_rgb(None, values, alpha), f"{caption} (map only: no stored input)", compact
        )
    return _rgb(overlay_rgb(image, values, alpha), caption, compact)


def scale_tile() -> hv.Image:
    """The overlays' colour scale as a tile with a colour bar (RGB tiles carry none)."""
    ramp = np.linspace(1.0, 0.0, 64)[:, None] * np.ones((1, 8))  # row 0 is the top: 1
    image = hv.Image(
        ramp, bounds=(0, 0, 8, 64), vdims=[hv.Dimension("cam", label="map (normalised)")]
    )
    return style(
        image,
        cmap="jet",
        clim=(0.0, 1.0),
        colorbar=True,
        xaxis=None,
        yaxis=None,
        title="colour scale",
        bokeh={"width": 120, "height": 220, "toolbar": None},
        matplotlib={"fig_size": 80, "aspect": 0.3},
    )


def cam_grid(
    run: Any,
    key: str,
    samples: Sequence[int] | range | None = None,
    method: str = "gradcam",
    alpha: float = 0.5,
    cols: int | None = None,
    layout: Literal["grid", "mosaic"] = "grid",
) -> hv.Layout | hv.Overlay:
    """A grid of CAM overlays, one per sample, titled with sample, label and prediction.

    Parameters
    ----------
    samples : sequence of int, optional
        Positions among the committed samples (default: the first 9).
    cols : int, optional
        Columns of the grid (default: about square; ignored by the mosaic).
    layout : {"grid", "mosaic"}
        One figure per sample, or all overlays in ONE ``hv.RGB`` captioned by an
        ``hv.Labels`` overlay (one figure: cheap to draw in a served page).
    """
    if layout not in ("grid", "mosaic"):
        raise ViewError(f"layout must be 'grid' or 'mosaic', got {layout!r}")
    chosen = positions(int(run.activation(key).sizes["sample"]), samples, default=9)
    if not chosen:
        raise ViewError("no sample to show")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiles = [cam_overlay(run, key, p, method=method, alpha=alpha, compact=True) for p in chosen]
    # The facts of all tiles at once, at the layer's size (small): class, score, flat maps.
    summary = cam(indexed(run), key, method=method, sample=chosen, upsample=False)
    if summary.attrs["warning"]:
        caught.insert(0, warnings.WarningMessage(summary.attrs["warning"], UserWarning, "", 0))
    if caught:  # one warning for the grid, not one per tile
        warnings.warn(str(caught[0].message), stacklevel=2)
    flat = len(summary.attrs["flat_samples"])
    title = f"{method} · {key} · {target_summary(summary)}" + (
        f" · ⚠ {flat} of {len(chosen)} maps flat" if flat else ""
    )
    if layout == "mosaic":
        captions = [str(t.opts.get().kwargs.get("title", "")) for t in tiles]
        return rgb_mosaic([np.asarray(t.data) for t in tiles], captions, title)
    grid = hv.Layout([*tiles, scale_tile()]).cols(cols or max(1, math.ceil(math.sqrt(len(tiles)))))
    return style(
        grid,
        title=title,
        bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": ""},
    )
