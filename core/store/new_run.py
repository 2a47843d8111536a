"""Where a new run is written until its first block is committed (issue 20).

One rule for every capture (``tt.capture``, ``tt.capture_distributed``): a new run never
touches the location's old run before it has committed its first block.  Local folders are
written beside the path and exchanged (:mod:`~tensortap.core.store.placement`); object stores
and in-memory stores holding a run are written to a staging location and copied over it
(:mod:`~tensortap.core.store.object_placement`); an empty object store is written in place
(there is nothing to protect, and a refused capture clears what it wrote).
"""

from __future__ import annotations

from tensortap.core.store.object_placement import ObjectPlacement
from tensortap.core.store.placement import Placement
from tensortap.core.store.storage import Location
from tensortap.core.store.writer import RunSettings, RunWriter

__all__ = ["NewRunPlacement", "open_new_run"]

NewRunPlacement = Placement | ObjectPlacement


def open_new_run(
    location: Location, settings: RunSettings, *, overwrite: bool, absent: bool
) -> tuple[RunWriter, NewRunPlacement | None]:
    """A writer for a new run meant for ``location``, and the placement that publishes it
    after its first commit (``None``: written in place).

    ``absent``: ``location`` is a local folder that does not exist yet (not even read).

    Raises
    ------
    RunExistsError
        ``location`` holds a run and ``overwrite`` is false, or holds data that is not a
        run (never replaced).
    """
    local = Placement.beside(location)
    if local is not None:
        if not absent:
            RunWriter.check_replaceable(location, overwrite=overwrite)
        return RunWriter.open(local.staging, settings), local
    replacing = RunWriter.check_replaceable(location, overwrite=overwrite)
    if replacing:
        staged = ObjectPlacement(location)
        return RunWriter.open(staged.staging, settings), staged
    return RunWriter.open(location, settings), None
