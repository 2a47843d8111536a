"""The app's tabs: one module each, every tab a small class over the :mod:`tensortap.viz`
functions the Python API offers.

A tab declares its views (name → builder), which of the sidebar's choices each view follows
(``FOLLOWS``), and lays its views out; the session
(:class:`~tensortap.viz.app.session.TensortapApp`) owns the run, the sidebar and the
drawing, so a tab never opens a run nor draws by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import panel as pn

if TYPE_CHECKING:
    from tensortap.viz.app.session import TensortapApp

__all__ = ["Tab", "side_by_side"]


def side_by_side(*columns: Any) -> pn.Row:
    """Views next to each other (a Bokeh row: in CSS flex boxes, plots drawn after a tab
    switch came out collapsed, zero-width, in Chromium — issue 16)."""
    return pn.Row(*columns)


class Tab:
    """Base of the app's tabs.

    Parameters
    ----------
    app
        The session the tab belongs to: its run, sidebar choices and ``update``.

    Attributes
    ----------
    TITLE
        The tab's label.
    SLUG
        Its name in the URL (``tab=``).
    FOLLOWS
        Sidebar choice (``sample``, ``channel``, ``layer``, ``samples``: new samples
        committed) → the views of this tab it changes.
    """

    TITLE: ClassVar[str] = ""
    SLUG: ClassVar[str] = ""
    FOLLOWS: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, app: TensortapApp) -> None:
        self.app = app

    def builders(self) -> dict[str, Callable[[], Any]]:
        """View name → function building what it shows (see :class:`ViewSlot`)."""
        raise NotImplementedError

    def layout(self, views: Mapping[str, pn.Column]) -> pn.Column:
        """The tab's content, given the container of each of its views."""
        raise NotImplementedError

    def tile_positions(self) -> dict[str, Callable[[], list[int]]]:
        """View name → the sample position of each of its mosaic's tiles, in tile order,
        for the views where clicking a tile chooses that sample."""
        return {}

    def on_run_opened(self) -> None:
        """A run was opened (``app.run`` is set): refresh this tab's own selectors."""

    def on_samples_committed(self) -> None:
        """Live mode saw new samples: refresh selectors that list them."""

    def state(self) -> dict[str, Any]:
        """This tab's part of the URL state (keys of :class:`ViewState`)."""
        return {}

    def restore(self, state: Any) -> list[str]:
        """Apply the URL state's parts that belong to this tab; return what was dropped."""
        return []

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after any change of this tab's own selectors (URL sync)."""
