"""Create many Zarr nodes with one store write each: build them in memory, then publish.

``zarr.Group.create_array`` on a real store first checks that no node exists at the path,
then writes the array's document and any missing parent groups: about six store operations
a node, each a round trip (syscalls on a local disk, requests on s3), and each synchronous
call one more hop to zarr's event-loop thread (~1 ms here).  A run creates ~8 nodes a layer
in a location it has just emptied, where none of those checks can fail, so
:class:`Staging` collects the nodes, builds them with zarr's own API in a ``MemoryStore``,
and copies the resulting documents — one write per object, straight to the files of a
local folder, else all in one trip to the event loop.  On W1's 52 layers this took run
creation from ~1.5 s to ~0.3 s here (most of the rest is the file system's own work: ~420
folders and ~470 files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore, StorePath

from tensortap.core.store.direct_io import write_file

__all__ = ["Staging"]


async def _ready(value: Any) -> Any:
    return value


_METADATA = "zarr.json"
#: Array documents already built, by kind and attributes (an array with a value is never
#: taken from here): a notebook or a callback capturing the same model again declares the
#: same arrays, and building them was a third of a small in-memory capture's fixed cost
#: (~8 ms of MobileNetV2's one-batch Grad-CAM, issue 12).  Metadata is immutable; the
#: documents are copied into a new buffer for each store.
_BUILT: OrderedDict[tuple[str, str], tuple[ArrayV3Metadata, bytes]] = OrderedDict()
_BUILT_SIZE = 1024


def _cache_key(kind: str, spec: dict[str, Any]) -> tuple[str, str] | None:
    """``(kind, attributes as JSON)``, or ``None`` for attributes JSON cannot hold exactly."""
    try:
        return kind, json.dumps(spec.get("attributes") or {}, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError):
        return None


class Staging:
    """Groups and arrays to create under ``target`` (a group's ``store_path``).

    Only the nodes declared here are written: parents that zarr makes implicitly stand for
    groups that exist under ``target`` already, whose documents (and attributes) stay.
    Values given with :meth:`set` are written before any document, so an array never
    appears without them.
    """

    def __init__(self, target: StorePath) -> None:
        self.target = target
        self._groups: dict[str, dict[str, Any]] = {}
        self._arrays: dict[str, dict[str, Any]] = {}
        self._values: dict[str, np.ndarray] = {}
        self._metadata: dict[str, Any] = {}

    def create_group(self, path: str, attributes: dict[str, Any]) -> None:
        """Declare a group."""
        self._groups[path] = attributes

    def create_array(self, path: str, **spec: Any) -> None:
        """Declare an array (``spec``: :meth:`zarr.Group.create_array` arguments)."""
        self._arrays[path] = spec

    def set(self, path: str, value: np.ndarray) -> None:
        """Give a declared array its whole value."""
        self._values[path] = value

    def publish(self) -> None:
        """Build the declared nodes in memory and write them under ``target``: every value
        first, then the documents (an array never appears without its values)."""
        self._metadata, values, documents = sync(self._build())
        self._make_folders([*values, *documents])
        for batch in (values, documents):
            self._write(batch)

    async def _build(self) -> tuple[dict[str, Any], dict[str, Buffer], dict[str, Buffer]]:
        store = MemoryStore()
        root = await zarr.api.asynchronous.open_group(store=store, mode="w", zarr_format=3)
        # Built flat (``n0``, ``n1``...): nested paths would make zarr look for and write
        # parent groups in memory, a third of the building time.  Arrays that differ only
        # in their attributes (and get no value) are built once: ``create_array`` costs
        # ~0.7 ms, and W1's 317 arrays come in ~110 kinds.
        first_of_kind: dict[str, str] = {}
        kinds: dict[str, str] = {}  # path -> the first path of its kind, built for all
        cache_keys: dict[str, tuple[str, str]] = {}
        cached: dict[str, tuple[ArrayV3Metadata, bytes]] = {}
        for path, spec in self._arrays.items():
            rest = {k: v for k, v in spec.items() if k != "attributes"}
            kind = f"value of {path}" if path in self._values else repr(sorted(rest.items()))
            key = None if path in self._values else _cache_key(kind, spec)
            if key is not None:
                cache_keys[path] = key
                if (hit := _BUILT.get(key)) is not None:
                    with contextlib.suppress(KeyError):  # evicted meanwhile by another loop
                        _BUILT.move_to_end(key)
                    cached[path] = hit
                    continue
            kinds[path] = first_of_kind.setdefault(kind, path)
        names = {path: f"n{i}" for i, path in enumerate(self._arrays) if kinds.get(path) == path}
        built = dict(
            zip(
                names,
                await asyncio.gather(
                    *(root.create_array(names[p], **self._arrays[p]) for p in names)
                ),
                strict=True,
            )
        )
        arrays = {path: built[kinds[path]] for path in kinds}
        await asyncio.gather(
            *(arrays[path].setitem(Ellipsis, value) for path, value in self._values.items())
        )
        prototype = default_buffer_prototype()
        chunks = {
            f"{path}{key[len(names[path]) :]}": key
            for path in self._values
            async for key in store.list_prefix(f"{names[path]}/")
            if key != f"{names[path]}/{_METADATA}"
        }
        documents: dict[str, Any] = {
            f"{path}/{_METADATA}": GroupMetadata(attributes=attributes).to_buffer_dict(prototype)[
                _METADATA
            ]
            for path, attributes in self._groups.items()
        }
        metadata: dict[str, Any] = {}
        for path, spec in self._arrays.items():
            if path in cached:
                meta, document = cached[path]
                metadata[path] = meta
                documents[f"{path}/{_METADATA}"] = prototype.buffer.from_bytes(document)
                continue
            meta = arrays[path].metadata
            if kinds[path] != path:  # the kind's document with this array's attributes
                doc = meta.to_dict() | {"attributes": spec.get("attributes") or {}}
                meta = ArrayV3Metadata.from_dict(doc)
            metadata[path] = meta
            buffer = meta.to_buffer_dict(prototype)[_METADATA]
            documents[f"{path}/{_METADATA}"] = buffer
            if path in cache_keys:
                _BUILT[cache_keys[path]] = (meta, buffer.to_bytes())
                while len(_BUILT) > _BUILT_SIZE:
                    with contextlib.suppress(KeyError):
                        _BUILT.popitem(last=False)

        async def read(batch: dict[str, Any]) -> dict[str, Buffer]:
            values = await asyncio.gather(
                *(
                    store.get(source, prototype) if isinstance(source, str) else _ready(source)
                    for source in batch.values()
                )
            )
            return {key: v for key, v in zip(batch, values, strict=True) if v is not None}

        return metadata, await read(chunks), await read(documents)

    def _local_root(self) -> Path | None:
        store = self.target.store
        if isinstance(store, LocalStore) and not store.read_only:
            return Path(store.root) / self.target.path
        return None

    def _make_folders(self, keys: list[str]) -> None:
        """Create the folders of a local target once each, parents first."""
        root = self._local_root()
        if root is None:
            return
        # Relative folder names as strings: ``Path.mkdir`` and ``Path.parents`` cost more than
        # the system calls on a run's few dozen folders (issue 14: a training run's creation).
        folders = {key.rsplit("/", 1)[0] for key in keys if "/" in key}
        folders |= {folder[:i] for folder in folders for i, c in enumerate(folder) if c == "/"}
        base = os.fspath(root)
        for folder in sorted(folders):  # parents sort first
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(base, folder))

    def _write(self, batch: dict[str, Buffer]) -> None:
        """Write ``key -> bytes`` under ``target``: straight to the files of a local folder
        (zarr's store would add a thread hand-off and a parent check per object), else
        through the store, concurrently."""
        root = self._local_root()
        if root is None:

            async def write() -> None:
                await asyncio.gather(*((self.target / key).set(v) for key, v in batch.items()))

            sync(write())
            return
        for key, value in batch.items():
            write_file(root / key, memoryview(value.as_buffer_like()), direct=False)

    def open(self, path: str, config: Any = None) -> zarr.Array[Any]:
        """The published array at ``path``, bound to the target store (no read)."""
        return zarr.Array(
            zarr.AsyncArray(self._metadata[path], store_path=self.target / path, config=config)
        )
