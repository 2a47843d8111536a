"""The Training tab: a training run's views over steps (:mod:`tensortap.viz.steps`), each
marking the step the sidebar's step slider chose.

The other tabs show that one step (its probe tensors and statistics) as they show a
capture run; this one shows the whole training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import holoviews as hv
import panel as pn

from tensortap.viz.app.tabs import Tab

__all__ = ["TrainingTab"]

#: How the chosen step is marked on every view over steps.
_MARK = {"color": "#d62728", "line_width": 2, "line_dash": "dashed"}


def _marked(element: Any, mark: Any) -> Any:
    """``element`` with ``mark`` drawn over it (each panel of a layout)."""
    if isinstance(element, hv.Layout):
        return hv.Layout([panel * mark for panel in element]).cols(1)
    return element * mark


class TrainingTab(Tab):
    """:func:`viz.histogram_over_steps`, :func:`viz.step_curves`,
    :func:`viz.dead_units_over_steps` and :func:`viz.compare_steps`."""

    TITLE = "Training"
    SLUG = "training"
    FOLLOWS = {
        "layer": ("step_histogram", "step_curves", "step_compare"),
        "steps": ("step_histogram", "step_curves", "dead_over_steps", "step_compare"),
    }

    def builders(self) -> dict[str, Callable[[], Any]]:
        return {
            "step_histogram": self.histogram,
            "step_curves": self.curves,
            "dead_over_steps": self.dead_units,
            "step_compare": self.compare,
        }

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        return pn.Column(
            pn.pane.Markdown("### This layer's histogram over steps"),
            views["step_histogram"],
            pn.pane.Markdown("### Mean, spread and zeros over steps"),
            views["step_curves"],
            pn.pane.Markdown("### Dead units over steps"),
            views["dead_over_steps"],
            pn.pane.Markdown("### First step against the chosen one"),
            views["step_compare"],
            name=self.TITLE,
            sizing_mode="stretch_width",
        )

    def _step(self) -> int:
        return int(self.app.step_slider.value)

    def histogram(self) -> Any:
        training = self.app.training
        if training is None:
            return pn.pane.Markdown(
                "This run has no training steps: views over steps need a run written "
                "during training (`tt.CaptureCallback` in Keras' `fit`, `tt.Monitor` in a "
                "PyTorch loop)."
            )
        view = self.app.viz.histogram_over_steps(training, self.app.key)
        return view * hv.HLine(self._step()).opts(**_MARK)

    def curves(self) -> Any:
        if self.app.training is None:
            return pn.pane.Markdown("")
        view = self.app.viz.step_curves(self.app.training, self.app.key)
        return _marked(view, hv.VLine(self._step()).opts(**_MARK))

    def dead_units(self) -> Any:
        if self.app.training is None:
            return pn.pane.Markdown("")
        view = self.app.viz.dead_units_over_steps(self.app.training)
        return _marked(view, hv.VLine(self._step()).opts(**_MARK))

    def compare(self) -> Any:
        training = self.app.training
        if training is None:
            return pn.pane.Markdown("")
        steps = [int(s) for s in training.tensor_steps]
        step = self._step()
        if step not in steps or len(steps) < 2:
            return pn.pane.Markdown(
                "Comparing two steps needs two steps that stored tensors "
                f"(this run has {len(steps)}: {steps[:8]})."
            )
        first = steps[0] if steps[0] != step else steps[-1]
        return self.app.viz.compare_steps(training, first, step, key=self.app.key)
