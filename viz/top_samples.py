"""The samples that most excite one channel (Zeiler & Fergus' "dataset examples").

Ranking uses the stored per-sample statistic ``sample_max(sample, channel)`` — one small
array per layer — so finding the top ``k`` of a run of many GB reads ``k`` samples, not the
run.  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
https://arxiv.org/abs/1311.2901
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import holoviews as hv
import numpy as np

from tensortap.core.errors import ViewError
from tensortap.core.graph import channel_dim
from tensortap.core.sample_reads import take_samples
from tensortap.core.unit_health import is_derived
from tensortap.viz._backend import style
from tensortap.viz._colour import to_rgb
from tensortap.viz._mosaic import rgb_mosaic
from tensortap.viz._run import (
    _sample_index,
    check_channel,
    indexed,
    sample_caption,
    stored_inputs,
)
from tensortap.viz.cam_overlay import overlay_rgb

__all__ = ["top_sample_positions", "top_samples"]


def top_sample_positions(
    run: Any, key: str, channel: int, k: int = 9
) -> tuple[np.ndarray, np.ndarray]:
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


def top_samples(
    run: Any,
    key: str,
    channel: int,
    k: int = 9,
    alpha: float = 0.5,
    layout: Literal["grid", "mosaic"] = "grid",
) -> hv.Layout | hv.Overlay:
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
    layout : {"grid", "mosaic"}
        One titled figure per sample, or every tile in ONE ``hv.RGB`` (a white 1-pixel gap
        between tiles) with each tile's rank, sample and maximum written in its corner by
        an ``hv.Labels`` overlay: one figure, far cheaper to draw in a served page.

    Returns
    -------
    holoviews.Layout of RGB, strongest first; ``hv.Overlay`` of RGB and Labels for
    ``layout="mosaic"``.
    """
    if layout not in ("grid", "mosaic"):
        raise ViewError(f"layout must be 'grid' or 'mosaic', got {layout!r}")
    ranked, maxima = top_sample_positions(run, key, channel, k)
    activation = indexed(run).activation(key)  # k samples' inner chunks, one zarr read
    spatial = "height" in activation.dims and "width" in activation.dims
    # Read the k samples in storage order, each one's chunk once, in one read (one
    # ``.values`` per sample cost a graph and a thread hand-off each), then restore the rank.
    order = np.argsort(ranked, kind="stable")
    stored = ranked[order].tolist()
    maps: list[np.ndarray | None] = [None] * len(ranked)
    if spatial:
        block = _channel_maps(activation, key, channel, stored)
        for j, i in enumerate(order.tolist()):
            maps[i] = block[j]
    images: list[np.ndarray | None] = [None] * len(ranked)
    pixels_in = stored_inputs(run, stored)
    if pixels_in is not None:
        for j, i in enumerate(order.tolist()):
            images[i] = pixels_in[j]
    tiles = []
    pictures, short = [], []
    for rank, (position, value) in enumerate(zip(ranked.tolist(), maxima, strict=True)):
        image = images[rank]
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
        if layout == "mosaic":
            pictures.append(pixels)
            short.append(f"#{rank + 1} s{_sample_index(run, position)} · {value:.3g}")
            continue
        title = f"#{rank + 1} {sample_caption(run, position)} · max {value:.3g}"
        tile = hv.RGB(pixels, bounds=(0, 0, width, height))
        tiles.append(
            style(
                tile,
                title=title,
                xaxis=None,
                yaxis=None,
                bokeh={
                    "width": 200,
                    "height": max(1, round(200 * height / width)),
                    "toolbar": None,
                },
                matplotlib={"fig_size": 80},
            )
        )
    title = f"top {len(ranked)} of {key} channel {channel}, by per-sample max"
    if maxima.size and np.nanmax(maxima) <= 0.0:  # "max 0" alone reads like a bug
        note = f"channel {channel} of {key!r} is dead: never > 0 over the run"
        if is_derived(run, key):
            note += " (a pooling/reshaping layer: inherited from its input)"
        warnings.warn(f"{note}; its top samples are arbitrary", stacklevel=2)
        title += f" · ⚠ {note}"
    if layout == "mosaic":
        return rgb_mosaic(pictures, short, title)
    grid = hv.Layout(tiles).cols(max(1, math.ceil(math.sqrt(len(tiles)))))
    return style(
        grid,
        title=title,
        bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": ""},
    )


def _channel_maps(activation: Any, key: str, channel: int, samples: list[int]) -> np.ndarray:
    """``(len(samples), height, width)`` maps of one channel, dims found by name, one read."""
    dims = tuple(str(d) for d in activation.dims)
    name = channel_dim(dims[1:])
    block = take_samples(activation, samples)
    if name is not None:
        block = block.isel({name: channel})
    rest = [d for d in block.dims if d not in ("sample", "height", "width")]
    if rest:
        raise ViewError(f"layer {key!r} has dims {dims[1:]}: cannot show a 2-D map over {rest}")
    return np.asarray(block.transpose("sample", "height", "width").values, dtype=np.float64)
