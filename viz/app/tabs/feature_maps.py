"""The Feature maps tab: the chosen layer's channel maps for one sample, one channel
zoomed, and the samples that excite that channel most."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import panel as pn

from tensortap.viz.app.tabs import Tab, side_by_side

__all__ = ["FeatureMapsTab"]

#: Channels tiled in the feature-map mosaic; the zoomed map reaches the others.
GRID_CHANNELS = 64
#: Screen pixels of the mosaic's longer side.
GRID_PX = 560


def _pixel_ticks(n: int, most: int = 12) -> list[int]:
    """Tick positions on pixel centres (0, 1, … or every k-th) for an axis of ``n`` pixels."""
    step = max(1, -(-n // most))
    return list(range(0, n, step))


class FeatureMapsTab(Tab):
    """Channel mosaic (:func:`viz.feature_mosaic`), zoomed map, :func:`viz.top_samples`."""

    TITLE = "Feature maps"
    SLUG = "feature-maps"
    FOLLOWS = {
        "sample": ("feature_maps", "zoom"),
        "channel": ("zoom", "top_samples"),
        "layer": ("feature_maps", "zoom", "top_samples"),
        "samples": ("top_samples",),
    }

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        # The chosen sample of the chosen layer, read once for the mosaic and the zoomed
        # map: (run, samples, layer, position), (the sample's array, its maps or None).
        self._sample_read: tuple[tuple[Any, ...], Any, np.ndarray | None] | None = None

    def builders(self) -> dict[str, Callable[[], Any]]:
        return {
            "feature_maps": self.feature_maps,
            "zoom": self.zoom,
            "top_samples": self.top_samples,
        }

    def tile_positions(self) -> dict[str, Callable[[], list[int]]]:
        return {"top_samples": self._top_positions}

    def _top_positions(self) -> list[int]:
        from tensortap.viz.top_samples import top_sample_positions

        app = self.app
        ranked, _ = top_sample_positions(app.run, app.key, int(app.channel_slider.value), 9)
        return [int(p) for p in ranked]

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        return pn.Column(
            pn.pane.Markdown("### Channel maps of the layer for the chosen sample"),
            views["feature_maps"],
            side_by_side(
                pn.Column(pn.pane.Markdown("### Chosen channel"), views["zoom"]),
                pn.Column(
                    pn.pane.Markdown("### Samples that excite it most"), views["top_samples"]
                ),
            ),
            name=self.TITLE,
            sizing_mode="stretch_width",
        )

    def on_run_opened(self) -> None:
        self._sample_read = None

    def _read_sample(self) -> tuple[Any, Any, int]:
        """The chosen layer's lazy array, the chosen sample of it loaded, and its position.

        The mosaic and the zoomed map both show this sample (a new sample redraws both):
        the whole sample is one chunk, read here once and kept, so the second view and
        any channel of the same sample read nothing.
        """
        from tensortap.viz._run import check_sample, indexed

        app, run, key = self.app, self.app.run, self.app.key
        activation = indexed(run).activation(key)  # one sample, through zarr directly
        position = check_sample(int(activation.sizes["sample"]), app.sample())
        cache_key = (str(run.path), id(run), run.samples, key, position)
        if self._sample_read is None or self._sample_read[0] != cache_key:
            loaded = activation.isel(sample=position).load()
            self._sample_read = (cache_key, loaded, None)
        return activation, self._sample_read[1], position

    def feature_maps(self) -> Any:
        # One mosaic image, not one figure per channel: 64 Bokeh figures took seconds to
        # build per sample on a 256-channel layer; one image with its labels takes tens of
        # milliseconds (benchmarks/RESULTS.md, Serve).
        app = self.app
        _, loaded, position = self._read_sample()
        with warnings.catch_warnings():  # "showing 64 of 256": the title says so already
            warnings.simplefilter("ignore", UserWarning)
            return app.viz.feature_mosaic(
                app.run,
                app.key,
                sample=position,
                max_channels=GRID_CHANNELS,
                labels=True,
                frame_px=GRID_PX,
                loaded=loaded,
            )

    def zoom(self) -> Any:
        """The chosen channel's map alone, with axes and its own colour range.

        Drawn apart from the grid so that choosing a channel redraws this small plot only
        (and reaches channels beyond the grid's first 64).
        """
        from tensortap.viz._run import check_channel, layer_map, sample_caption
        from tensortap.viz.feature_maps import map_image

        app, run, key = self.app, self.app.run, self.app.key
        activation, loaded, position = self._read_sample()
        one = layer_map(loaded, key)
        if "height" not in one.dims:
            return pn.pane.Markdown(
                f"Layer `{key}` has no channel maps: the grid above shows all of it."
            )
        channel = check_channel(key, int(one.sizes["channel"]), int(app.channel_slider.value))
        assert self._sample_read is not None  # set by _read_sample
        cache_key, _, maps = self._sample_read
        if maps is None:  # (channel, row, column) once per sample: a channel is then a view
            maps = np.asarray(one.values)
            self._sample_read = (cache_key, loaded, maps)
        values = np.asarray(maps[channel], dtype=np.float64)
        title = f"channel {channel} · {sample_caption(run, position)}"
        image = map_image(values, activation, (str(one.dims[1]), str(one.dims[2])), title=title)
        # Whole-pixel ticks: on a map of a few pixels Bokeh put ticks at 0.5 steps.
        rows, columns = values.shape
        return image.opts(
            width=400,
            height=340,
            xticks=_pixel_ticks(columns),
            yticks=_pixel_ticks(rows),
            backend="bokeh",
        )

    def top_samples(self) -> Any:
        # One RGB mosaic with captions, not nine figures (see feature_maps).
        app = self.app
        return app.viz.top_samples(
            app.run, app.key, int(app.channel_slider.value), k=9, layout="mosaic"
        )
