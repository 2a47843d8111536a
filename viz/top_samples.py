"""The samples that most excite one channel (Zeiler & Fergus' "dataset examples").

Ranking uses the stored per-sample statistic ``sample_max(sample, channel)`` — one small
array per layer — so finding the top ``k`` of a run of many GB reads ``k`` samples, not the
run.  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
https://arxiv.org/abs/1311.2901
"""

from __future__ import annotations

import math
from typing import Any

import holoviews as hv
import numpy as np
from tensortap.core.errors import ViewError
from tensortap.viz._backend import style
from tensortap.viz._colour import to_rgb
from tensortap.viz._run import check_channel, layer_map, sample_caption, stored_input
from tensortap.viz.cam_overlay import overlay_rgb

__all__ = ["top_sample_positions", "top_samples"]


def top_sample_positions(run: Any, key: str, channel: int, k: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` samples with the largest ``sample_max`` of one channel.

    Returns
    -------
    positions, maxima : ndarray
        Positions among the committed samples, strongest first (ties by position), and
        each one's channel maximum.
    """
    stats = run.stats(key)
    sample_max = stats["sample_max"]
    n_channels = int(sample_max.sizes["channel"])
    channel = check_channel(key, n_channels, channel)
    if k < 1:
        raise ViewError(f"k must be at least 1, got {k}")
    values = np.asarray(sample_max.isel(channel=channel).values, dtype=np.float64)
    ranked = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:k]
    return ranked, values[ranked]


def top_samples(run: Any, key: str, channel: int, k: int = 9, alpha: float = 0.5) -> hv.Layout:
    """A grid of the stored inputs that most excite ``channel`` of layer ``key``.

    Each tile is the input with the channel's map (min-max scaled within the tile) blended
    over it; without stored inputs, the map alone; for a dense layer, the input alone.

    Parameters
    ----------
    run : tensortap.Run
    key : str
        Layer key.
    channel : int
        Channel (or unit) index.
    k : int
        Number of samples, strongest first.
    alpha : float
        Weight of the map in the blend.
    """
    ranked, maxima = top_sample_positions(run, key, channel, k)
    activation = run.activation(key)
    spatial = "height" in activation.dims and "width" in activation.dims
    # Read the k samples in storage order (one pass over the chunks), then restore the rank.
    maps: list[np.ndarray | None] = [None] * len(ranked)
    if spatial:
        order = np.argsort(ranked)
        block = activation.isel(sample=ranked[order].tolist())
        for j, i in enumerate(order.tolist()):
            one = layer_map(block.isel(sample=j), key)
            maps[i] = np.asarray(one.isel(channel=channel).values, dtype=np.float64)
    tiles = []
    for rank, (position, value) in enumerate(zip(ranked.tolist(), maxima, strict=True)):
        image = stored_input(run, position)
        values = maps[rank]
        if values is not None:  # the channel's map, scaled within the tile, over the input
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
            pixels = overlay_rgb(image, scaled, alpha)
        elif image is not None:  # a dense unit has no map: the input alone
            pixels = to_rgb(image)
        else:
            raise ViewError(
                f"layer {key!r} has no spatial map and the run kept no inputs: nothing to show"
            )
        height, width = pixels.shape[:2]
        title = f"#{rank + 1} {sample_caption(run, position)} · max {value:.3g}"
        tile = hv.RGB(pixels, bounds=(0, 0, width, height))
        tiles.append(
            style(
                tile, title=title, xaxis=None, yaxis=None,
                bokeh={"width": 200, "height": max(1, round(200 * height / width)), "toolbar": None},
                matplotlib={"fig_size": 80},
            )
        )
    layout = hv.Layout(tiles).cols(max(1, math.ceil(math.sqrt(len(tiles)))))
    return style(
        layout,
        title=f"top {len(tiles)} samples of {key} channel {channel} (by stored per-sample max)",
        bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": ""},
    )
