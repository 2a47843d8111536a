"""One browser session's app: the open run, the sidebar's choices, the tabs and their views.

The session owns what the tabs share — the run, the layer, sample and channel, the drawing
of views (:class:`ViewSlot`: drawn when visible, in place when possible), live mode and the
URL — and each tab (``tabs/``) owns its own selectors and views.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import panel as pn

from tensortap.core.errors import RunNotFoundError, TensortapError, ViewError
from tensortap.viz.app.clicks import tile_at
from tensortap.viz.app.links import restore_view, view_state
from tensortap.viz.app.live import LiveAndSteps
from tensortap.viz.app.shared import open_shared, reads, shared_sample_table
from tensortap.viz.app.sidebar import Sidebar, header, status_text
from tensortap.viz.app.slots import ViewSlot
from tensortap.viz.app.state import ViewState
from tensortap.viz.app.summaries import (
    THUMBNAIL_PX,
    input_thumbnail,
    layer_table,
    sample_description,
)
from tensortap.viz.app.tabs import Tab
from tensortap.viz.app.tabs.cam import CamTab
from tensortap.viz.app.tabs.compare import CompareTab
from tensortap.viz.app.tabs.distributions import DistributionsTab
from tensortap.viz.app.tabs.feature_maps import FeatureMapsTab
from tensortap.viz.app.tabs.gallery import GalleryTab
from tensortap.viz.app.tabs.training import TrainingTab
from tensortap.viz.catalog import RunCatalog

__all__ = ["TAB_CLASSES", "TensortapApp"]

log = logging.getLogger(__name__)

#: The tabs, in page order.
TAB_CLASSES: tuple[type[Tab], ...] = (
    FeatureMapsTab,
    GalleryTab,
    DistributionsTab,
    CamTab,
    CompareTab,
    TrainingTab,
)
#: What the sidebar's thumbnail follows.
_THUMBNAIL_FOLLOWS = ("sample",)


class TensortapApp(LiveAndSteps):
    """One browser session's app over the runs of a :class:`RunCatalog`.

    Parameters
    ----------
    catalog
        Where runs may come from.
    run_id
        Run to show first (e.g. from ``?run=``); validated by the catalog. Default: the
        first run listed.
    state
        The rest of a shared URL's view (tab, layer, sample…), applied once the run opens.
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

    def __init__(
        self,
        catalog: RunCatalog,
        run_id: str | None = None,
        *,
        state: ViewState | None = None,
        live_period_ms: int = 1000,
        defer: bool = True,
    ) -> None:
        from tensortap import viz  # imported here: viz/__init__ re-exports this package

        self.viz = viz
        self.catalog = catalog
        self.run: Any = None
        #: The open training run (``self.run`` is then its chosen step), else ``None``.
        self.training: Any = None
        self.timings: dict[str, float] = {}
        self._live_period_ms = live_period_ms
        self._live_callback: Any = None
        self._busy = False  # set while one change fans out to several widgets
        self._stale: set[str] = set()
        self._pending_state = state

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

        self.sidebar = Sidebar(ids, first)
        for name in (
            "run_select",
            "rescan_button",
            "live_toggle",
            "status",
            "layer_select",
            "step_slider",
            "sample_slider",
            "sample_info",
            "thumbnail",
            "channel_slider",
            "layer_list",
        ):
            setattr(self, name, getattr(self.sidebar, name))

        self._thumbnail_png = pn.pane.PNG(
            None, width=THUMBNAIL_PX, height=THUMBNAIL_PX, fixed_aspect=True, margin=(5, 5)
        )
        self.tab_list: list[Tab] = [cls(self) for cls in TAB_CLASSES]
        self._slots: dict[str, ViewSlot] = {
            "thumbnail": ViewSlot(
                "thumbnail", self._needs_run(self._build_thumbnail), self.thumbnail
            )
        }
        self._tab_of: dict[str, int] = {}
        self._follows: dict[str, list[str]] = {c: ["thumbnail"] for c in _THUMBNAIL_FOLLOWS}
        for index, tab in enumerate(self.tab_list):
            clickable = tab.tile_positions()
            for name, build in tab.builders().items():
                on_tap = self._tile_click(clickable[name]) if name in clickable else None
                self._slots[name] = ViewSlot(name, self._needs_run(build), on_tap=on_tap)
                self._tab_of[name] = index
            for choice, names in tab.FOLLOWS.items():
                self._follows.setdefault(choice, []).extend(names)
        self._views = {name: slot.container for name, slot in self._slots.items()}
        # dynamic: the browser gets a hidden tab's models when it is first shown, so a
        # page opens with the visible tab's plots only (issue 16: open in under 1 s).
        self.tabs = pn.Tabs(
            *(tab.layout(self._views) for tab in self.tab_list),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        self.layout = pn.Column(
            header(catalog.root),
            self.notice,
            pn.Row(
                self.sidebar.layout(),
                pn.Column(self.tabs, sizing_mode="stretch_width", min_width=0),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
            css_classes=["tt-page"],
        )

        self.run_select.param.watch(self._on_run, "value")
        self.rescan_button.on_click(self._on_rescan)
        self.live_toggle.param.watch(self._on_live, "value")
        self.layer_select.param.watch(self._on_layer, "value")
        self.layer_list.param.watch(self._on_table_selection, "selection")
        self.step_slider.param.watch(self._on_step, "value")
        self.sample_slider.param.watch(lambda _: self._on_choice("sample"), "value")
        self.channel_slider.param.watch(lambda _: self._on_choice("channel"), "value")
        self.tabs.param.watch(self._on_tab, "active")
        for tab in self.tab_list:
            tab.watch(self._write_url)

        if not ids:
            self._warn(f"no run under {catalog.root}: capture one with `tensortap capture`")
        elif defer and pn.state.curdoc is not None:
            pn.state.onload(self._open_selected)
        else:
            self._open_selected()

    def servable(self) -> pn.viewable.Viewable:
        """The Panel object a server hands to one session."""
        return self.layout

    # -- what the tabs read

    @property
    def key(self) -> str:
        """The chosen layer."""
        return str(self.layer_select.value)

    def sample(self) -> int:
        """The chosen sample's position, within the committed samples."""
        n = self.run.samples
        if n == 0:
            raise ViewError(
                "no committed sample yet" + (" — live mode is on" if self.live_toggle.value else "")
            )
        return min(int(self.sample_slider.value), n - 1)

    def samples_table(self, *, with_confidence: bool = False) -> pd.DataFrame:
        """:func:`sample_table` of the open run (re-read when samples are committed).

        Without confidences unless asked: they read every stored output, seconds on a
        large run, and only the gallery's filters and captions need them.  Shared by the
        sessions showing the same run (:func:`shared_sample_table`).
        """
        return shared_sample_table(self.run, with_confidence=with_confidence)

    def select_sample(self, position: int, tab: str | None = None) -> None:
        """Show sample ``position`` (a click on a tile), on tab ``tab`` if given."""
        if self.run is None or not 0 <= position < self.run.samples:
            return
        self.sample_slider.value = int(position)
        if tab is not None:
            self.tabs.active = next(
                (i for i, t in enumerate(self.tab_list) if t.SLUG == tab), self.tabs.active
            )

    def update(self, *names: str) -> None:
        """Redraw the named views now if visible, else when their tab is shown."""
        for name in names:
            tab = self._tab_of.get(name)
            if tab is not None and tab != self.tabs.active:
                self._stale.add(name)
                continue
            self._stale.discard(name)
            slot = self._slots[name]
            slot.draw()
            self.timings[name] = slot.seconds

    def _tile_click(self, positions: Callable[[], list[int]]) -> Callable[..., None]:
        def clicked(shown: Any, x: float | None, y: float | None) -> None:
            index = tile_at(shown, x, y)
            if index is not None and self.run is not None:
                chosen = positions()
                if index < len(chosen):
                    self.select_sample(chosen[index])

        return clicked

    def _build_thumbnail(self) -> Any:
        """The chosen sample's stored input, and its label, prediction and confidence."""
        sample = self.sample()
        run = self.run
        row = self.samples_table().loc[sample].copy()
        row["confidence"] = self._confidence(sample)
        self.sample_info.object = sample_description(run, sample, row)
        if not run.input_names:
            return pn.pane.Markdown("*(inputs not stored)*")
        picture = input_thumbnail(run, sample)
        if not isinstance(picture, bytes):
            return picture
        # One PNG pane per session, its bytes replaced: the browser swaps the picture.
        self._thumbnail_png.object = picture
        return self._thumbnail_png

    def _confidence(self, sample: int) -> float:
        """The prediction's probability for one sample (one output read, not all)."""
        from tensortap.viz.sample_table import confidence

        run = self.run
        if run.predictions is None or not run.output_names:
            return float("nan")
        outputs = run.indexed().outputs() if hasattr(run, "indexed") else run.outputs()
        if outputs is None or outputs.ndim != 2:
            return float("nan")
        scores = np.asarray(
            outputs.isel(sample=slice(sample, sample + 1)).transpose("sample", ...).values
        )
        predicted = np.asarray(run.predictions.values[sample : sample + 1], dtype=np.int64)
        return float(confidence(scores, predicted)[0])

    def _needs_run(self, build: Callable[[], Any]) -> Callable[[], Any]:
        def checked() -> Any:
            if self.run is None:
                raise RunNotFoundError("no run is open")
            return build()

        return checked

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
        self._stop_live()
        self.run = self.training = None
        started = time.perf_counter()
        try:
            entry = self.catalog.resolve(run_id)
            run = open_shared(entry.path)
            if hasattr(run, "step_values"):  # a training run: every tab shows one step
                self.training, run = run, self._open_step(run)
            layers = list(run.layers)
            with reads():
                table = layer_table(run)
        except Exception as err:  # a bad or partial run is a message, never a broken page
            log.warning("cannot open run %r: %s", run_id, err)
            self._warn(f"Cannot open run {run_id!r}: {err}", "danger")
            self.status.object = ""
            for slot in self._slots.values():
                slot.clear()
            return
        self.run = run
        self.step_slider.visible = self.training is not None
        self._clear_warning()
        with pn.io.hold(), reads():
            self._busy = True
            try:
                self.layer_list.value = table
                self.layer_select.options = {
                    f"{key}  ({table.loc[key, 'shape']})": key for key in layers
                }
                spatial = [k for k in layers if table.loc[k, "shape"].count("×") >= 2]
                self.layer_select.value = (spatial or layers or [None])[-1]
                self._set_sample_range()
                self.sample_slider.value = 0
                self._set_channel_range()
                for tab in self.tab_list:
                    tab.on_run_opened()
                self._restore_state()
                self._select_table_row()
            finally:
                self._busy = False
            self._update_status()
            self.update(*self._slots)
        self.timings["open"] = time.perf_counter() - started
        self._write_url()
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

    def _update_status(self) -> None:
        self.status.object = "" if self.run is None else status_text(self.run)

    # -- the URL

    def view_state(self) -> ViewState:
        """What a link to this view carries."""
        return view_state(self)

    def _restore_state(self) -> None:
        """Apply a shared URL's view once its run is open; say what could not be."""
        state, self._pending_state = self._pending_state, None
        if state is not None and self.run is not None:
            dropped = restore_view(self, state)
            if dropped:
                self._warn("This link's view could not be restored in full: " + "; ".join(dropped))

    def _write_url(self) -> None:
        """Mirror the view into the address bar (no reload; the browser keeps history)."""
        location, document = pn.state.location, pn.state.curdoc
        if location is None or document is None or self.run is None or self._busy:
            return
        # On the next tick: a Location change made while Panel still handles the browser's
        # event (a tab click) reached the address bar only with the next event.
        document.add_next_tick_callback(self._push_url)

    def _push_url(self) -> None:
        location = pn.state.location
        if location is None or self.run is None:
            return
        search = "?" + urllib.parse.urlencode(self.view_state().to_query())
        if location.search != search:
            location.search = search

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

    def _on_choice(self, choice: str) -> None:
        if not self._busy and self.run is not None:
            self.update(*self._follows.get(choice, []))
            self._write_url()

    def _on_layer(self, _: Any) -> None:
        if self._busy or self.run is None:
            return
        with pn.io.hold():
            self._busy = True
            try:
                self._select_table_row()
                self._set_channel_range()
            finally:
                self._busy = False
            self.update(*self._follows.get("layer", []))
        self._write_url()

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

    def _on_tab(self, event: Any) -> None:
        due = [name for name in self._stale if self._tab_of.get(name) == event.new]
        if due:
            self.update(*due)
        self._write_url()
