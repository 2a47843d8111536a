"""The ``tensortap`` command line: one module per command group, assembled in ``main``."""

from tensortap.cli.main import main

__all__ = ["main"]
