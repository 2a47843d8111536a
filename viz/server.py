"""Former home of the served app, kept so ``tensortap.viz.server`` imports keep working;
the app lives in :mod:`tensortap.viz.app`, whose public names this module re-exports."""

from __future__ import annotations

from tensortap.viz.app import *  # noqa: F403  (the same public names, one list to keep)
from tensortap.viz.app import __all__ as __all__
