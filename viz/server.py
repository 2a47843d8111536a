"""The served app: ``tensortap serve PATH`` (DESIGN.md §5, issue 5).

One Panel module over the :mod:`tensortap.viz` functions, in the spirit of
``tensorboard --logdir`` but with the full tensors:

* a run picker over every run found under PATH (PATH is one run or a folder of runs,
  searched recursively);
* the layer list with shapes and summary statistics, a sample picker with the stored input
  thumbnail, its label and prediction;
* tabs with the feature-map grid of the chosen layer and sample, the zoomed map of one
  channel and the samples that excite it most; the distribution of the layer and across
  layers with the dead/saturated units; the CAM overlay with method and class selectors;
  the comparison of two runs;
* a live mode: a periodic callback calls :meth:`Run.refresh` so samples committed by a
  capture that is still running show up without a restart.

Safety, because a served folder is a file-system view: the server binds 127.0.0.1 unless
asked otherwise, serves no static folder, and reaches runs only through
:class:`RunCatalog`, which refuses absolute paths, ``..``, symlinks and anything it did
not list itself — whatever the URL's ``?run=`` says.

Laziness, because runs can be many GB: opening a run reads metadata only; every picture is
drawn from one sample (or from the stored statistics) when its tab is shown, and a plain
HTTP GET builds only the page skeleton: the run is opened when the browser's websocket
connects (``pn.state.onload``), which keeps 100 concurrent page requests cheap.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
from bokeh.models.widgets.tables import NumberFormatter

from tensortap.core.errors import RunNotFoundError, TensortapError
from tensortap.viz.catalog import RunAccessError, RunCatalog, RunEntry, is_run_dir

__all__ = [
    "RunAccessError",
    "RunCatalog",
    "RunEntry",
    "TensortapApp",
    "input_thumbnail",
    "is_run_dir",
    "layer_table",
    "make_server",
    "serve",
]

log = logging.getLogger(__name__)

#: CAM methods of ``tt.cam`` (DESIGN.md §3), in the order the selector shows them.
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "hirescam", "xgradcam")
_THUMBNAIL_PX = 150
_SIDEBAR_PX = 400
#: Channels tiled in the feature-map mosaic; the zoomed map reaches the others.
_GRID_CHANNELS = 64
#: Screen pixels of the mosaic's longer side.
_GRID_PX = 560
#: Plots kept per view, one per frame shape (layer) seen last; hidden ones cost memory in
#: the browser and the server, so only a few.
_KEPT_PLOTS = 3


def _dim(array: Any, *names: str) -> str | None:
    """The first of ``names`` that is a dimension of ``array`` (dims are found by name)."""
    return next((name for name in names if name in array.dims), None)


def input_thumbnail(run: Any, sample: int, name: str | None = None) -> hv.Element:
    """The stored model input of one sample, as a small picture.

    Images (``height``, ``width`` and optionally ``channel``) become an ``hv.RGB`` (three
    channels) or a grey ``hv.Image``; anything else becomes a curve of its values.

    Parameters
    ----------
    run
        An open run.
    sample
        Position of the sample among the committed ones.
    name
        Which input of a multi-input model (default: the first).
    """
    data = run.inputs(name).isel(sample=sample)
    values = np.asarray(data.values, dtype="float64")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    size = {"width": _THUMBNAIL_PX, "height": _THUMBNAIL_PX, "xaxis": None, "yaxis": None}
    y_dim, x_dim = _dim(data, "height", "y"), _dim(data, "width", "x")
    if y_dim and x_dim:
        channel = _dim(data, "channel")
        order = [y_dim, x_dim] + ([channel] if channel else [])
        image = data.copy(data=scaled).transpose(*order, ...).values
        height, width = image.shape[:2]
        bounds = (0, 0, width, height)
        if image.ndim == 3 and image.shape[2] >= 3:
            return hv.RGB(np.clip(image[..., :3], 0, 1)[::-1], bounds=bounds).opts(**size)
        grey = image if image.ndim == 2 else image.mean(axis=2)
        return hv.Image(grey[::-1], bounds=bounds).opts(cmap="gray", clim=(0, 1), **size)
    flat = scaled.ravel()
    return hv.Curve((np.arange(flat.size), flat), "index", "value").opts(
        width=_THUMBNAIL_PX * 2, height=_THUMBNAIL_PX // 2, toolbar=None
    )


def layer_table(run: Any) -> pd.DataFrame:
    """One row per layer: key, type, stored shape and summary statistics.

    Statistics are pooled from the stored per-channel stats
    (:func:`tensortap.viz.distributions.layer_summary`), so no activation is read; *dead*
    is the fraction of channels that never exceeded 0 (as in :func:`viz.dead_units`).

    Parameters
    ----------
    run
        An open run.
    """
    from tensortap.viz.distributions import layer_summary

    rows = []
    for key in run.layers:
        node = dict(run.node(key) or {})
        row: dict[str, Any] = {"layer": key, "type": node.get("layer_type", "")}
        try:
            row["shape"] = " × ".join(str(n) for n in run.activation(key).shape[1:])
            stats = run.stats(key)
            summary = layer_summary(stats)
            seen = np.asarray(stats["count"].values) > 0
            peak = np.asarray(stats["max"].values, dtype="float64")[seen]
            row.update(
                mean=summary["mean"],
                std=summary["std"],
                zeros=summary["zero_fraction"],
                dead=float(np.mean(peak <= 0)) if peak.size else np.nan,
            )
        except TensortapError as err:  # a layer with damaged stats still gets a row
            log.warning("layer %s: %s", key, err)
        rows.append(row)
    columns = ["layer", "type", "shape", "mean", "std", "zeros", "dead"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["shape"] = frame["shape"].fillna("")
    return frame.set_index("layer")


def _frame_signature(obj: Any) -> tuple[Any, ...] | None:
    """What must not change between two frames drawn into one plot in place.

    ``None`` for objects a DynamicMap cannot hold (layouts, grids).  Otherwise the element
    types, dimensions, plot sizes and raster shapes: a frame that differs in any of these
    (another layer's mosaic, say) gets a new plot, since Bokeh figures keep their size and
    their axis ranges would not follow.
    """
    if isinstance(obj, hv.Overlay):
        elements = list(obj.values())
    elif isinstance(obj, hv.Element):
        elements = [obj]
    else:
        return None
    parts: list[Any] = [type(obj).__name__]
    for element in elements:
        if not isinstance(element, hv.Element):
            return None
        plot = element.opts.get("plot", backend="bokeh").kwargs
        size = tuple(plot.get(k) for k in ("width", "height", "frame_width", "frame_height"))
        shape = np.shape(element.data) if isinstance(element, hv.Image) else None
        parts.append(
            (
                type(element).__name__,
                element.group,
                element.label,
                tuple(d.name for d in element.dimensions()),
                size,
                shape,
            )
        )
    return tuple(parts)


# --------------------------------------------------------------------------- the app


class TensortapApp:
    """One browser session's app over the runs of a :class:`RunCatalog`.

    Parameters
    ----------
    catalog
        Where runs may come from.
    run_id
        Run to show first (e.g. from ``?run=``); validated by the catalog. Default: the
        first run listed.
    live_period_ms
        How often live mode re-reads the commit record.
    defer
        Open the run only when the browser connects (``pn.state.onload``), as a served
        session does. ``False`` opens it at once (benchmarks, tests without a browser).

    Attributes
    ----------
    layout
        The servable Panel object.
    timings
        Seconds spent by the latest update of each view (for the benchmark).
    """

    _TABS = ("Feature maps", "Distributions", "CAM", "Compare")

    def __init__(
        self,
        catalog: RunCatalog,
        run_id: str | None = None,
        *,
        live_period_ms: int = 1000,
        defer: bool = True,
    ) -> None:
        from tensortap import viz  # imported here: viz/__init__ re-exports this module

        self._viz = viz
        self.catalog = catalog
        self.run: Any = None
        self.timings: dict[str, float] = {}
        self._live_period_ms = live_period_ms
        self._live_callback: Any = None
        self._busy = False  # set while one change fans out to several widgets
        self._stale: set[str] = set()
        # Per view drawn in place: the pane showing a DynamicMap, its Pipe, and the shape
        # of the frames it can take (see _draw).
        # The zoomed map's sample, all channels: (run, samples, layer, position), maps.
        self._zoom_maps: tuple[tuple[Any, ...], np.ndarray] | None = None
        self._piped: dict[
            str, list[tuple[pn.pane.HoloViews, hv.streams.Pipe, tuple[Any, ...]]]
        ] = {}

        self.notice = pn.pane.Alert(
            "", alert_type="warning", visible=False, margin=(5, 10), css_classes=["tt-notice"]
        )
        first = None
        if run_id is not None:
            try:  # may rescan the folder (a run created since the last listing)
                first = catalog.resolve(run_id).id
            except TensortapError as err:
                self._warn(str(err))
        ids = [entry.id for entry in catalog.runs()]
        if first not in ids:
            first = ids[0] if ids else None

        # -- sidebar widgets
        self.run_select = pn.widgets.Select(
            label="Run",
            options=ids,
            value=first,
            width=_SIDEBAR_PX - 120,
            css_classes=["tt-run"],
        )
        self.rescan_button = pn.widgets.Button(label="↻ rescan", width=90, align="end")
        self.live_toggle = pn.widgets.Checkbox(
            label="Live: follow a running capture", css_classes=["tt-live"]
        )
        self.status = pn.pane.Markdown("", margin=(0, 10), css_classes=["tt-status"])
        self.layer_select = pn.widgets.Select(label="Layer", options=[], css_classes=["tt-layer"])
        self.sample_slider = pn.widgets.EditableIntSlider(
            label="Sample", start=0, end=1, value=0, fixed_start=0, css_classes=["tt-sample"]
        )
        self.sample_info = pn.pane.Markdown("", margin=(0, 10), css_classes=["tt-sample-info"])
        self.thumbnail = pn.Column(css_classes=["tt-thumbnail"], margin=0)
        self.channel_slider = pn.widgets.EditableIntSlider(
            label="Channel", start=0, end=1, value=0, fixed_start=0, css_classes=["tt-channel"]
        )
        self.layer_list = pn.widgets.Tabulator(
            pd.DataFrame(),
            disabled=True,
            selectable=1,
            show_index=True,
            height=260,
            sizing_mode="stretch_width",
            formatters={
                "mean": NumberFormatter(format="0.000"),
                "std": NumberFormatter(format="0.000"),
                "zeros": NumberFormatter(format="0.0%"),
                "dead": NumberFormatter(format="0.0%"),
            },
            # type and std hidden: with them the table overflowed the sidebar (the layer
            # picker above shows the type of layer in its name, the shape in its label).
            hidden_columns=["type", "std"],
            css_classes=["tt-layers"],
        )
        # -- main-area selectors
        self.method_select = pn.widgets.Select(
            label="CAM method", options=list(CAM_METHODS), css_classes=["tt-method"]
        )
        self.class_select = pn.widgets.Select(
            label="Class", options={"any class": None}, css_classes=["tt-class"]
        )
        self.compare_select = pn.widgets.Select(
            label="Compare with", options=[], css_classes=["tt-compare-with"]
        )

        # -- views: each is a container refilled by one builder
        self._builders: dict[str, Callable[[], Any]] = {
            "thumbnail": self._build_thumbnail,
            "feature_maps": self._build_feature_maps,
            "zoom": self._build_zoom,
            "top_samples": self._build_top_samples,
            "distribution": self._build_distribution,
            "distributions": self._build_distributions,
            "dead_units": self._build_dead_units,
            "cam": self._build_cam,
            "cam_grid": self._build_cam_grid,
            "compare": self._build_compare,
        }
        self._tab_of = {
            "feature_maps": 0,
            "zoom": 0,
            "top_samples": 0,
            "distribution": 1,
            "distributions": 1,
            "dead_units": 1,
            "cam": 2,
            "cam_grid": 2,
            "compare": 3,
        }
        self._views = {
            name: pn.Column(css_classes=[f"tt-{name.replace('_', '-')}"], margin=0)
            for name in self._builders
            if name != "thumbnail"
        }
        self._views["thumbnail"] = self.thumbnail
        self.tabs = self._build_tabs()
        self.layout = self._build_layout()

        self.run_select.param.watch(self._on_run, "value")
        self.rescan_button.on_click(self._on_rescan)
        self.live_toggle.param.watch(self._on_live, "value")
        self.layer_select.param.watch(self._on_layer, "value")
        self.layer_list.param.watch(self._on_table_selection, "selection")
        self.sample_slider.param.watch(self._on_sample, "value")
        self.channel_slider.param.watch(self._on_channel, "value")
        self.method_select.param.watch(lambda _: self._update("cam", "cam_grid"), "value")
        self.class_select.param.watch(lambda _: self._update("cam_grid"), "value")
        self.compare_select.param.watch(lambda _: self._update("compare"), "value")
        self.tabs.param.watch(self._on_tab, "active")

        if not ids:
            self._warn(f"no run under {catalog.root}: capture one with `tensortap capture`")
        elif defer and pn.state.curdoc is not None:
            pn.state.onload(self._open_selected)
        else:
            self._open_selected()

    # -- layout

    def _build_tabs(self) -> pn.Tabs:
        v = self._views
        feature_tab = pn.Column(
            pn.pane.Markdown("### Channel maps of the layer for the chosen sample"),
            v["feature_maps"],
            pn.Row(
                pn.Column(pn.pane.Markdown("### Chosen channel"), v["zoom"]),
                pn.Column(pn.pane.Markdown("### Samples that excite it most"), v["top_samples"]),
            ),
            name="Feature maps",
        )
        distribution_tab = pn.Column(
            pn.Row(
                pn.Column(pn.pane.Markdown("### This layer"), v["distribution"]),
                pn.Column(pn.pane.Markdown("### Dead and saturated units"), v["dead_units"]),
            ),
            pn.pane.Markdown("### All layers"),
            v["distributions"],
            name="Distributions",
        )
        cam_tab = pn.Column(
            pn.Row(self.method_select, self.class_select),
            pn.Row(
                pn.Column(pn.pane.Markdown("### Chosen sample"), v["cam"]),
                pn.Column(pn.pane.Markdown("### Samples of the chosen class"), v["cam_grid"]),
            ),
            name="CAM",
        )
        compare_tab = pn.Column(self.compare_select, v["compare"], name="Compare")
        return pn.Tabs(
            feature_tab,
            distribution_tab,
            cam_tab,
            compare_tab,
            dynamic=False,
            sizing_mode="stretch_width",
        )

    def _build_layout(self) -> pn.viewable.Viewable:
        sidebar = pn.Column(
            pn.Row(self.run_select, self.rescan_button),
            self.live_toggle,
            self.status,
            pn.layout.Divider(),
            self.layer_select,
            self.layer_list,
            pn.layout.Divider(),
            self.sample_slider,
            pn.Row(self.thumbnail, self.sample_info),
            pn.layout.Divider(),
            self.channel_slider,
            width=_SIDEBAR_PX,
            css_classes=["tt-sidebar"],
        )
        header = pn.Row(
            pn.pane.Markdown(
                "## tensortap",
                margin=(0, 10),
                styles={"color": "white"},
            ),
            pn.pane.Markdown(
                f"serving runs under `{self.catalog.root}`",
                margin=(0, 10),
                align="center",
                styles={"color": "#d0e4f5"},
            ),
            styles={"background": "#1f4e79"},
            sizing_mode="stretch_width",
        )
        return pn.Column(
            header,
            self.notice,
            pn.Row(sidebar, pn.Column(self.tabs, sizing_mode="stretch_width")),
            sizing_mode="stretch_width",
        )

    def servable(self) -> pn.viewable.Viewable:
        """The Panel object a server hands to one session."""
        return self.layout

    # -- messages

    def _warn(self, text: str, kind: str = "warning") -> None:
        self.notice.object = text
        self.notice.alert_type = kind
        self.notice.visible = True

    def _clear_warning(self) -> None:
        self.notice.visible = False

    # -- opening runs

    def _open_selected(self) -> None:
        self._open(self.run_select.value)

    def _open(self, run_id: str | None) -> None:
        from tensortap.core.run import open_run

        self._stop_live()
        self.run = None
        self._zoom_maps = None
        started = time.perf_counter()
        try:
            entry = self.catalog.resolve(run_id)
            run = open_run(entry.path)
            layers = list(run.layers)
            table = layer_table(run)
        except Exception as err:  # a bad or partial run is a message, never a broken page
            log.warning("cannot open run %r: %s", run_id, err)
            self._warn(f"Cannot open run {run_id!r}: {err}", "danger")
            self.status.object = ""
            for view in self._views.values():
                view.objects = []
            return
        self.run = run
        self._clear_warning()
        with pn.io.hold():
            self._busy = True
            try:
                self.layer_list.value = table
                self.layer_select.options = {
                    f"{key}  ({table.loc[key, 'shape']})": key for key in layers
                }
                spatial = [k for k in layers if table.loc[k, "shape"].count("×") >= 2]
                self.layer_select.value = (spatial or layers or [None])[-1]
                self._select_table_row()
                self._set_sample_range()
                self.sample_slider.value = 0
                self._set_channel_range()
                others = [e.id for e in self.catalog.runs() if e.id != entry.id]
                self.compare_select.options = others
                self.compare_select.value = others[0] if others else None
                self._set_class_options()
            finally:
                self._busy = False
            self._update_status()
            self._update(*self._builders)
        self.timings["open"] = time.perf_counter() - started
        if run.status == "capturing":
            self.live_toggle.value = True  # a run still being written: follow it
        elif self.live_toggle.value:
            self._start_live()

    def _set_sample_range(self) -> None:
        n = self.run.samples if self.run is not None else 0
        # A slider whose start equals its end is an error in the browser: keep end ≥ 1 and
        # let the views say "no such sample" instead.
        self.sample_slider.end = max(n - 1, 1)
        self.sample_slider.fixed_end = max(n - 1, 1)

    def _channels(self) -> int:
        if self.run is None or self.layer_select.value is None:
            return 0
        stats = self.run.stats(self.layer_select.value)
        return int(stats.sizes.get("channel", 1))

    def _set_channel_range(self) -> None:
        n = self._channels()
        self.channel_slider.end = max(n - 1, 1)
        self.channel_slider.fixed_end = max(n - 1, 1)
        if self.channel_slider.value > n - 1:
            self.channel_slider.value = 0

    def _set_class_options(self) -> None:
        """Classes seen among the labels and predictions, for the CAM grid's filter."""
        options: dict[str, Any] = {"any class": None}
        run = self.run
        names = run.attrs.get("class_names") or []
        seen: set[int] = set()
        for values in (run.labels, run.predictions):
            if values is not None and np.issubdtype(values.dtype, np.integer):
                seen |= {int(v) for v in np.unique(values.values)}
        for c in sorted(seen):
            options[f"{c}: {names[c]}" if c < len(names) else str(c)] = c
        current = self.class_select.value
        self.class_select.options = options
        self.class_select.value = current if current in options.values() else None

    def _update_status(self) -> None:
        run = self.run
        if run is None:
            self.status.object = ""
            return
        attrs = run.attrs
        model = attrs.get("model", {}) or {}
        state = run.status
        # A CSS dot, not an emoji: headless Chromium (and many Linux desktops) has no emoji
        # font and drew empty boxes.
        colour = {"complete": "#2e7d32", "capturing": "#e69500", "failed": "#c62828"}.get(
            state, "#888888"
        )
        badge = (
            f'<span style="display:inline-block;width:0.7em;height:0.7em;border-radius:50%;'
            f'background:{colour};vertical-align:baseline"></span>'
        )
        self.status.object = (
            f"**{model.get('name', 'model')}** · {attrs.get('framework', '')} · "
            f"{badge} {state} · **{run.samples}** samples · {len(run.layers)} layers"
        )

    # -- live mode

    def _on_live(self, event: Any) -> None:
        if event.new:
            self._start_live()
        else:
            self._stop_live()

    def _start_live(self) -> None:
        if self._live_callback is None and pn.state.curdoc is not None:
            self._live_callback = pn.state.add_periodic_callback(
                self.poll, period=self._live_period_ms
            )

    def _stop_live(self) -> None:
        if self._live_callback is not None:
            self._live_callback.stop()
            self._live_callback = None

    def poll(self) -> bool:
        """Re-read the run's commit record; redraw what new samples change.

        Called every ``live_period_ms`` in live mode.

        Returns
        -------
        bool
            Whether the run changed (more samples or another status).
        """
        run = self.run
        if run is None:
            return False
        before = (run.samples, run.status)
        try:
            run.refresh()
        except Exception as err:  # a capture that died mid-write: say so, keep serving
            self._warn(f"live update failed: {err}")
            return False
        if (run.samples, run.status) == before:
            return False
        with pn.io.hold():
            self._set_sample_range()
            self._update_status()
            self.layer_list.value = layer_table(run)
            self._update("distribution", "distributions", "dead_units", "top_samples")
            self._set_class_options()
            if before[0] == 0:  # the first samples arrived: everything can be drawn now
                self._update(*self._builders)
        return True

    # -- events

    def _on_rescan(self, _: Any) -> None:
        ids = [entry.id for entry in self.catalog.runs(rescan=True)]
        current = self.run_select.value
        self.run_select.options = ids
        if current in ids:
            self.run_select.value = current

    def _on_run(self, event: Any) -> None:
        if not self._busy:
            self._open(event.new)

    def _on_layer(self, event: Any) -> None:
        if self._busy or self.run is None:
            return
        with pn.io.hold():
            self._busy = True
            try:
                self._select_table_row()
                self._set_channel_range()
            finally:
                self._busy = False
            self._update(
                "feature_maps",
                "zoom",
                "top_samples",
                "distribution",
                "cam",
                "cam_grid",
                "compare",
            )

    def _select_table_row(self) -> None:
        keys = list(self.layer_list.value.index)
        if self.layer_select.value in keys:
            self.layer_list.selection = [keys.index(self.layer_select.value)]

    def _on_table_selection(self, event: Any) -> None:
        if self._busy or not event.new:
            return
        keys = list(self.layer_list.value.index)
        if event.new[0] < len(keys):
            self.layer_select.value = keys[event.new[0]]

    def _on_sample(self, _: Any) -> None:
        if not self._busy and self.run is not None:
            self._update("thumbnail", "feature_maps", "zoom", "cam")

    def _on_channel(self, _: Any) -> None:
        if not self._busy and self.run is not None:
            self._update("zoom", "top_samples")

    def _on_tab(self, event: Any) -> None:
        due = [name for name in self._stale if self._tab_of.get(name) == event.new]
        if due:
            self._update(*due)

    # -- drawing

    def _update(self, *names: str) -> None:
        """Redraw the named views now if visible, else when their tab is shown."""
        for name in names:
            tab = self._tab_of.get(name)
            if tab is not None and tab != self.tabs.active:
                self._stale.add(name)
                continue
            self._stale.discard(name)
            self._draw(name)

    def _draw(self, name: str) -> None:
        view = self._views[name]
        started = time.perf_counter()
        try:
            if self.run is None:
                raise RunNotFoundError("no run is open")
            obj = self._builders[name]()
        except TensortapError as err:  # the view cannot show this: say why, in place
            obj = pn.pane.Alert(str(err), alert_type="warning", margin=(5, 5))
        except Exception as err:
            log.exception("view %s failed", name)
            obj = pn.pane.Alert(
                f"{name.replace('_', ' ')} failed: {type(err).__name__}: {err}",
                alert_type="danger",
                margin=(5, 5),
            )
        if isinstance(obj, (hv.core.Dimensioned, hv.core.ViewableTree)):
            if not self._send(name, obj):
                self._show_new_plot(name, obj)
        else:  # a message: the plots kept for this view go
            self._piped.pop(name, None)
            view.objects = [obj]
        self.timings[name] = time.perf_counter() - started

    def _show_new_plot(self, name: str, obj: Any) -> None:
        """Show ``obj`` in a new plot; an element or overlay is shown through a DynamicMap
        fed by a Pipe, so that later frames of the same shape are drawn in place.

        The plots of the view's last few other frame shapes stay in the page, hidden:
        going back to a layer seen before (a frequent back-and-forth) then updates its
        plot instead of building one.
        """
        signature = _frame_signature(obj)
        # linked_axes=False: Panel links the ranges of every plot in the page whose
        # dimensions share names, so a 6×6 zoomed map would crop the 12×12 tiles of
        # another view to its own range (blank panes, missing titles).
        options = {"backend": "bokeh", "linked_axes": False, "margin": (0, 5)}
        view = self._views[name]
        if signature is None:  # a layout: no DynamicMap can hold it
            self._piped.pop(name, None)
            view.objects = [pn.pane.HoloViews(obj, **options)]
            return
        pipe = hv.streams.Pipe(data=obj)
        pane = pn.pane.HoloViews(hv.DynamicMap(lambda data: data, streams=[pipe]), **options)
        kept = [
            entry
            for entry in self._piped.get(name, [])[: _KEPT_PLOTS - 1]
            if entry[0] in view.objects
        ]
        for entry in kept:
            entry[0].visible = False
        self._piped[name] = [(pane, pipe, signature), *kept]
        view.objects = [pane, *(entry[0] for entry in kept)]

    def _send(self, name: str, obj: Any) -> bool:
        """Draw ``obj`` into a plot this view already has for frames of its shape.

        Replacing a pane's object builds a new Bokeh figure (axes, tools, glyphs, colour
        bar: ~100-300 ms, most of an interaction's budget); pushing a frame of the same
        structure and size only replaces the data and titles of the existing models.
        Returns whether it did (else the caller builds a new plot).
        """
        entries = self._piped.get(name)
        signature = _frame_signature(obj)
        view = self._views[name]
        match = next((e for e in entries or [] if e[2] == signature and e[0] in view.objects), None)
        if signature is None or match is None:
            return False
        pane, pipe, _ = match
        try:
            pipe.send(obj)
        except Exception:  # an update HoloViews cannot do in place: draw a new plot
            log.debug("view %s: in-place update failed, redrawing", name, exc_info=True)
            return False
        if entries[0] is not match:  # back to a hidden plot: show it, hide the others
            # Visibility only: reordering view.objects would make Panel walk every model
            # of the page again (~80 ms).
            for other, *_ in entries:
                other.visible = other is pane
            entries.remove(match)
            entries.insert(0, match)
        return True

    # -- builders: one viz call each

    @property
    def _key(self) -> str:
        return self.layer_select.value

    def _sample(self) -> int:
        n = self.run.samples
        if n == 0:
            from tensortap.core.errors import ViewError

            raise ViewError(
                "no committed sample yet" + (" — live mode is on" if self.live_toggle.value else "")
            )
        return min(int(self.sample_slider.value), n - 1)

    def _build_thumbnail(self) -> Any:
        sample = self._sample()
        run = self.run
        parts = [f"**sample {sample}**"]
        names = run.attrs.get("class_names") or []

        def _class(value: Any) -> str:
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(names):
                return f"{value} ({names[int(value)]})"
            return str(value)

        if run.labels is not None:
            parts.append(f"label **{_class(run.labels.values[sample])}**")
        if run.predictions is not None:
            parts.append(f"prediction **{_class(run.predictions.values[sample])}**")
        self.sample_info.object = "<br>".join(parts)
        if not run.input_names:
            return pn.pane.Markdown("*(inputs not stored)*")
        return input_thumbnail(run, sample)

    def _build_feature_maps(self) -> Any:
        # One mosaic image, not one figure per channel: 64 Bokeh figures took seconds to
        # build per sample on a 256-channel layer; one image with its labels takes tens of
        # milliseconds (benchmarks/RESULTS.md, Serve).
        with warnings.catch_warnings():  # "showing 64 of 256": the title says so already
            warnings.simplefilter("ignore", UserWarning)
            return self._viz.feature_mosaic(
                self.run,
                self._key,
                sample=self._sample(),
                max_channels=_GRID_CHANNELS,
                labels=True,
                frame_px=_GRID_PX,
            )

    def _build_zoom(self) -> Any:
        """The chosen channel's map alone, with axes and its own colour range.

        Drawn apart from the grid so that choosing a channel redraws this small plot only
        (and reaches channels beyond the grid's first 64).
        """
        from tensortap.viz._run import check_channel, check_sample, layer_map, sample_caption
        from tensortap.viz.feature_maps import map_image

        activation = self.run.activation(self._key)
        position = check_sample(int(activation.sizes["sample"]), self._sample())
        one = layer_map(activation.isel(sample=position), self._key)
        if "height" not in one.dims:
            return pn.pane.Markdown(
                f"Layer `{self._key}` has no channel maps: the grid above shows all of it."
            )
        channel = check_channel(
            self._key, int(one.sizes["channel"]), int(self.channel_slider.value)
        )
        # The whole sample is one chunk: read it once and keep it, so that choosing
        # another channel of the same sample reads nothing.
        cache_key = (str(self.run.path), id(self.run), self.run.samples, self._key, position)
        if self._zoom_maps is None or self._zoom_maps[0] != cache_key:
            self._zoom_maps = (cache_key, np.asarray(one.values))
        values = np.asarray(self._zoom_maps[1][channel], dtype=np.float64)
        title = f"channel {channel} · {sample_caption(self.run, position)}"
        image = map_image(values, activation, (str(one.dims[1]), str(one.dims[2])), title=title)
        return image.opts(width=400, height=340, backend="bokeh")

    def _build_top_samples(self) -> Any:
        # One RGB mosaic with captions, not nine figures (see _build_feature_maps).
        return self._viz.top_samples(
            self.run, self._key, int(self.channel_slider.value), k=9, layout="mosaic"
        )

    def _build_distribution(self) -> Any:
        return self._viz.distribution(self.run, self._key)

    def _build_distributions(self) -> Any:
        return self._viz.distributions(self.run)

    def _build_dead_units(self) -> Any:
        return self._viz.dead_units(self.run)

    def _build_cam(self) -> Any:
        return self._viz.cam_overlay(
            self.run, self._key, sample=self._sample(), method=self.method_select.value
        )

    def _build_cam_grid(self) -> Any:
        """CAMs of up to 9 samples predicted (else labelled) as the chosen class."""
        chosen = self.class_select.value
        samples: list[int] | None = None
        if chosen is not None:
            classes = self.run.predictions if self.run.predictions is not None else self.run.labels
            if classes is None:
                return pn.pane.Markdown("The run stores neither labels nor predictions.")
            samples = [int(p) for p in np.flatnonzero(classes.values == chosen)[:9]]
            if not samples:
                return pn.pane.Markdown(f"No committed sample of class {chosen}.")
        # One captioned mosaic: cheaper than nine figures, and the figure grid of this
        # view came out blank in Chromium.
        return self._viz.cam_grid(
            self.run,
            self._key,
            samples=samples,
            method=self.method_select.value,
            layout="mosaic",
        )

    def _build_compare(self) -> Any:
        other_id = self.compare_select.value
        if other_id is None:
            return pn.pane.Markdown(
                "Only one run is served: serve a folder holding two runs of the same model "
                "to compare them."
            )
        from tensortap.core.run import open_run

        other = open_run(self.catalog.resolve(other_id).path)
        return self._viz.compare(self.run, other, key=self._key)


# --------------------------------------------------------------------------- serving


def _session_app(catalog: RunCatalog, live_period_ms: int) -> pn.viewable.Viewable:
    """Build one session's page; ``?run=`` is validated by the catalog."""
    raw = pn.state.session_args.get("run") if pn.state.session_args else None
    run_id = raw[0].decode("utf-8", "replace") if raw else None
    app = TensortapApp(catalog, run_id, live_period_ms=live_period_ms)
    return app.servable()


def _origins(address: str, port: int) -> list[str]:
    """Hosts whose pages may open the websocket: the bound address, and localhost for
    loopback (browsers send whichever name the user typed)."""
    hosts = {address}
    if address in ("127.0.0.1", "localhost", "::1"):
        hosts |= {"127.0.0.1", "localhost"}
    elif address in ("0.0.0.0", "::", ""):
        import socket

        hosts |= {"127.0.0.1", "localhost", socket.gethostname(), socket.getfqdn()}
    return sorted(f"{host}:{port}" for host in hosts)


def make_server(
    path: str | os.PathLike[str],
    *,
    address: str = "127.0.0.1",
    port: int = 5006,
    show: bool = False,
    live_period_ms: int = 1000,
) -> Any:
    """Create (but do not start) the Bokeh server of ``tensortap serve``.

    Parameters
    ----------
    path
        A run, or a folder searched recursively for runs.
    address
        Interface to bind; loopback unless the caller says otherwise.
    port
        TCP port.
    show
        Open a browser tab once started.
    live_period_ms
        Live-mode polling period.

    Returns
    -------
    bokeh.server.server.Server
        Call ``.start()`` then ``.io_loop.start()``.

    Raises
    ------
    RunNotFoundError
        ``path`` does not exist or holds no run.
    """
    catalog = RunCatalog(path)
    runs = catalog.runs()
    if not runs:
        raise RunNotFoundError(
            f"no tensortap run under {str(path)!r}: a run is a folder whose zarr.json "
            "holds a 'tensortap' block; make one with `tensortap capture`"
        )
    hv.extension("bokeh", logo=False)
    pn.extension("tabulator", notifications=False)
    # HoloViews draws Bokeh plots with WebGL by default: one WebGL context per figure, and
    # Chromium keeps only 16 per page, so a page with a few grids lost its oldest plots
    # (blank panes, no error).  Canvas 2D has no such limit and is plenty for heatmaps.
    hv.renderer("bokeh").webgl = False

    def app() -> pn.viewable.Viewable:
        return _session_app(catalog, live_period_ms)

    # No static_dirs: nothing on disk is served but Panel's and Bokeh's own bundled
    # resources, so every script and stylesheet comes from this server (offline use).
    server = pn.serve(
        {"/": app},
        address=address,
        port=port,
        show=show,
        start=False,
        title="tensortap",
        websocket_origin=_origins(address, port),
        liveness=True,
        verbose=False,
    )
    server.tensortap_runs = runs  # for the caller's start-up line
    return server


def serve(
    path: str | os.PathLike[str],
    *,
    address: str = "127.0.0.1",
    port: int = 5006,
    show: bool = False,
    live_period_ms: int = 1000,
) -> None:
    """Serve the runs under ``path`` until interrupted (``tensortap serve``).

    Parameters are those of :func:`make_server`.
    """
    server = make_server(path, address=address, port=port, show=show, live_period_ms=live_period_ms)
    server.start()
    host = f"[{address}]" if ":" in address else address
    count = len(server.tensortap_runs)
    print(
        f"tensortap: serving {count} run{'s' * (count != 1)} under "
        f"{Path(path).expanduser().resolve()} at http://{host}:{server.port}/",
        flush=True,
    )
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
