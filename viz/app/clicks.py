"""Which tile of a mosaic (:func:`tensortap.viz._mosaic.rgb_mosaic`) a click landed on."""

from __future__ import annotations

import math
from typing import Any

import holoviews as hv

from tensortap.viz._mosaic import grid_shape

__all__ = ["tile_at"]


def tile_at(mosaic: Any, x: float | None, y: float | None) -> int | None:
    """Index of the tile under ``(x, y)`` (data coordinates), ``None`` off the tiles.

    ``mosaic`` is ``hv.RGB * hv.Labels`` as :func:`rgb_mosaic` draws it: ``n`` tiles (one
    caption each), row by row in a near-square grid, separated by 1-pixel gaps, the image
    spanning ``x`` in ``[0, columns_px]`` and ``y`` in ``[0, rows_px]`` (row 0 at the top).
    """
    if x is None or y is None or not isinstance(mosaic, hv.Overlay):
        return None
    elements = list(mosaic.values())
    image = next((e for e in elements if isinstance(e, hv.RGB)), None)
    labels = next((e for e in elements if isinstance(e, hv.Labels)), None)
    if image is None or labels is None:
        return None
    n = len(labels)
    rows, columns = grid_shape(n)
    rows = max(1, math.ceil(n / columns))
    rows_px, columns_px = image.data.shape[:2] if hasattr(image.data, "shape") else (0, 0)
    if not rows_px:
        rows_px, columns_px = (int(s) for s in image.dimension_values(2, flat=False).shape[:2])
    tile_h, tile_w = (rows_px + 1) / rows, (columns_px + 1) / columns
    column = int(x // tile_w)
    row = int((rows_px - y) // tile_h)
    if not (0 <= column < columns and 0 <= row < rows):
        return None
    index = row * columns + column
    return index if index < n else None
