"""Feature-map heatmaps: a grid of one layer's channels, and one map browsable by widgets."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import holoviews as hv
import numpy as np
import xarray as xr
from tensortap.core.errors import ViewError
from tensortap.viz._backend import style
from tensortap.viz._run import (
    channel_count,
    check_channel,
    check_sample,
    hv_dimension,
    layer_map,
    sample_caption,
)

__all__ = ["feature_map", "feature_maps", "map_image"]

#: Colour map of activations: perceptually uniform, readable in grey.
CMAP = "viridis"


def _clim(values: np.ndarray) -> tuple[float, float]:
    """A colour range that is never empty (a constant map would break the colour bar)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def map_image(
    values: np.ndarray,
    source: xr.DataArray,
    dims: tuple[str, str],
    *,
    clim: tuple[float, float] | None = None,
    title: str = "",
    compact: bool = False,
) -> hv.Image:
    """One 2-D map as an ``hv.Image`` with row 0 at the top and labelled axes.

    Parameters
    ----------
    values : ndarray, shape (rows, columns)
    source : xarray.DataArray
        The layer array whose attrs (``long_name``, ``units``) label the value dimension.
    dims : (str, str)
        Names of the row and column dimensions (``height``, ``width``...).
    clim : (float, float), optional
        Colour range; defaults to the map's own range.
    compact : bool
        Small tile without axes or colour bar, for grids.
    """
    rows, columns = values.shape
    value_dim = hv_dimension(source, "activation", values=True)
    # Array rows are drawn top-down; flipped and with the y axis inverted, row 0 sits on
    # top *and* its axis label reads 0.  (The gridded (x, y, z) form fails for one row.)
    image = hv.Image(
        np.ascontiguousarray(values[::-1]),
        bounds=(-0.5, -0.5, columns - 0.5, rows - 0.5),
        kdims=[hv_dimension(source, dims[1]), hv_dimension(source, dims[0])],
        vdims=[value_dim],
    )
    clim = clim or _clim(values)
    common: dict[str, Any] = {"cmap": CMAP, "clim": clim, "invert_yaxis": True}
    if title:
        common["title"] = title
    if compact:
        return style(
            image, **common, xaxis=None, yaxis=None, colorbar=False,
            bokeh={"width": 150, "height": 150, "tools": ["hover"], "toolbar": None},
            matplotlib={"fig_size": 60},
        )
    return style(
        image, **common, colorbar=True,
        bokeh={"width": 420, "height": 360, "tools": ["hover"]},
        matplotlib={"fig_inches": 4},
    )


def _channel_order(maps: np.ndarray, chosen: list[int], order: str) -> list[int]:
    if order == "index":
        return chosen
    if order == "energy":  # mean squared activation: strong maps of either sign first
        energy = np.nanmean(maps[chosen].reshape(len(chosen), -1) ** 2, axis=1)
        return [chosen[i] for i in np.argsort(-energy, kind="stable")]
    raise ViewError(f"order must be 'index' or 'energy', got {order!r}")


def feature_maps(
    run: Any,
    key: str,
    sample: int = 0,
    channels: Sequence[int] | None = None,
    shared_scale: bool = True,
    order: Literal["index", "energy"] = "index",
    max_channels: int = 64,
) -> hv.NdLayout | hv.Image:
    """A grid of one layer's channel maps for one sample.

    Parameters
    ----------
    run : tensortap.Run
    key : str
        Layer key.  Spatial layers show one tile per channel; a dense layer shows one strip
        of its units and a sequence layer one ``time × feature`` image.
    sample : int
        Position among the committed samples.
    channels : sequence of int, optional
        Channels to show (default: all, up to ``max_channels``).
    shared_scale : bool
        One colour range for every tile (compare channels) or one per tile (see each).
    order : {"index", "energy"}
        Tile order: channel index, or mean squared activation ``mean(A_c**2)``, strongest
        first — with ``max_channels`` this shows the most active channels.
    max_channels : int
        At most this many tiles (a warning says when channels were left out).

    Returns
    -------
    holoviews.NdLayout of Image keyed by ``channel`` (or one Image for non-spatial layers).
    """
    activation = run.activation(key)  # LayerNotFoundError with suggestions
    position = check_sample(int(activation.sizes["sample"]), sample)
    one = layer_map(activation.isel(sample=position), key)
    row_dim, column_dim = (str(d) for d in one.dims[1:])
    maps = np.asarray(one.values, dtype=np.float64)
    caption = f"{key} · {sample_caption(run, position)}"
    if "height" not in one.dims:  # dense or sequence layer: one image says it all
        if channels is not None:
            raise ViewError(f"layer {key!r} has dims {tuple(activation.dims[1:])}: no channels to pick")
        return map_image(maps[0], activation, (row_dim, column_dim), title=caption)

    n_channels = channel_count(activation)
    if channels is None:
        chosen = list(range(n_channels))
    else:
        chosen = [check_channel(key, n_channels, c) for c in channels]
        if not chosen:
            raise ViewError("channels is empty; pass None for all channels")
    chosen = _channel_order(maps, chosen, order)
    if max_channels < 1:
        raise ViewError(f"max_channels must be at least 1, got {max_channels}")
    if len(chosen) > max_channels:
        warnings.warn(
            f"{key}: showing {max_channels} of {len(chosen)} channels (order={order!r}); "
            f"raise max_channels or pass channels= to see others",
            stacklevel=2,
        )
        chosen = chosen[:max_channels]

    shared = _clim(maps[chosen]) if shared_scale else None
    tiles = {
        c: map_image(maps[c], activation, (row_dim, column_dim), clim=shared, compact=True)
        for c in chosen
    }
    scale = f"shared scale [{shared[0]:.3g}, {shared[1]:.3g}]" if shared else "scale per channel"
    layout = hv.NdLayout(tiles, kdims=[hv.Dimension("channel")], sort=False)
    layout = layout.cols(max(1, math.ceil(math.sqrt(len(chosen)))))
    return style(
        layout, title=f"{caption} · {scale}", bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": ""},
    )


def feature_map(run: Any) -> hv.DynamicMap:
    """One map, browsable over layer × sample × channel (a ``DynamicMap``).

    Each frame reads one sample of one layer.  A channel beyond a layer's last one shows
    the last channel (the slider spans the widest layer).  Non-spatial layers show their
    whole output as one image.  Serve it (``tensortap serve``, a notebook); static HTML
    cannot hold a ``DynamicMap``.
    """
    keys = list(run.layers)
    if not keys:
        raise ViewError("the run has no layers to show")
    widest = max(channel_count(run.activation(k)) for k in keys)
    n_samples = int(run.samples)
    if n_samples < 1:
        raise ViewError("the run has no committed samples yet")

    def frame(layer: str, sample: int, channel: int) -> hv.Image:
        activation = run.activation(layer)
        position = check_sample(int(activation.sizes["sample"]), int(sample))
        one = layer_map(activation.isel(sample=position), layer)
        n_channels = int(one.sizes["channel"])
        shown = min(int(channel), n_channels - 1)
        values = np.asarray(one.isel(channel=shown).values, dtype=np.float64)
        note = f"channel {shown}" + (f" (of {n_channels})" if shown != channel else "")
        title = f"{layer} · {sample_caption(run, position)} · {note}"
        image = map_image(values, activation, tuple(str(d) for d in one.dims[1:]), title=title)
        return style(image, framewise=True)  # each frame gets its own colour range

    dmap = hv.DynamicMap(
        frame,
        kdims=[
            hv.Dimension("layer", values=keys, default=keys[0]),
            hv.Dimension("sample", range=(0, n_samples - 1), type=int, default=0),
            hv.Dimension("channel", range=(0, widest - 1), type=int, default=0),
        ],
    )
    # No .opts() on the DynamicMap itself: that wraps it, and dmap[layer, sample, channel]
    # would return a DynamicMap instead of the frame (the server and save() need the frame).
    return dmap
