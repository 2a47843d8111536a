"""The CAM tab: the chosen sample's class activation map, and a grid of the samples whose
maps explain the chosen class.

The class selector lists the classes the stored gradients differentiate (the run's
``target``: each sample's label, its prediction, or one fixed class), and the grid picks
samples by that same class — so every map in the grid explains the class the selector
names.  A run with several targets per sample (a ``target`` dimension on gradients) would
list each (sample, target) pair's class here; :func:`sample_table`'s ``explained`` column
is the one place to widen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import panel as pn

from tensortap.core import cam as _core_cam
from tensortap.viz.app.tabs import Tab, side_by_side
from tensortap.viz.sample_table import explained_classes

__all__ = ["CAM_METHODS", "CamTab"]

#: Every CAM method of ``tt.cam`` (the gradient ones first, then EigenCAM, FEM...), in the
#: order the selector shows them.
CAM_METHODS = tuple(_core_cam.CAM_METHODS)
_ANY = "every class"
#: The value of "every class": a Select whose value is None shows a blank box on load.
EVERY = -1
#: Samples in the class grid.
_GRID_SAMPLES = 9


class CamTab(Tab):
    """:func:`viz.cam_overlay` of the chosen sample, :func:`viz.cam_grid` of a class."""

    TITLE = "CAM"
    SLUG = "cam"
    FOLLOWS = {"sample": ("cam",), "layer": ("cam", "cam_grid")}

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.method_select = pn.widgets.Select(
            label="CAM method", options=list(CAM_METHODS), width=160, css_classes=["tt-method"]
        )
        self.class_select = pn.widgets.Select(
            label="Class explained",
            options={_ANY: EVERY},
            value=EVERY,
            width=200,
            css_classes=["tt-class"],
        )
        self.target_note = pn.pane.Markdown("", margin=(20, 10, 0, 10), css_classes=["tt-target"])
        # the grid's tiles, in order, for click-through (see app.select_tile)
        self.grid_positions: list[int] = []
        self.method_select.param.watch(lambda _: self.app.update("cam", "cam_grid"), "value")
        self.class_select.param.watch(lambda _: self.app.update("cam_grid"), "value")

    def builders(self) -> dict[str, Callable[[], Any]]:
        return {"cam": self.cam, "cam_grid": self.cam_grid}

    def tile_positions(self) -> dict[str, Callable[[], list[int]]]:
        return {"cam_grid": lambda: self.grid_positions}

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        return pn.Column(
            pn.Row(self.method_select, self.class_select, self.target_note),
            side_by_side(
                pn.Column(pn.pane.Markdown("### Chosen sample"), views["cam"]),
                pn.Column(
                    pn.pane.Markdown("### Samples whose maps explain the class"),
                    views["cam_grid"],
                ),
            ),
            name=self.TITLE,
            sizing_mode="stretch_width",
        )

    def on_run_opened(self) -> None:
        self._set_method_options()
        self._set_class_options()

    def _set_method_options(self) -> None:
        """The CAM methods, then the run's stored explanations (``tt.explain``,
        ``tt.attribute``, and the input attributions of ``capture(attributions=...)``)."""
        from tensortap.core.explanation_store import explanation_names

        stored = [
            name
            for name in explanation_names(self.app.run)
            if name not in CAM_METHODS and not name.endswith("_auc")  # scores, not maps
        ]
        current = self.method_select.value
        self.method_select.options = [*CAM_METHODS, *stored]
        self.method_select.value = current if current in self.method_select.options else "gradcam"

    def on_samples_committed(self) -> None:
        self._set_class_options()

    def _set_class_options(self) -> None:
        run = self.app.run
        names = run.attrs.get("class_names") or []
        options: dict[str, Any] = {_ANY: EVERY}
        for c in explained_classes(self.app.samples_table()):
            options[f"{c}: {names[c]}" if 0 <= c < len(names) else str(c)] = c
        current = self.class_select.value
        self.class_select.options = options
        self.class_select.value = current if current in options.values() else EVERY
        target = run.attrs.get("target")
        self.target_note.object = f"maps explain the run's target: **{target}**" if target else ""

    def state(self) -> dict[str, Any]:
        chosen = self.class_select.value
        return {"method": self.method_select.value, "class_": None if chosen == EVERY else chosen}

    def restore(self, state: Any) -> list[str]:
        dropped = []
        if state.method is not None:
            if state.method in self.method_select.options:
                self.method_select.value = state.method
            else:
                known = ", ".join(self.method_select.options)
                dropped.append(f"method {state.method!r} (one of {known})")
        if state.class_ is not None:
            if state.class_ in self.class_select.options.values():
                self.class_select.value = state.class_
            else:
                dropped.append(f"class {state.class_} (no map of this run explains it)")
        return dropped

    def watch(self, callback: Callable[[], None]) -> None:
        for widget in (self.method_select, self.class_select):
            widget.param.watch(lambda _: callback(), "value")

    def cam(self) -> Any:
        app = self.app
        method = self.method_select.value
        if method not in CAM_METHODS:  # a stored explanation: no layer needed
            from tensortap.viz.explanations import explanation_overlay

            return explanation_overlay(app.run, method, sample=app.sample())
        return app.viz.cam_overlay(app.run, app.key, sample=app.sample(), method=method)

    def cam_grid(self) -> Any:
        """CAMs of up to 9 samples whose stored gradients explain the chosen class."""
        app = self.app
        chosen = self.class_select.value
        samples: list[int] | None = None
        if chosen != EVERY:
            explained = app.samples_table()["explained"]
            samples = [int(p) for p in np.flatnonzero(explained.fillna(-1) == chosen)]
            samples = samples[:_GRID_SAMPLES]
            if not samples:
                return pn.pane.Markdown(f"No committed sample's map explains class {chosen}.")
        self.grid_positions = (
            samples if samples is not None else list(range(min(_GRID_SAMPLES, app.run.samples)))
        )
        method = self.method_select.value
        if method not in CAM_METHODS:  # a stored explanation's overlays, three a row
            import holoviews as hv

            from tensortap.viz.explanations import explanation_overlay

            tiles = [explanation_overlay(app.run, method, sample=p) for p in self.grid_positions]
            return hv.Layout(tiles).cols(3)
        # One captioned mosaic: cheaper than nine figures, and the figure grid of this
        # view came out blank in Chromium.
        return app.viz.cam_grid(
            app.run, app.key, samples=samples, method=self.method_select.value, layout="mosaic"
        )
