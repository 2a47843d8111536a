"""``tensortap serve``: the interactive app over one run or a folder of runs."""

from __future__ import annotations

import click

__all__ = ["serve"]


@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. Loopback by default: other machines cannot connect.",
)
@click.option("--port", default=5006, show_default=True, type=click.IntRange(0, 65535))
@click.option("--show/--no-show", default=False, help="Open a browser tab.", show_default=True)
def serve(path: str, address: str, port: int, show: bool) -> None:
    """Serve an interactive app over PATH: one run, or a folder searched for runs.

    Only runs under PATH can be opened, whatever the URL asks for.  Live mode follows a
    capture that is still writing.  Stop with Ctrl-C.
    """
    from tensortap.viz.app import serve as serve_runs

    # A missing PATH or one without runs raises RunNotFoundError: one line, exit 2.
    serve_runs(path, address=address, port=port, show=show)
