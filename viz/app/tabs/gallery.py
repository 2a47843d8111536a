"""The Samples tab: find samples — a gallery of stored inputs with label, prediction and
confidence, filtered (correct, misclassified, one label, one prediction, a confidence
range); a click on a tile chooses that sample everywhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import panel as pn

from tensortap.viz.app.tabs import Tab, side_by_side
from tensortap.viz.sample_table import FILTERS

__all__ = ["GalleryTab"]

_ANY = "any"
#: The value of "any": a Select whose value is None shows a blank box on load.
ANY = -1


def _class_options(values: Any, names: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {_ANY: ANY}
    for c in sorted({int(v) for v in values.dropna()}):
        options[f"{c}: {names[c]}" if 0 <= c < len(names) else str(c)] = c
    return options


class GalleryTab(Tab):
    """:func:`viz.gallery` of the samples that pass the filters."""

    TITLE = "Samples"
    SLUG = "samples"
    FOLLOWS = {"samples": ("gallery",)}

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.filter_select = pn.widgets.Select(
            label="Show", options=list(FILTERS), width=150, css_classes=["tt-filter"]
        )
        self.label_select = pn.widgets.Select(
            label="Label",
            options={_ANY: ANY},
            value=ANY,
            width=130,
            css_classes=["tt-filter-label"],
        )
        self.prediction_select = pn.widgets.Select(
            label="Prediction",
            options={_ANY: ANY},
            value=ANY,
            width=130,
            css_classes=["tt-filter-prediction"],
        )
        self.confidence = pn.widgets.RangeSlider(
            label="Confidence",
            start=0.0,
            end=1.0,
            value=(0.0, 1.0),
            step=0.05,
            width=220,
            css_classes=["tt-filter-confidence"],
        )
        for widget in self._filters():
            widget.param.watch(lambda _: self.app.update("gallery"), "value")

    @staticmethod
    def _chosen(select: Any) -> int | None:
        return None if select.value == ANY else int(select.value)

    def _filters(self) -> tuple[Any, ...]:
        return (self.filter_select, self.label_select, self.prediction_select, self.confidence)

    def builders(self) -> dict[str, Callable[[], Any]]:
        return {"gallery": self.gallery}

    def tile_positions(self) -> dict[str, Callable[[], list[int]]]:
        return {"gallery": self.positions}

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        return pn.Column(
            side_by_side(*self._filters()),
            pn.pane.Markdown(
                "Click a picture to choose that sample (sidebar, feature maps, CAM).",
                margin=(0, 10),
            ),
            views["gallery"],
            name=self.TITLE,
            sizing_mode="stretch_width",
        )

    def on_run_opened(self) -> None:
        self._set_class_options()

    def on_samples_committed(self) -> None:
        self._set_class_options()

    def _set_class_options(self) -> None:
        table = self.app.samples_table()
        names = self.app.run.attrs.get("class_names") or []
        for select, column in (
            (self.label_select, "label"),
            (self.prediction_select, "prediction"),
        ):
            options = _class_options(table[column], names)
            current = select.value
            select.options = options
            select.value = current if current in options.values() else ANY

    def state(self) -> dict[str, Any]:
        return {"filter": self.filter_select.value}

    def restore(self, state: Any) -> list[str]:
        if state.filter is None:
            return []
        if state.filter in FILTERS:
            self.filter_select.value = state.filter
            return []
        return [f"filter {state.filter!r} (one of {', '.join(FILTERS)})"]

    def watch(self, callback: Callable[[], None]) -> None:
        self.filter_select.param.watch(lambda _: callback(), "value")

    def positions(self) -> list[int]:
        """Positions the gallery shows, in order (for click-through)."""
        from tensortap.viz.gallery import MAX_TILES
        from tensortap.viz.sample_table import filter_samples

        low, high = self.confidence.value
        return filter_samples(
            self.app.samples_table(with_confidence=True),
            self.filter_select.value,
            label=self._chosen(self.label_select),
            prediction=self._chosen(self.prediction_select),
            min_confidence=low,
            max_confidence=high,
        )[:MAX_TILES]

    def gallery(self) -> Any:
        low, high = self.confidence.value
        return self.app.viz.gallery(
            self.app.run,
            filter=self.filter_select.value,
            label=self._chosen(self.label_select),
            prediction=self._chosen(self.prediction_select),
            min_confidence=low,
            max_confidence=high,
            table=self.app.samples_table(with_confidence=True),
        )
