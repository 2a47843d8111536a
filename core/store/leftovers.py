"""Temporary files a killed capture leaves behind in a local run.

Shards and whole chunks are written to a ``*.partial`` sibling and renamed into place
(:mod:`~tensortap.core.store.shard_stream`, :mod:`~tensortap.core.store.direct_io`), so a
``kill -9`` mid-write leaves such a file and nothing a reader opens.  They are inert but can
be large (a W1 block is ~1.7 GB of them), so resuming a run removes them before it writes:
no writer of the run is alive then, and a resumed block writes files of new names.
"""

from __future__ import annotations

from pathlib import Path

#: The suffix of every temporary file the run's writers create.
PARTIAL_SUFFIX = ".partial"


def remove_partial_files(root: Path) -> int:
    """Delete the temporary ``*.partial`` files under the run folder ``root``.

    Returns
    -------
    int
        How many files were removed.
    """
    removed = 0
    for path in root.rglob(f"*{PARTIAL_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)  # a concurrent cleaner may have been first
            removed += 1
    return removed
