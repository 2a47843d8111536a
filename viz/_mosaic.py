"""Tiling many small maps or pictures into one array, so a grid is drawn as ONE plot.

A grid of ``n`` Bokeh figures costs ``n`` sets of models (figure, axes, tools, colour
mapper) built on the server and laid out in the browser; one image of the tiled pixels
costs one.  The server's grids (issue 5: ≤ 300 ms per interaction) are drawn this way.
"""

from __future__ import annotations

import math

import holoviews as hv
import numpy as np

from tensortap.viz._backend import style

__all__ = ["grid_shape", "rgb_mosaic", "tile", "tile_origin"]


def grid_shape(n: int) -> tuple[int, int]:
    """``(rows, columns)`` of a near-square grid of ``n`` tiles, filled row by row."""
    columns = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / columns)), columns


def tile_origin(index: int, columns: int, shape: tuple[int, int], gap: int = 1) -> tuple[int, int]:
    """Array ``(row, column)`` of the top-left pixel of tile ``index`` in :func:`tile`'s output."""
    row, column = divmod(index, columns)
    return row * (shape[0] + gap), column * (shape[1] + gap)


def tile(tiles: np.ndarray, columns: int, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """Lay ``tiles`` of shape ``(n, height, width[, ...])`` out row by row in one array.

    Parameters
    ----------
    tiles : ndarray, shape (n, height, width, ...)
        Tiles of equal shape; trailing dims (e.g. RGB) are kept.
    columns : int
        Tiles per row.
    gap : int
        Pixels of ``fill`` between tiles, so neighbouring maps do not read as one.
    fill : float
        Value of the gaps and of the unused cells of the last row (NaN: transparent in a
        colour-mapped image).

    Returns
    -------
    ndarray, shape (rows * (height + gap) - gap, columns * (width + gap) - gap, ...)
    """
    n, height, width = tiles.shape[:3]
    rows = max(1, math.ceil(n / columns))
    out = np.full(
        (rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles.shape[3:]),
        fill,
        dtype=np.result_type(
            tiles.dtype, np.min_scalar_type(fill) if np.isfinite(fill) else np.float32
        ),
    )
    for index in range(n):
        top, left = tile_origin(index, columns, (height, width), gap)
        out[top : top + height, left : left + width] = tiles[index]
    return out


def tile_labels(
    image: hv.Element,
    xs: list[float],
    ys: list[float],
    texts: list[str],
    name: str,
    alpha: float = 0.55,
) -> hv.Labels:
    """White captions on a dark band at each tile's top-left corner (one element)."""
    labels = hv.Labels((xs, ys, texts), kdims=image.kdims, vdims=[name])
    return style(
        labels,
        bokeh={
            "text_color": "white",
            "text_font_size": "8pt",
            "text_align": "left",
            "text_baseline": "top",
            "background_fill_color": "black",
            "background_fill_alpha": alpha,
        },
        matplotlib={
            "color": "white",
            "size": 6,
            "horizontalalignment": "left",
            "verticalalignment": "top",
        },
    )


def rgb_mosaic(
    pictures: list[np.ndarray], captions: list[str], title: str, px: int = 420
) -> hv.Overlay:
    """RGB pictures in one ``hv.RGB`` (white 1-pixel gaps), each captioned in its corner.

    Parameters
    ----------
    pictures : list of ndarray, shape (height, width, 3), uint8
        Tiles, row by row in a near-square grid; smaller ones are padded with white.
    captions : list of str
        One per picture, written in white on a dark box in its top-left corner.
    title : str
        The plot's title.
    px : int
        Screen pixels of the longer side of the plot area (Bokeh).

    Returns
    -------
    holoviews.Overlay
        ``hv.RGB * hv.Labels``: one figure.
    """
    shapes = {p.shape for p in pictures}
    if len(shapes) != 1:  # inputs of several sizes (a ragged run): pad to the largest
        height = max(p.shape[0] for p in pictures)
        width = max(p.shape[1] for p in pictures)
        pictures = [
            np.pad(
                p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0)), constant_values=255
            )
            for p in pictures
        ]
    stack = np.stack(pictures)
    _, columns = grid_shape(len(stack))
    height, width = stack.shape[1:3]
    pixels = tile(stack, columns, fill=255)  # white gaps
    rows_px, columns_px = pixels.shape[:2]
    # hv.RGB puts array row 0 at the top: y runs from rows_px (top) down to 0.
    image = hv.RGB(pixels, bounds=(0, 0, columns_px, rows_px))
    zoom = px / max(rows_px, columns_px)
    image = style(
        image,
        title=title,
        xaxis=None,
        yaxis=None,
        bokeh={
            "frame_width": max(1, round(columns_px * zoom)),
            "frame_height": max(1, round(rows_px * zoom)),
            "toolbar": None,
        },
        matplotlib={"fig_inches": 5, "aspect": columns_px / rows_px},
    )
    corners = [tile_origin(i, columns, (height, width)) for i in range(len(stack))]
    xs = [left + 0.5 for _, left in corners]
    text = tile_labels(image, xs, [rows_px - top - 0.5 for top, _ in corners], captions, "caption")
    return image * text
