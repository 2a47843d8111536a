"""Live mode and training steps of the app's session: what changes while a run grows.

A mixin of :class:`tensortap.viz.app.session.TensortapApp`, kept apart so the session
module stays about building the page: live mode re-reads the commit record (or a training
run's steps) on a period; a training run's step slider picks the step every tab shows.
"""

from __future__ import annotations

import logging
from typing import Any

import panel as pn

from tensortap.core.errors import ViewError
from tensortap.viz.app.shared import CachedRun, reads
from tensortap.viz.app.summaries import layer_table

__all__ = ["LiveAndSteps"]

log = logging.getLogger(__name__)


class LiveAndSteps:
    """Live updates and the training-step slider (state lives on the session)."""

    run: Any
    training: Any

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
        with pn.io.hold(), reads():
            self._set_sample_range()
            self._update_status()
            self.layer_list.value = layer_table(run)
            for tab in self.tab_list:
                tab.on_samples_committed()
            self.update(*self._follows.get("samples", []))
            if before[0] == 0:  # the first samples arrived: everything can be drawn now
                self.update(*self._slots)
        return True

    def _poll_training(self) -> bool:
        """Live mode on a training run: new steps join the slider; the views over steps
        redraw (the chosen step's own views do not change)."""
        training = self.training
        before = (len(training.step_values), training.status)
        try:
            training.refresh()
        except Exception as err:  # a training that died mid-write: say so, keep serving
            self._warn(f"live update failed: {err}")
            return False
        if (len(training.step_values), training.status) == before:
            return False
        with pn.io.hold():
            self._busy = True
            try:
                self.step_slider.options = self._training_steps(training)
            finally:
                self._busy = False
            self._update_status()
            self.update(*self._follows.get("steps", []))
        return True

    def _training_steps(self, training: Any) -> list[int]:
        """The steps the step slider offers: those with probe tensors (what the maps
        need), or every committed step of a statistics-only run."""
        chosen = training.tensor_steps if len(training.tensor_steps) else training.step_values
        return [int(step) for step in chosen]

    def _open_step(self, training: Any) -> Any:
        """Set the step slider for ``training`` and return its chosen step, read like a
        capture run: the URL's step when it is one, else the latest."""
        offered = self._training_steps(training)
        if not offered:
            raise ViewError(
                f"the training run {training.path!r} has no committed step yet: wait for its "
                "first step, or turn on live mode"
            )
        wanted = getattr(self._pending_state, "step", None)
        step = wanted if wanted in offered else offered[-1]
        self._busy = True
        try:
            self.step_slider.options = offered
            self.step_slider.value = step
            self.step_slider.visible = True
        finally:
            self._busy = False
        return CachedRun(training.at(step))

    def _on_step(self, _: Any) -> None:
        """Another step of the training run: every view shows the new step."""
        if self._busy or self.training is None:
            return
        self.run = CachedRun(self.training.at(int(self.step_slider.value)))
        with pn.io.hold(), reads():
            self._busy = True
            try:
                self.layer_list.value = layer_table(self.run)
                self._select_table_row()
            finally:
                self._busy = False
            self._update_status()
            self.update(*self._slots)
        self._write_url()
