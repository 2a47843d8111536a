"""Between the session and its URL: the view a link carries, and applying one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tensortap.viz.app.state import ViewState

if TYPE_CHECKING:
    from tensortap.viz.app.session import TensortapApp

__all__ = ["restore_view", "view_state"]


def view_state(app: TensortapApp) -> ViewState:
    """The open view of ``app``: run, tab, layer, sample, channel and each tab's own."""
    active = app.tab_list[app.tabs.active].SLUG if app.tab_list else None
    values: dict[str, Any] = {
        "run": app.run_select.value,
        "tab": active,
        "step": int(app.step_slider.value) if app.training is not None else None,
        "layer": app.layer_select.value,
        "sample": int(app.sample_slider.value) if app.run is not None else None,
        "channel": int(app.channel_slider.value) if app.run is not None else None,
    }
    for tab in app.tab_list:
        values.update(tab.state())
    return ViewState(**values)


def restore_view(app: TensortapApp, state: ViewState) -> list[str]:
    """Apply ``state`` to ``app``, whose run is open; one line per value it could not."""
    dropped: list[str] = []
    if state.step is not None:
        if app.training is None:
            dropped.append(f"step {state.step} (this run has no training steps)")
        elif state.step != app.step_slider.value:  # the run opened at the URL's step if it could
            dropped.append(f"step {state.step} (not a committed step of this run)")
    if state.layer is not None:
        if state.layer in app.run.layers:
            app.layer_select.value = state.layer
            app._set_channel_range()  # the channel range of the restored layer
        else:
            dropped.append(f"layer {state.layer!r} (not in this run)")
    for name, slider in (("sample", app.sample_slider), ("channel", app.channel_slider)):
        value = getattr(state, name)
        if value is not None:
            if value <= slider.end:
                slider.value = value
            else:
                dropped.append(f"{name} {value} (the last is {slider.end})")
    for tab in app.tab_list:
        dropped += tab.restore(state)
    if state.tab is not None:
        slugs = [t.SLUG for t in app.tab_list]
        if state.tab in slugs:
            app.tabs.active = slugs.index(state.tab)
        else:
            dropped.append(f"tab {state.tab!r} (one of {', '.join(slugs)})")
    return dropped
