"""Serving the app: ``tensortap serve PATH`` (a Bokeh server over Panel, one app per
browser session).

Safety, because a served folder is a file-system view: the server binds 127.0.0.1 unless
asked otherwise, serves no static folder, and reaches runs only through
:class:`RunCatalog`, which refuses absolute paths, ``..``, symlinks and anything it did
not list itself — whatever the URL's ``?run=`` says.

Laziness, because runs can be many GB: a plain HTTP GET builds only the page skeleton;
the run is opened when the browser's websocket connects (``pn.state.onload``), which keeps
many concurrent page requests cheap.  Sessions whose browser has gone are dropped by the
Bokeh server after ``unused_session_lifetime_ms`` (see :func:`make_server`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import holoviews as hv
import panel as pn

from tensortap.core.errors import RunNotFoundError
from tensortap.viz.app.session import TensortapApp
from tensortap.viz.app.shared import warm_up
from tensortap.viz.app.state import ViewState
from tensortap.viz.catalog import RunCatalog

__all__ = ["make_server", "serve"]

log = logging.getLogger(__name__)

#: How long the server keeps a session whose browser disconnected, and how often it checks.
UNUSED_SESSION_LIFETIME_MS = 60_000
CHECK_UNUSED_SESSIONS_MS = 10_000


def _session_app(catalog: RunCatalog, live_period_ms: int) -> pn.viewable.Viewable:
    """Build one session's page; the URL's state (``?run=``, ``tab=``…) is validated."""
    from panel.io.resources import get_dist_path

    document = pn.state.curdoc
    if document is not None:
        # A session built when its websocket connects (reused sessions, below) has no page
        # request, and Panel then pointed its stylesheets at cdn.holoviz.org: this
        # server's own files, always (offline use).
        document.template_variables.setdefault("dist_url", get_dist_path(cdn=False))
    state, problems = ViewState.from_query(pn.state.session_args or {})
    app = TensortapApp(catalog, state.run, state=state, live_period_ms=live_period_ms)
    if problems and not app.notice.visible:
        app._warn("; ".join(problems))
    return app.servable()


def _origins(address: str, port: int) -> list[str]:
    """Hosts whose pages may open the websocket: the bound address, and localhost for
    loopback (browsers send whichever name the user typed)."""
    hosts = {address}
    if address in ("127.0.0.1", "localhost", "::1"):
        hosts |= {"127.0.0.1", "localhost"}
    elif address in ("0.0.0.0", "::", ""):
        import socket

        hosts |= {"127.0.0.1", "localhost", socket.gethostname(), socket.getfqdn()}
    return sorted(f"{host}:{port}" for host in hosts)


def make_server(
    path: str | os.PathLike[str],
    *,
    address: str = "127.0.0.1",
    port: int = 5006,
    show: bool = False,
    live_period_ms: int = 1000,
    unused_session_lifetime_ms: int = UNUSED_SESSION_LIFETIME_MS,
) -> Any:
    """Create (but do not start) the Bokeh server of ``tensortap serve``.

    Parameters
    ----------
    path
        A run, or a folder searched recursively for runs.
    address
        Interface to bind; loopback unless the caller says otherwise.
    port
        TCP port.
    show
        Open a browser tab once started.
    live_period_ms
        Live-mode polling period.
    unused_session_lifetime_ms
        How long a session whose browser is gone (or never connected) is kept.

    Returns
    -------
    bokeh.server.server.Server
        Call ``.start()`` then ``.io_loop.start()``.

    Raises
    ------
    RunNotFoundError
        ``path`` does not exist or holds no run.
    """
    catalog = RunCatalog(path)
    runs = catalog.runs()
    if not runs:
        raise RunNotFoundError(
            f"no tensortap run under {str(path)!r}: a run is a folder whose zarr.json "
            "holds a 'tensortap' block; make one with `tensortap capture`"
        )
    hv.extension("bokeh", logo=False)
    pn.extension("tabulator", notifications=False)
    # HoloViews draws Bokeh plots with WebGL by default: one WebGL context per figure, and
    # Chromium keeps only 16 per page, so a page with a few grids lost its oldest plots
    # (blank panes, no error).  Canvas 2D has no such limit and is plenty for heatmaps.
    hv.renderer("bokeh").webgl = False
    warm_up()  # the first visitor does not wait for the plotting imports

    # Every page request used to build a whole session (widgets, tabs: ~0.1-1 s of CPU
    # each), so 100 page loads took 22 s (issue 20) — 160 s on a loaded 2-CPU machine.
    # Reused, the page's HTML comes from one prepared session, and a browser's own session
    # is built from its request (its ?run=… included) when its websocket connects.
    pn.config.reuse_sessions = True

    def app() -> pn.viewable.Viewable:
        return _session_app(catalog, live_period_ms)

    # No static_dirs: nothing on disk is served but Panel's and Bokeh's own bundled
    # resources, so every script and stylesheet comes from this server (offline use).
    server = pn.serve(
        {"/": app},
        address=address,
        port=port,
        show=show,
        start=False,
        title="tensortap",
        websocket_origin=_origins(address, port),
        liveness=True,
        verbose=False,
        # Bokeh's own names: other spellings are passed on and silently ignored (the
        # server then kept idle sessions for its defaults, 15 s checked every 17 s).
        unused_session_lifetime_milliseconds=unused_session_lifetime_ms,
        check_unused_sessions_milliseconds=min(
            CHECK_UNUSED_SESSIONS_MS, unused_session_lifetime_ms
        ),
    )
    server.tensortap_runs = runs  # for the caller's start-up line
    return server


def serve(
    path: str | os.PathLike[str],
    *,
    address: str = "127.0.0.1",
    port: int = 5006,
    show: bool = False,
    live_period_ms: int = 1000,
) -> None:
    """Serve the runs under ``path`` until interrupted (``tensortap serve``).

    Parameters are those of :func:`make_server`.
    """
    server = make_server(path, address=address, port=port, show=show, live_period_ms=live_period_ms)
    server.start()
    host = f"[{address}]" if ":" in address else address
    count = len(server.tensortap_runs)
    print(
        f"tensortap: serving {count} run{'s' * (count != 1)} under "
        f"{Path(path).expanduser().resolve()} at http://{host}:{server.port}/",
        flush=True,
    )
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
