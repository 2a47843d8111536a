"""Tiling many small maps or pictures into one array, so a grid is drawn as ONE plot.

A grid of ``n`` Bokeh figures costs ``n`` sets of models (figure, axes, tools, colour
mapper) built on the server and laid out in the browser; one image of the tiled pixels
costs one.  The server's grids (issue 5: ≤ 300 ms per interaction) are drawn this way.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["grid_shape", "tile", "tile_origin"]


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
        dtype=np.result_type(tiles.dtype, np.min_scalar_type(fill) if np.isfinite(fill) else np.float32),
    )
    for index in range(n):
        top, left = tile_origin(index, columns, (height, width), gap)
        out[top : top + height, left : left + width] = tiles[index]
    return out
