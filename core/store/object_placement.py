"""Atomic overwrite of a run on an object store or in memory (issue 20).

Object stores have no rename, so the local exchange (:mod:`tensortap.core.store.placement`)
cannot be used.  The new run is written under a *staging* location — a hidden sibling prefix
(``s3://bucket/.<name>.tensortap-<pid>-<hex>/``) on fsspec stores, a separate in-memory store
otherwise — until it has validated its data, model and options and committed its first
block.  Until then the old run is not touched at all: a capture that fails deletes the
staging location and leaves the old run exactly as it was (every key, every byte).

Then :meth:`ObjectPlacement.publish` moves the new run over the old one, in this order:

1. the old root ``zarr.json`` gets ``status = "replacing"`` (one PUT): from now on readers
   refuse the run with one line (``CorruptRunError``), and resume refuses it, instead of
   reading a mix of two runs;
2. the old commit record's chunks, then every other old key the new run does not have, are
   deleted;
3. the new run's chunks are copied (server-side where the filesystem offers it), then its
   array and group documents, then its commit record, and **last its root ``zarr.json``**
   (``status = "capturing"``), which ends the replacement in one PUT;
4. the staging location is deleted.

A process killed during 1–3 leaves a run marked ``replacing``: readers refuse it and name
the fix (capture again with ``overwrite=True``).  A process killed before step 1 leaves the
old run intact and, on fsspec stores, its staging prefix, which no reader looks at (delete
it by hand: ``.<name>.tensortap-*`` beside the run).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, MemoryStore

from tensortap.core.errors import StorageError
from tensortap.core.store import layout
from tensortap.core.store.storage import Location

__all__ = ["REPLACING", "ObjectPlacement"]

#: The root ``status`` of a run being replaced by an overwrite (steps 1–3 above).
REPLACING = "replacing"
_ROOT = "zarr.json"
_MARK = ".tensortap-"


def _sibling_store(store: Store) -> Store:
    """Where the new run is staged: a hidden sibling prefix on fsspec, else memory."""
    if isinstance(store, FsspecStore):
        parent, _, name = store.path.rstrip("/").rpartition("/")
        hidden = f".{name}{_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path = f"{parent}/{hidden}" if parent else hidden
        return FsspecStore(store.fs, read_only=False, path=path)
    return MemoryStore()


def _order(key: str) -> int:
    """Copy order: chunks, then documents, then the commit record, the root document last."""
    if key == _ROOT:
        return 3
    if key.startswith(f"{layout.COMMIT}/") and not key.endswith(_ROOT):
        return 2
    return 1 if key.endswith(f"/{_ROOT}") else 0


class ObjectPlacement:
    """A new run staged apart from the old run at ``final`` until :meth:`publish`.

    Attributes
    ----------
    staging : Location
        Where the writer writes meanwhile (its ``url`` is the final one, for messages).
    published : bool
        Whether the run is at its final location.
    """

    def __init__(self, final: Location) -> None:
        self.final = final
        self.staging = Location(_sibling_store(final.store), final.url)
        self.published = False

    def publish(self) -> Location:
        """Replace the old run by the staged one (steps 1–4 of the module) and return the
        final location."""
        try:
            sync(self._publish())
        except OSError as err:
            raise StorageError(
                f"cannot move the new run into {self.final.url!r}: {err}; the run there is "
                "marked 'replacing' — capture again with overwrite=True"
            ) from err
        self.published = True
        self.discard_staging()
        return self.final

    async def _publish(self) -> None:
        old, new = self.final.store, self.staging.store
        prototype = default_buffer_prototype()
        raw = await old.get(_ROOT, prototype)
        root = json.loads(raw.to_bytes()) if raw is not None else None
        if isinstance(root, dict):  # step 1: readers refuse the run from here on
            attrs = root.setdefault("attributes", {}).get(layout.ATTRS_KEY)
            if isinstance(attrs, dict):
                attrs["status"] = REPLACING
                buffer = prototype.buffer.from_bytes(json.dumps(root, indent=2).encode())
                await old.set(_ROOT, buffer)
        for store in (old, new):  # s3fs lists from a cache that misses this process's writes
            if isinstance(store, FsspecStore):
                store.fs.invalidate_cache(store.path)
        new_keys = {key async for key in new.list()}
        stale = sorted(
            [key async for key in old.list() if key not in new_keys and key != _ROOT],
            key=lambda key: -_order(key),  # the commit record's chunks first
        )
        for key in stale:  # step 2
            await old.delete(key)
        for rank in range(4):  # step 3
            batch = [key for key in new_keys if _order(key) == rank]
            await asyncio.gather(*(self._copy(key) for key in batch))

    async def _copy(self, key: str) -> None:
        old, new = self.final.store, self.staging.store
        if isinstance(old, FsspecStore) and isinstance(new, FsspecStore) and old.fs is new.fs:
            copy = getattr(old.fs, "_cp_file", None)
            if copy is not None:  # server-side on s3: block 0 never travels through here
                await copy(f"{new.path}/{key}", f"{old.path}/{key}")
                return
        value = await new.get(key, default_buffer_prototype())
        if value is not None:
            await old.set(key, value)

    def discard(self) -> None:
        """Delete the unpublished run (the capture failed before its first commit)."""
        if not self.published:
            self.discard_staging()

    def discard_staging(self) -> None:
        store = self.staging.store
        try:
            if isinstance(store, FsspecStore):
                store.fs.invalidate_cache(store.path)  # as in _publish
                sync(store.fs._rm(store.path, recursive=True))
            else:
                sync(store.clear())
        except OSError:
            pass  # a leftover prefix holds nothing a reader of the run looks at
