"""The commit record: which blocks of samples are complete.

A *block* is the run's unit of writing: the samples ``[b * block_size, (b + 1) * block_size)``
(the last block may be shorter), exactly one chunk (or shard) of every array with a sample
axis.  The record is the root array ``committed(block)``, int64, **one chunk per block**,
holding how many samples the block committed (0: not committed).

Why an array with one chunk per block rather than one JSON document: writers of disjoint
block ranges (threads, Dask workers, several machines on s3) each write only their own
blocks' entries, so no two writers ever touch the same object and no lock or read-modify-
write is needed; a chunk write is atomic on local folders (zarr writes a temporary file and
renames it) and on object stores (a PUT).  A block's entry is written only after every
array of the block was written, so a reader (or a crash) never counts a partial block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from tensortap.core.store import layout
from tensortap.core.store.checksums import with_checksum

__all__ = ["committed_blocks", "committed_samples", "mark_committed", "record_spec"]


def record_spec(n_blocks: int) -> dict[str, Any]:
    """``create_array`` arguments of the empty commit record (root array ``committed``)."""
    return dict(
        shape=(n_blocks,),
        chunks=(1,),
        dtype="int64",
        fill_value=0,
        compressors=with_checksum(None),
        chunk_key_encoding={"name": "default", "separator": "."},  # no folder per block
        dimension_names=(layout.BLOCK_DIM,),
        attributes={
            "long_name": "samples committed per block (the commit record)",
            "description": "block b holds samples [b*block_size, b*block_size + value); "
            "0 means not committed",
        },
    )


def mark_committed(record: zarr.Array[Any], block: int, n_samples: int) -> None:
    """Commit ``block`` with ``n_samples`` samples — call after all its arrays are written."""
    record[block] = n_samples


def committed_blocks(record: zarr.Array[Any]) -> np.ndarray:
    """Samples committed in each block (0 for blocks not committed)."""
    return np.asarray(record[:], dtype=np.int64)


def committed_samples(counts: np.ndarray, block_size: int) -> np.ndarray:
    """Global indices of the committed samples, in order.

    Parameters
    ----------
    counts : ndarray
        From :func:`committed_blocks`.
    block_size : int
        Samples per block.
    """
    blocks = np.flatnonzero(counts)
    if blocks.size == 0:
        return np.zeros(0, np.int64)
    return np.concatenate(
        [np.arange(b * block_size, b * block_size + counts[b], dtype=np.int64) for b in blocks]
    )


def committed_prefix(counts: np.ndarray, block_size: int) -> int:
    """Number of samples committed without a gap from sample 0 (where a resume starts)."""
    total = 0
    for count in counts:
        if count == 0:
            break
        total += int(count)
        if count < block_size:  # a short block ends the run
            break
    return total
