"""Feature-map heatmaps: a grid (or one-image mosaic) of one layer's channels, and one map
browsable by widgets."""

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
from tensortap.viz._mosaic import grid_shape, tile, tile_labels, tile_origin
from tensortap.viz._run import (
    channel_count,
    check_channel,
    check_sample,
    hv_dimension,
    indexed,
    layer_map,
    sample_caption,
)

__all__ = ["feature_map", "feature_maps", "feature_mosaic", "map_image"]

#: Colour map of activations: perceptually uniform, readable in grey.
CMAP = "viridis"
#: Colour map of signed values (pre-BatchNorm, pre-activation): diverging, white at 0.
DIVERGING_CMAP = "RdBu_r"


def colour_scale(clim: tuple[float, float]) -> tuple[str, tuple[float, float]]:
    """The colour map and range for values spanning ``clim``.

    Values of both signs get a diverging map centred at 0 (range ``(-m, m)``, ``m`` the
    larger magnitude), so 0 is always the neutral colour; others keep :data:`CMAP`.
    """
    low, high = clim
    if low < 0.0 < high:
        bound = max(-low, high)
        return DIVERGING_CMAP, (-bound, bound)
    return CMAP, clim


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
    colorbar: bool = False,
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
        Small tile without axes, for grids (a colour bar only with ``colorbar``).
    colorbar : bool
        Give a compact tile its colour bar (a full-size map always has one).
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
    cmap, clim = colour_scale(clim or _clim(values))
    common: dict[str, Any] = {"cmap": cmap, "clim": clim, "invert_yaxis": True}
    if title:
        common["title"] = title
    if compact:
        return style(
            image,
            **common,
            xaxis=None,
            yaxis=None,
            colorbar=colorbar,
            bokeh={
                "width": 190 if colorbar else 150,
                "height": 150,
                "tools": ["hover"],
                "toolbar": None,
            },
            matplotlib={"fig_size": 60},
        )
    return style(
        image,
        **common,
        colorbar=True,
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


def _dead_note(run: Any, key: str, chosen: Sequence[int]) -> str:
    """``" · ⚠ dead (never > 0 in the run): 3, 13"`` for the shown channels that are dead."""
    try:
        high = np.asarray(run.stats(key)["max"].values, dtype=np.float64)
    except Exception:  # noqa: BLE001 - a reader without stats: the note is a courtesy
        return ""
    dead = [c for c in chosen if c < len(high) and high[c] <= 0.0]
    if not dead:
        return ""
    listed = ", ".join(str(c) for c in dead[:12]) + (", ..." if len(dead) > 12 else "")
    return f" · ⚠ dead (never > 0 in the run): {listed}"


def _read_maps(
    run: Any,
    key: str,
    sample: int,
    channels: Sequence[int] | None,
    order: str,
    max_channels: int,
    stacklevel: int = 3,
    note_dead: bool = False,
    loaded: xr.DataArray | None = None,
) -> hv.Image | tuple[xr.DataArray, np.ndarray, list[int], tuple[str, str], str]:
    """One sample's maps of a layer and the validated, ordered channels to show.

    Reads one sample only: ``isel`` on the lazy array, then one ``.values`` (for a run
    stored with one chunk per sample, one chunk read), whatever the layer's size; nothing
    when that sample was ``loaded`` already.

    Returns
    -------
    hv.Image
        For a dense or sequence layer, its one image (nothing to tile).
    (activation, maps, chosen, (row_dim, column_dim), caption)
        Otherwise: the lazy layer array, the sample's maps ``(channel, row, column)``, the
        channels in display order, the map's dim names and a title.
    """
    # One sample through zarr directly (no Dask graph); LayerNotFoundError with suggestions.
    activation = indexed(run).activation(key)
    position = check_sample(int(activation.sizes["sample"]), sample)
    # Loaded before layer_map's transpose: a lazily indexed array transposed, then read,
    # became zarr's point-wise coordinate selection (~0.5 s for one 4 MiB sample).
    if loaded is None:
        loaded = activation.isel(sample=position).load()
    one = layer_map(loaded, key)
    row_dim, column_dim = (str(d) for d in one.dims[1:])
    maps = np.asarray(one.values, dtype=np.float64)
    caption = f"{key} · {sample_caption(run, position)}"
    if "height" not in one.dims:  # dense or sequence layer: one image says it all
        if channels is not None:
            raise ViewError(
                f"layer {key!r} has dims {tuple(activation.dims[1:])}: no channels to pick"
            )
        return map_image(maps[0], one, (row_dim, column_dim), title=caption)

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
    if note_dead:  # the grid's title (the mosaic, the server's fast path, reads no stats)
        caption += _dead_note(run, key, chosen[:max_channels])
    if len(chosen) > max_channels:
        warnings.warn(
            f"{key}: showing {max_channels} of {len(chosen)} channels (order={order!r}); "
            f"raise max_channels or pass channels= to see others",
            stacklevel=stacklevel,
        )
        chosen = chosen[:max_channels]
    return activation, maps, chosen, (row_dim, column_dim), caption


def feature_maps(
    run: Any,
    key: str,
    sample: int = 0,
    channels: Sequence[int] | None = None,
    shared_scale: bool = True,
    order: Literal["index", "energy"] = "index",
    max_channels: int = 64,
    layout: Literal["grid", "mosaic"] = "grid",
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
    layout : {"grid", "mosaic"}
        One figure per channel, or every channel tiled into one image
        (:func:`feature_mosaic`, much cheaper to draw for many channels).

    Returns
    -------
    holoviews.NdLayout of Image keyed by ``channel`` (or one Image for non-spatial layers
    and for ``layout="mosaic"``).
    """
    if layout == "mosaic":
        return feature_mosaic(
            run,
            key,
            sample=sample,
            channels=channels,
            max_channels=max_channels,
            shared_scale=shared_scale,
            order=order,
        )
    if layout != "grid":
        raise ViewError(f"layout must be 'grid' or 'mosaic', got {layout!r}")
    read = _read_maps(run, key, sample, channels, order, max_channels, note_dead=True)
    if isinstance(read, hv.Image):
        return read
    activation, maps, chosen, (row_dim, column_dim), caption = read
    if len(chosen) == 1:  # one channel: a full-size map with axes and its colour bar
        return map_image(
            maps[chosen[0]],
            activation,
            (row_dim, column_dim),
            title=f"{caption} · channel {chosen[0]}",
        )
    shared = _clim(maps[chosen]) if shared_scale else None
    # One colour bar for a shared scale (on the last tile: it holds for all), else one a tile.
    tiles = {
        c: map_image(
            maps[c],
            activation,
            (row_dim, column_dim),
            clim=shared,
            compact=True,
            colorbar=shared is None or c == chosen[-1],
        )
        for c in chosen
    }
    scale = f"shared scale [{shared[0]:.3g}, {shared[1]:.3g}]" if shared else "scale per channel"
    layout = hv.NdLayout(tiles, kdims=[hv.Dimension("channel")], sort=False)
    layout = layout.cols(max(1, math.ceil(math.sqrt(len(chosen)))))
    return style(
        layout,
        title=f"{caption} · {scale}",
        bokeh={"shared_axes": False},
        matplotlib={"sublabel_format": ""},
    )


def feature_mosaic(
    run: Any,
    key: str,
    sample: int = 0,
    channels: Sequence[int] | None = None,
    max_channels: int = 64,
    shared_scale: bool = True,
    order: Literal["index", "energy"] = "index",
    *,
    labels: bool = False,
    frame_px: int = 600,
    loaded: xr.DataArray | None = None,
) -> hv.Image | hv.Overlay:
    """One layer's channel maps for one sample, tiled into ONE image.

    The same maps as :func:`feature_maps`, but drawn as a single plot: a grid of 64
    figures costs 64 sets of Bokeh models to build and lay out, a mosaic costs one, which
    is what keeps ``tensortap serve`` interactive on wide layers.  Channels fill a
    near-square grid row by row, separated by a 1-pixel gap of NaN (transparent).  The
    hover tool names the channel under the pointer.

    Parameters
    ----------
    run : tensortap.Run
    key : str
        Layer key.  Dims are found by name (``channel, height, width`` in any order); a
        dense or sequence layer has no channels to tile and gives its one image.
    sample : int
        Position among the committed samples; only this sample is read.
    channels : sequence of int, optional
        Channels to show (default: all, up to ``max_channels``).
    max_channels : int
        At most this many tiles (a warning says when channels were left out).
    shared_scale : bool
        ``True``: raw values on one colour range (compare channels).  ``False``: each tile
        min-max scaled to [0, 1] on its own (see each); hover then shows the raw value too.
    order : {"index", "energy"}
        Tile order, as in :func:`feature_maps`.
    labels : bool
        Also write each tile's channel number in its corner (an ``hv.Labels`` overlaid on
        the image: still one figure).
    frame_px : int
        Size in screen pixels of the longer side of the plot area (Bokeh).
    loaded : xarray.DataArray, optional
        This sample's layer output already read (``run.activation(key).isel(sample=…)``,
        loaded), so that views of one sample share one read (``tensortap serve``).

    Returns
    -------
    holoviews.Image
        Value dims: the shown value, ``channel`` (NaN in the gaps) and, when not
        ``shared_scale``, the raw ``activation``.  Array row 0 of every tile is on top.
        An ``hv.Overlay`` of it and the labels when ``labels=True``.
    """
    read = _read_maps(run, key, sample, channels, order, max_channels, loaded=loaded)
    if isinstance(read, hv.Image):
        return read
    activation, maps, chosen, (row_dim, column_dim), caption = read
    shown = maps[chosen]
    n, height, width = shown.shape
    _, columns = grid_shape(n)
    total = channel_count(activation)
    count = f"{n} of {total} channels" if n < total else f"{n} channels"
    raw = tile(shown, columns)
    index = tile(
        np.broadcast_to(np.asarray(chosen, dtype=np.float32)[:, None, None], shown.shape), columns
    )
    value_dim = hv_dimension(activation, "activation", values=True)
    cmap = CMAP
    if shared_scale:
        clim = _clim(shown)
        data, vdims = [raw], [value_dim]
        scale = f"shared scale [{clim[0]:.3g}, {clim[1]:.3g}]"
        cmap, clim = colour_scale(clim)
    else:  # each tile on [0, 1]: a weak channel's pattern is as visible as a strong one's
        low = np.nanmin(shown, axis=(1, 2), keepdims=True)
        span = np.nanmax(shown, axis=(1, 2), keepdims=True) - low
        scaled = np.where(span > 0, (shown - low) / np.where(span > 0, span, 1.0), 0.5)
        clim = (0.0, 1.0)
        data = [tile(scaled, columns), raw]
        vdims = [hv.Dimension("scaled", label="scaled per channel"), value_dim]
        scale = "scale per channel"
    rows_px, columns_px = raw.shape
    # The stored precision (float32 for real runs): half the bytes sent to the browser.
    dtype = np.result_type(activation.dtype, np.float32)
    stack = np.dstack([*data, index]).astype(dtype, copy=False)
    # Flipped, with the y axis inverted, as map_image: array row 0 on top, at y = 0.
    image = hv.Image(
        np.ascontiguousarray(stack[::-1]),
        bounds=(-0.5, -0.5, columns_px - 0.5, rows_px - 0.5),
        kdims=[
            hv.Dimension("mosaic_x", label=f"{column_dim} (tiled)"),
            hv.Dimension("mosaic_y", label=f"{row_dim} (tiled)"),
        ],
        vdims=[*vdims, hv.Dimension("channel")],
    )
    zoom = frame_px / max(rows_px, columns_px)
    hover = [("channel", "@channel"), (vdims[0].pprint_label, "@image")]
    if not shared_scale:
        hover.append((value_dim.pprint_label, f"@{{{value_dim.name}}}"))
    image = style(
        image,
        cmap=cmap,
        clim=clim,
        invert_yaxis=True,
        xaxis=None,
        yaxis=None,
        colorbar=True,
        title=f"{caption} · {count} · {scale}",
        bokeh={
            "frame_width": max(1, round(columns_px * zoom)),
            "frame_height": max(1, round(rows_px * zoom)),
            "tools": ["hover"],
            "hover_tooltips": hover,
            "toolbar": "above",
        },
        matplotlib={"fig_inches": 6, "aspect": columns_px / rows_px},
    )
    if not labels:
        return image
    corners = [tile_origin(i, columns, (height, width)) for i in range(n)]
    xs = [left - 0.5 for _, left in corners]
    ys = [top - 0.5 for top, _ in corners]
    text = tile_labels(image, xs, ys, [str(c) for c in chosen], "channel", alpha=0.45)
    return image * text


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
        image = map_image(values, one, tuple(str(d) for d in one.dims[1:]), title=title)
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
