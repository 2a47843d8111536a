"""The app's sidebar and header: run picker, live mode, layer list, sample and channel.

Widgets only; what a change does is wired by the session
(:class:`~tensortap.viz.app.session.TensortapApp`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
from bokeh.models.widgets.tables import NumberFormatter

__all__ = ["SIDEBAR_PX", "Sidebar", "header", "status_text"]

#: Sidebar width: with the main area's 860 px of plots, the page fits 1280 px.
SIDEBAR_PX = 360


class Sidebar:
    """The sidebar's widgets.

    Parameters
    ----------
    run_ids
        Runs offered by the picker.
    first
        The run selected first.
    """

    def __init__(self, run_ids: list[str], first: str | None) -> None:
        self.run_select = pn.widgets.Select(
            label="Run",
            options=run_ids,
            value=first,
            width=SIDEBAR_PX - 110,
            css_classes=["tt-run"],
        )
        self.rescan_button = pn.widgets.Button(label="↻ rescan", width=80, align="end")
        self.live_toggle = pn.widgets.Checkbox(
            label="Live: follow a running capture", css_classes=["tt-live"]
        )
        self.status = pn.pane.Markdown("", margin=(0, 10), css_classes=["tt-status"])
        self.layer_select = pn.widgets.Select(
            label="Layer", options=[], width=SIDEBAR_PX - 20, css_classes=["tt-layer"]
        )
        # Training runs only: the step whose probe tensors and statistics every tab shows.
        self.step_slider = pn.widgets.DiscreteSlider(
            label="Step",
            options=[0],
            value=0,
            width=SIDEBAR_PX - 20,
            visible=False,
            css_classes=["tt-step"],
        )
        self.sample_slider = pn.widgets.EditableIntSlider(
            label="Sample",
            start=0,
            end=1,
            value=0,
            fixed_start=0,
            width=SIDEBAR_PX - 20,
            css_classes=["tt-sample"],
        )
        self.sample_info = pn.pane.Markdown(
            "", margin=(0, 10), width=SIDEBAR_PX - 180, css_classes=["tt-sample-info"]
        )
        self.thumbnail = pn.Column(css_classes=["tt-thumbnail"], margin=0)
        self.channel_slider = pn.widgets.EditableIntSlider(
            label="Channel",
            start=0,
            end=1,
            value=0,
            fixed_start=0,
            width=SIDEBAR_PX - 20,
            css_classes=["tt-channel"],
        )
        self.layer_list = pn.widgets.Tabulator(
            pd.DataFrame(),
            disabled=True,
            selectable=1,
            show_index=True,
            height=260,
            width=SIDEBAR_PX - 20,
            layout="fit_data_table",
            # Long layer names and shapes are cut to the column: the full text on hover.
            configuration={"columnDefaults": {"tooltip": True}},
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

    def layout(self) -> pn.Column:
        """The sidebar column."""
        return pn.Column(
            pn.Row(self.run_select, self.rescan_button),
            self.live_toggle,
            self.status,
            _rule(),
            self.layer_select,
            self.layer_list,
            _rule(),
            self.step_slider,
            self.sample_slider,
            pn.Row(self.thumbnail, self.sample_info),
            _rule(),
            self.channel_slider,
            width=SIDEBAR_PX,
            css_classes=["tt-sidebar"],
        )


def _rule() -> pn.pane.HTML:
    """A horizontal rule (Panel's Divider loads its stylesheet from a CDN in sessions
    built when their websocket connects; this page loads nothing from outside)."""
    return pn.pane.HTML(
        '<hr style="border:none;border-top:1px solid #ccc;margin:4px 0">',
        sizing_mode="stretch_width",
        margin=(0, 5),
    )


def header(root: Any) -> pn.Row:
    """The page's title bar, naming the served folder."""
    return pn.Row(
        pn.pane.Markdown("## tensortap", margin=(0, 10), styles={"color": "white"}),
        pn.pane.Markdown(
            f"serving runs under `{root}`",
            margin=(0, 10),
            align="center",
            styles={"color": "#d0e4f5"},
        ),
        styles={"background": "#1f4e79"},
        sizing_mode="stretch_width",
    )


def status_text(run: Any) -> str:
    """The run's one-line status: model, framework, state badge, samples, layers."""
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
    return (
        f"**{model.get('name', 'model')}** · {attrs.get('framework', '')} · "
        f"{badge} {state} · **{run.samples}** samples · {len(run.layers)} layers"
    )
