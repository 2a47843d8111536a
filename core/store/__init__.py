"""The run store, schema 1 (docs/design.md §4; docs/store-format.md describes it fully).

- :mod:`~tensortap.core.store.layout`: names, paths, codecs.
- :mod:`~tensortap.core.store.storage`: where a run lives (folder, s3:// URL, memory).
- :mod:`~tensortap.core.store.commit`: the commit record.
- :mod:`~tensortap.core.store.writer`: :class:`RunWriter`.
"""

from __future__ import annotations

from tensortap.core.store.layout import DEFAULT_CODEC, SCHEMA, Codec, parse_codec
from tensortap.core.store.storage import Location, open_location
from tensortap.core.store.writer import RunSettings, RunWriter

__all__ = [
    "DEFAULT_CODEC",
    "SCHEMA",
    "Codec",
    "Location",
    "RunSettings",
    "RunWriter",
    "open_location",
    "parse_codec",
]
