"""What the sessions of one server share: opened runs, their sample tables, warm imports.

Every browser session used to open its run again (the metadata of every array, ~0.1-1 s)
and re-read what the sidebar and the gallery show.  A *complete* run does not change until
it is overwritten, so one read-only :class:`~tensortap.core.run.Run` serves every session;
a run still being captured is opened per session (each follows it at its own pace).

All of it runs on the Bokeh server's one event-loop thread: plain dicts, no locks.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["CachedRun", "open_shared", "reads", "shared_sample_table", "warm_up"]

#: Complete runs kept open (their metadata only: arrays stay lazy on disk).
KEPT_RUNS = 16

_runs: OrderedDict[str, tuple[tuple[int, int], Any]] = OrderedDict()
_tables: OrderedDict[tuple[int, int, bool], pd.DataFrame] = OrderedDict()


class CachedRun:
    """A run whose small per-layer reads are kept in memory: everything else is the run's.

    ``stats(key)`` holds ``sample_max`` and ``sample_mean`` (samples × channels), read by
    every top-samples view and the sidebar: stored one sample per inner chunk, one read
    was 512 chunk reads (~140 ms); kept, a channel's top samples read nothing.  The
    labels, predictions and target classes are kept too.  Kept values are dropped when
    the number of committed samples changes (live mode).

    Parameters
    ----------
    run
        The :class:`~tensortap.core.run.Run` (or training run) to wrap.
    """

    _KEPT = ("labels", "predictions", "target_classes")

    def __init__(self, run: Any) -> None:
        self._run = run
        self._stats: dict[str, Any] = {}
        self._kept: dict[str, Any] = {}
        self._samples = run.samples

    def __getattr__(self, name: str) -> Any:
        if name in CachedRun._KEPT:
            self._check_samples()
            if name not in self._kept:
                value = getattr(self._run, name)
                self._kept[name] = value.load() if value is not None else None
            return self._kept[name]
        return getattr(self._run, name)

    def _check_samples(self) -> None:
        if self._run.samples != self._samples:
            self._samples = self._run.samples
            self._stats.clear()
            self._kept.clear()

    def stats(self, key: str, *args: Any, **kwargs: Any) -> Any:
        """The run's ``stats(key)``, in memory (other arguments: read each time)."""
        if args or kwargs:
            return self._run.stats(key, *args, **kwargs)
        self._check_samples()
        if key not in self._stats:
            with reads():
                self._stats[key] = self._run.stats(key).load()
        return self._stats[key]

    def summary_stats(self, key: str) -> Any:
        """``stats(key)`` without its per-sample variables (``sample_mean``,
        ``sample_max``): what the layer table shows of every layer, read without the
        per-sample chunks (kept ones are reused)."""
        self._check_samples()
        if key in self._stats:
            return self._stats[key]
        stats = self._run.stats(key)
        return stats.drop_vars([v for v in ("sample_mean", "sample_max") if v in stats])

    def refresh(self) -> CachedRun:
        """Re-read the run's commit record (live mode)."""
        self._run.refresh()
        self._check_samples()
        return self

    def __repr__(self) -> str:
        return repr(self._run)


def _signature(path: Path) -> tuple[int, int]:
    """Changes when the run is overwritten or committed to (its root document and its
    commit record are rewritten then)."""
    stamps = []
    for part in ("zarr.json", "committed/zarr.json"):
        try:
            stamps.append((path / part).stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return stamps[0], stamps[1]


def open_shared(path: str | Path) -> Any:
    """The run at ``path``: the same object for every session while it is complete and
    unchanged on disk; a fresh one for a run still being written.

    Raises what :func:`~tensortap.core.run.open_run` raises.
    """
    from tensortap.core.run import open_run

    key = str(Path(path).resolve())
    signature = _signature(Path(key))
    cached = _runs.get(key)
    if cached is not None and cached[0] == signature:
        _runs.move_to_end(key)
        return cached[1]
    with reads():
        run = CachedRun(open_run(key))
    if run.status != "complete":
        _runs.pop(key, None)
        return run
    _runs[key] = (signature, run)
    while len(_runs) > KEPT_RUNS:
        _runs.popitem(last=False)
    return run


def shared_sample_table(run: Any, *, with_confidence: bool) -> pd.DataFrame:
    """:func:`~tensortap.viz.sample_table.sample_table` of ``run``, read once per run and
    number of committed samples (the confidences read every stored output: seconds on a
    large run)."""
    from tensortap.viz.sample_table import sample_table

    key = (id(run), int(run.samples), with_confidence)
    cached = _tables.get(key)
    if cached is None:
        with reads():
            cached = _tables[key] = sample_table(run, with_confidence=with_confidence)
        while len(_tables) > 2 * KEPT_RUNS:
            _tables.popitem(last=False)
    return cached


@contextlib.contextmanager
def reads() -> Iterator[None]:
    """Compute Dask reads in the calling thread.

    A view reads one sample or one channel (a few small chunks): Dask's thread pool cost
    more in hand-offs than the reads themselves (12 vs 17 ms for one sample of the
    serve benchmark's 4 MiB layer), and a server's sessions share its CPUs anyway.
    """
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


def warm_up() -> None:
    """Import and exercise, once per process, what a session's first page needs.

    Done when the server starts, so that the first visitor does not wait for seconds of
    imports (Dask's array backends, HoloViews' Bokeh plotting classes).
    """
    import holoviews as hv
    import numpy as np
    import panel as pn
    import xarray as xr
    from bokeh.document import Document

    from tensortap.viz.app.slots import ViewSlot

    xr.DataArray(np.zeros((2, 2))).chunk().values  # noqa: B018 - loads Dask's chunk managers
    # The views' own path (a DynamicMap fed by a Pipe, with a Tap), drawn then updated in
    # place: the first plot of each kind built in a process cost ~0.3 s more than later ones.
    frames = [
        lambda: hv.RGB(np.zeros((4, 4, 3))).opts(toolbar=None, xaxis=None, yaxis=None),
        lambda: hv.Image(np.zeros((4, 4))).opts(colorbar=True, tools=["hover"]),
    ]
    slots = [ViewSlot(f"warm-{i}", frame, on_tap=lambda *_: None) for i, frame in enumerate(frames)]
    for slot in slots:
        slot.draw()
    layout = pn.Column(
        *(slot.container for slot in slots),
        pn.widgets.Tabulator(pd.DataFrame({"a": [1.0]})),
        pn.widgets.EditableIntSlider(start=0, end=2),
        pn.Tabs(("a", pn.pane.Markdown("a"))),
    )
    layout.get_root(Document())
    for slot in slots:
        slot.draw()
