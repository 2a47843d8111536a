"""Where a run lives: a local folder, an ``s3://`` (any fsspec) URL, a zarr store, or memory.

Turns what the user passed as ``store=`` into a zarr-python v3 store and maps storage
failures (read-only folder, missing bucket) onto :class:`~tensortap.core.errors.StorageError`
with one line that names the location and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from tensortap.core.errors import CorruptRunError, RunNotFoundError, StorageError
from tensortap.core.store.direct_io import DirectLocalStore, direct_io_enabled

__all__ = ["Location", "open_location", "read_json", "total_size"]


@dataclass(frozen=True, slots=True)
class Location:
    """An opened run location.

    Attributes
    ----------
    store : zarr.abc.store.Store
        The zarr store (``LocalStore``, ``FsspecStore`` or ``MemoryStore``).
    url : str
        What to show the user: a path, a URL or ``"<memory>"``.
    """

    store: Store
    url: str

    @property
    def is_local(self) -> bool:
        """Whether the run is a folder on this machine."""
        return isinstance(self.store, LocalStore)


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def open_location(
    location: Any, storage_options: dict[str, Any] | None = None, *, read_only: bool
) -> Location:
    """Open ``location`` as a zarr store.

    Parameters
    ----------
    location : str, os.PathLike, zarr Store or None
        A folder path, a fsspec URL (``s3://bucket/run.zarr``), an existing zarr store,
        or ``None`` for a new in-memory store.
    storage_options : dict, optional
        Passed to fsspec for URLs (credentials, ``endpoint_url``...).
    read_only : bool
        Open for reading only.

    Raises
    ------
    StorageError
        When a URL's bucket does not exist or cannot be reached, or a folder cannot be
        created.
    RunNotFoundError
        When reading a local path that does not exist.
    """
    if location is None:
        return Location(MemoryStore(), "<memory>")
    if isinstance(location, Store):
        store = location.with_read_only(True) if read_only and not location.read_only else location
        return Location(store, getattr(location, "path", None) and str(location) or str(location))
    text = os.fspath(location)
    if _is_url(text):
        return _open_url(text, storage_options, read_only=read_only)
    path = Path(text.removeprefix("file://")).expanduser()
    if read_only:
        if not path.exists():
            raise RunNotFoundError(
                f"no run at {str(path)!r}: the path does not exist; give the folder a capture "
                "wrote (tensortap capture -o PATH)"
            )
        return Location(LocalStore(path, read_only=True), str(path))
    writer = DirectLocalStore if direct_io_enabled() else LocalStore
    return Location(writer(path, read_only=False), str(path))


def _open_url(url: str, storage_options: dict[str, Any] | None, *, read_only: bool) -> Location:
    try:
        store = FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
    except (ImportError, ValueError) as err:
        raise StorageError(f"cannot open {url!r}: {err}; install s3fs for s3:// URLs") from err
    fs = store.fs
    # A missing bucket fails on the first write with a confusing message; check it up front.
    bucket = store.path.split("/", 1)[0]
    try:
        exists = sync(fs._exists(bucket)) if fs.async_impl else fs.exists(bucket)
    except Exception as err:  # network, credentials: all mean "cannot reach it"
        raise StorageError(
            f"cannot reach {url!r} ({type(err).__name__}: {err}); check storage_options "
            "(endpoint_url, credentials)"
        ) from err
    if not exists:
        raise StorageError(
            f"bucket {bucket!r} of {url!r} does not exist; create it first or fix the URL"
        )
    return Location(store, url)


def read_json(store: Store, key: str) -> Any:
    """Read and parse a JSON object from the store, ``None`` when absent.

    Raises
    ------
    CorruptRunError
        When the object exists but is not valid JSON (truncated metadata).
    OSError
        When the store cannot be read (callers say what they were doing).
    """
    try:
        buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    except FileNotFoundError:
        return None
    if buffer is None:
        return None
    try:
        return json.loads(buffer.to_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptRunError(
            f"the run's metadata {key!r} is damaged ({err}); the run cannot be read — "
            "capture it again with overwrite=True"
        ) from err


def total_size(store: Store, prefix: str = "") -> int:
    """Bytes stored under ``prefix`` (the run's size on disk or in the bucket)."""
    return int(sync(store.getsize_prefix(prefix)))
