"""The ``tensortap`` command line (``python -m tensortap``).

Every command has ``--help``.  Bad input ends with one line on stderr, ``error: ...``,
and exit status 2 — never a traceback (``TensortapError`` and ``click.UsageError``).
Commands stay thin: they parse options and call the library.  Each command group lives
in its own module (``capture``, ``info``, ``export``, ``serve``, ``demo``); this one
only assembles them.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from tensortap.cli.capture import capture
from tensortap.cli.demo import demo
from tensortap.cli.explain import explain
from tensortap.cli.export import export
from tensortap.cli.info import graph, info
from tensortap.cli.serve import serve
from tensortap.cli.verify import verify
from tensortap.core.errors import TensortapError

__all__ = ["main"]


class _Group(click.Group):
    """Turns tensortap's own errors and Click's usage errors into one line (exit status 2:
    no ``Usage:`` or ``Try ...`` lines around it)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as err:  # UsageError, BadParameter...
            message = err.format_message().rstrip(".")
            ctx = getattr(err, "ctx", None)
            if isinstance(err, click.UsageError) and ctx is not None:
                message += f"; see `{ctx.command_path} --help`"
            click.echo(f"error: {message}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TensortapError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tensortap")
def main() -> None:
    """Capture, store and look at what every layer of a neural network computes."""


for _command in (demo, serve, capture, info, graph, export, explain, verify):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
