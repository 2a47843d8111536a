"""``tensortap export RUN --tensorboard DIR`` (issue 14): the run's exact histograms and
its scalars as TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_tensorboard_command"]


def export_tensorboard_command(run_path: str, directory: str) -> Path:
    """Open ``run_path`` and write its event file into ``directory``."""
    from tensortap.core.run import open_run
    from tensortap.core.tensorboard import export_tensorboard

    return export_tensorboard(open_run(run_path), directory, progress=True)
