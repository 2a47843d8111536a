"""The Distributions tab: the chosen layer's histogram, every layer's distribution, and
the dead and saturated units — all from the stored statistics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import panel as pn

from tensortap.viz.app.tabs import Tab

__all__ = ["DistributionsTab"]


class DistributionsTab(Tab):
    """:func:`viz.distribution`, :func:`viz.distributions`, :func:`viz.dead_units`."""

    TITLE = "Distributions"
    SLUG = "distributions"
    FOLLOWS = {
        "layer": ("distribution",),
        "samples": ("distribution", "distributions", "dead_units"),
    }

    def builders(self) -> dict[str, Callable[[], Any]]:
        app = self.app
        return {
            "distribution": lambda: app.viz.distribution(app.run, app.key),
            "distributions": lambda: app.viz.distributions(app.run),
            "dead_units": lambda: app.viz.dead_units(app.run),
        }

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        return pn.Column(
            # One below the other: side by side they need 1,150 px, more than a 1280-px
            # screen leaves beside the sidebar.
            pn.pane.Markdown("### This layer"),
            views["distribution"],
            pn.pane.Markdown("### Dead and saturated units"),
            views["dead_units"],
            pn.pane.Markdown("### All layers"),
            views["distributions"],
            name=self.TITLE,
            sizing_mode="stretch_width",
        )
