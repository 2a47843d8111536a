"""The Compare tab: the open run beside another run of the same model
(:func:`viz.compare`: per-layer statistic differences and the chosen layer's maps).

The picker lists the runs that share the open run's architecture fingerprint first (the
only ones with layers in common) and every other run after them, under their own heading;
it never defaults to a run of another model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import panel as pn

from tensortap.core.errors import ViewError
from tensortap.viz.app.tabs import Tab

__all__ = ["CompareTab", "run_fingerprint"]

SAME_MODEL = "same model"
OTHER_MODELS = "other models (no layer in common)"


@lru_cache(maxsize=1024)
def _fingerprint_at(path: Path, mtime_ns: int) -> str | None:
    try:
        doc = json.loads((path / "zarr.json").read_bytes())
        value = doc["attributes"]["tensortap"].get("fingerprint")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return str(value) if value else None


def run_fingerprint(path: Path) -> str | None:
    """The architecture fingerprint a run's ``zarr.json`` records (``None`` if unknown).

    Read from the small root metadata only; cached per file version.
    """
    try:
        mtime = (path / "zarr.json").stat().st_mtime_ns
    except OSError:
        return None
    return _fingerprint_at(path, mtime)


class CompareTab(Tab):
    """:func:`viz.compare` of the open run and the picked one, for the chosen layer."""

    TITLE = "Compare"
    SLUG = "compare"
    FOLLOWS = {"layer": ("compare",), "sample": ("compare",), "channel": ("compare",)}

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.compare_select = pn.widgets.Select(
            label="Compare with", options=[], width=320, css_classes=["tt-compare-with"]
        )
        self.same_model: list[str] = []
        self.compare_select.param.watch(lambda _: self.app.update("compare"), "value")

    def builders(self) -> dict[str, Callable[[], Any]]:
        return {"compare": self.compare}

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        return pn.Column(
            self.compare_select, views["compare"], name=self.TITLE, sizing_mode="stretch_width"
        )

    def on_run_opened(self) -> None:
        app = self.app
        current = app.catalog.resolve(app.run_select.value)
        mine = run_fingerprint(current.path)
        same, other = [], []
        for entry in app.catalog.runs():
            if entry.id == current.id:
                continue
            fingerprint = run_fingerprint(entry.path)
            (same if mine is not None and fingerprint == mine else other).append(entry.id)
        self.same_model = same
        groups = {SAME_MODEL: same} if same else {}
        if other:
            groups[OTHER_MODELS] = other
        # Select's groups render as <optgroup>s; with no group, plain (empty) options.
        if groups:
            self.compare_select.groups = groups
        else:
            self.compare_select.options = []
        self.compare_select.value = same[0] if same else None

    def state(self) -> dict[str, Any]:
        return {"compare": self.compare_select.value}

    def restore(self, state: Any) -> list[str]:
        if state.compare is None:
            return []
        if state.compare in self.compare_select.values:
            self.compare_select.value = state.compare
            return []
        return [f"compare {state.compare!r} (not a run listed here)"]

    def watch(self, callback: Callable[[], None]) -> None:
        self.compare_select.param.watch(lambda _: callback(), "value")

    def compare(self) -> Any:
        app = self.app
        other_id = self.compare_select.value
        if other_id is None:
            if self.compare_select.values:
                raise ViewError(
                    "no other run of this model is served: runs of other models share no "
                    "layer with it; capture the same model again (or pick one below to see why)"
                )
            return pn.pane.Markdown(
                "Only one run is served: serve a folder holding two runs of the same model "
                "to compare them."
            )
        from tensortap.viz.app.shared import open_shared

        other = open_shared(app.catalog.resolve(other_id).path)
        return app.viz.compare(
            app.run,
            other,
            key=app.key,
            sample=min(app.sample(), max(other.samples - 1, 0)),
            channel=int(app.channel_slider.value),
        )
