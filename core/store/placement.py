"""Atomic placement of a new local run: written beside its path, moved there once it holds
a committed block (issue 20).

``capture(..., overwrite=True)`` used to empty the old run before the new capture had
checked anything, so data of the wrong shape destroyed a good run.  Now a new run on a
local folder is created in a hidden sibling folder (``.<name>.tensortap-<pid>-<hex>``) and
only after its first block is committed does it take the run's path: the two folders are
exchanged in one ``renameat2(RENAME_EXCHANGE)`` where Linux offers it (else the old one is
renamed aside, then the new one into place), and the old run is deleted.  A capture that
fails earlier deletes its sibling: the old run is left exactly as it was, and a refused
capture to a new path leaves nothing.  A process killed before the exchange leaves only its
sibling, which the next capture to the same path removes (its process is gone).

Object stores and in-memory runs have no atomic rename; they are written in place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import uuid
from pathlib import Path

from zarr.storage import LocalStore

from tensortap.core.errors import StorageError
from tensortap.core.store.direct_io import DirectLocalStore
from tensortap.core.store.storage import Location

__all__ = ["Placement"]

_MARK = ".tensortap-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); ``False`` where unsupported."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Placement:
    """A new run written in a sibling folder of ``final`` until :meth:`publish`.

    Attributes
    ----------
    staging : Location
        Where the writer writes meanwhile (its ``url`` is the final path, for messages).
    published : bool
        Whether the run is at its final path.
    """

    def __init__(self, final: Location, folder: Path) -> None:
        self.final = final
        self.path = folder
        self.sibling = folder.with_name(
            f".{folder.name}{_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        store_type = DirectLocalStore if isinstance(final.store, DirectLocalStore) else LocalStore
        self.staging = Location(store_type(self.sibling, read_only=False), final.url)
        self.published = False

    @classmethod
    def beside(cls, location: Location) -> Placement | None:
        """A placement for a local folder run, ``None`` for other stores.

        Leftover siblings of killed captures to the same path are removed first.
        """
        store = location.store
        if type(store) not in (LocalStore, DirectLocalStore) or store.read_only:
            return None
        assert isinstance(store, LocalStore)
        folder = Path(store.root)
        placement = cls(location, folder)
        _remove_leftovers(folder)
        return placement

    def publish(self) -> Location:
        """Move the run to its final path (replacing an old run there) and return it."""
        target = self.path
        old: Path | None = None
        try:
            if not target.exists():
                self.sibling.rename(target)
            elif _exchange(self.sibling, target):
                old = self.sibling  # holds the old run now
            else:
                old = target.with_name(f".{target.name}{_MARK}{os.getpid()}-old")
                target.rename(old)
                try:
                    self.sibling.rename(target)
                except OSError:
                    old.rename(target)  # put the old run back
                    raise
        except OSError as err:
            raise StorageError(
                f"cannot move the new run into {str(target)!r}: {err.strerror or err}; the "
                "run there is untouched — choose a location whose folder you can rename in"
            ) from err
        self.published = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # a leftover is removed by the next capture
        return self.final

    def discard(self) -> None:
        """Delete the unpublished run (the capture failed before its first commit)."""
        if not self.published:
            shutil.rmtree(self.sibling, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Remove siblings left by killed captures to ``folder`` (their process is gone)."""
    parent = folder.parent
    if not parent.is_dir():
        return
    for leftover in parent.glob(f".{folder.name}{_MARK}*"):
        pid = leftover.name[len(f".{folder.name}{_MARK}") :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
