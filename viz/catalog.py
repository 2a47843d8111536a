"""Which runs ``tensortap serve PATH`` may open: discovery under PATH and path confinement.

A served folder is a file-system view, so runs are reached only through :class:`RunCatalog`:
it lists the runs it found under PATH (recursively, never following symlinks or entering a
run) and resolves a requested id only if it listed it, refusing absolute paths, ``..``,
drive letters, backslashes and anything whose real path leaves PATH.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from tensortap.core.errors import RunNotFoundError, TensortapError

__all__ = ["RunAccessError", "RunCatalog", "RunEntry", "is_run_dir"]

log = logging.getLogger(__name__)

#: Largest ``zarr.json`` read while looking for runs; a run's root metadata is small unless
#: consolidated, and a huge file is not worth parsing to decide "is this a run".
_MAX_METADATA_BYTES = 64 * 2**20
#: Folders visited at most while searching PATH, so a mistaken ``serve /`` returns.
_MAX_SCANNED_DIRS = 20_000
#: Seconds a scan is reused: many sessions start at once (a page reload storm) and each
#: would otherwise walk the tree.
_SCAN_TTL_S = 5.0


class RunAccessError(TensortapError, PermissionError):
    """A run location outside the served folder, or given in a form the server refuses."""


# --------------------------------------------------------------------------- run discovery


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the root group of a tensortap run (schema 1).

    Reads only ``zarr.json``: a Zarr v3 group whose attributes hold a ``tensortap`` block.

    Parameters
    ----------
    path
        A folder.

    Returns
    -------
    bool
        ``False`` for anything unreadable, never an exception.
    """
    meta = Path(path) / "zarr.json"
    try:
        if not meta.is_file() or meta.stat().st_size > _MAX_METADATA_BYTES:
            return False
        doc = json.loads(meta.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        return False
    attrs = doc.get("attributes")
    return isinstance(attrs, dict) and isinstance(attrs.get("tensortap"), dict)


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run the server may show.

    Attributes
    ----------
    id
        Its path relative to the served folder, POSIX style (``"."`` when the served path
        is itself a run): what the run picker shows and what ``?run=`` accepts.
    path
        Its real, absolute location.
    """

    id: str
    path: Path


class RunCatalog:
    """The runs under one folder, and the only way the app reaches a run.

    Parameters
    ----------
    root
        A run, or a folder searched recursively for runs. Hidden folders and symbolic links
        are not followed: a link could lead outside ``root``.

    Raises
    ------
    RunNotFoundError
        ``root`` does not exist or is not a folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        given = Path(root).expanduser()
        if not given.exists():
            raise RunNotFoundError(
                f"{str(root)!r} does not exist: give a run made by `tensortap capture` "
                "or a folder that contains runs"
            )
        if not given.is_dir():
            raise RunNotFoundError(
                f"{str(root)!r} is a file, not a run: a run is a folder with a zarr.json"
            )
        # The user chose PATH, so a link *as* PATH is fine; below it, nothing escapes.
        self.root = Path(os.path.realpath(given))
        self._cache: tuple[float, tuple[RunEntry, ...]] | None = None

    def runs(self, *, rescan: bool = False) -> tuple[RunEntry, ...]:
        """Every run under the root, sorted by id (cached for a few seconds).

        Parameters
        ----------
        rescan
            Walk the folder again even if a recent listing exists (new runs appear).
        """
        now = time.monotonic()
        if rescan or self._cache is None or now - self._cache[0] > _SCAN_TTL_S:
            self._cache = (now, tuple(self._scan()))
        return self._cache[1]

    def _scan(self) -> Iterable[RunEntry]:
        if is_run_dir(self.root):
            yield RunEntry(".", self.root)
            return
        visited = 0
        for dirpath, dirnames, _ in os.walk(self.root, followlinks=False):
            visited += 1
            if visited > _MAX_SCANNED_DIRS:
                log.warning("stopped looking for runs after %d folders", _MAX_SCANNED_DIRS)
                return
            keep = []
            for name in sorted(dirnames):
                child = Path(dirpath, name)
                if name.startswith(".") or child.is_symlink():
                    continue
                if is_run_dir(child):
                    yield RunEntry(child.relative_to(self.root).as_posix(), child)
                else:  # never descend into a run: its subgroups are not runs
                    keep.append(name)
            dirnames[:] = keep

    def resolve(self, run_id: object) -> RunEntry:
        """The run called ``run_id``, if and only if it is one this catalog lists.

        Parameters
        ----------
        run_id
            A run id as :meth:`runs` gives it, e.g. from a ``?run=`` query argument.

        Raises
        ------
        RunAccessError
            ``run_id`` is not a plain relative path inside the root: absolute, with ``..``,
            a drive or backslashes, or leading (through links) outside the root.
        RunNotFoundError
            A well-formed id that names no run under the root.
        """
        if not isinstance(run_id, str) or not run_id or len(run_id) > 1024:
            raise RunAccessError(f"refused run {run_id!r}: expected a run id from the list")
        posix = PurePosixPath(run_id)
        if (
            "\x00" in run_id
            or "\\" in run_id
            or posix.is_absolute()
            or PureWindowsPath(run_id).drive
            or ".." in posix.parts
        ):
            raise RunAccessError(
                f"refused run {run_id!r}: only runs under the served folder can be opened; "
                "use a relative id from the run list, without '..'"
            )
        real = Path(os.path.realpath(self.root.joinpath(*posix.parts)))
        if real != self.root and self.root not in real.parents:
            raise RunAccessError(f"refused run {run_id!r}: it leads outside the served folder")
        for rescan in (False, True):
            for entry in self.runs(rescan=rescan):
                if entry.path == real:
                    return entry
        raise RunNotFoundError(
            f"no run {run_id!r} under the served folder; choose one of the listed runs"
        )


# --------------------------------------------------------------------------- small views
