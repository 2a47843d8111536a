"""How many samples a storage block holds: sized by bytes, as whole compute batches.

The compute batch (``batch_size``) is what the model sees; the **block** is what one chunk of
every sample-axis array and one commit hold (docs/store-format.md).  A block of one batch is
right for MobileNetV2 at 224² (855 MB a batch) and wrong for small layers: a dense MLP then
writes ~5 tiny objects per layer every 32 samples, and a capture is dominated by per-object
costs.  :func:`choose_block_size` picks as many whole batches as fill ``chunk_bytes`` in the
run's **median** array (the typical layer: arrays larger than it get large blocks, but those
are stored as shards of ~1 MiB inner chunks, so a one-sample read stays one small read;
docs/store-format.md), bounded by

- memory: a block's arrays together stay under ``max_block_bytes``, a twelfth of the
  machine's memory between 512 MiB and 2 GiB (the write pipeline holds about ``depth + 2``
  blocks, so a capture holds at most about a quarter of the memory);
- time: a block is computed within ``commit_seconds``, so a ``kill -9`` loses at most a few
  seconds of work (about three blocks are in flight);
- the data: never more batches than the run holds (a chunk is stored whole, a short last
  chunk padded, so a block larger than the run would write padding).

A block is never smaller than one batch.  The rule is a pure function of the first batches'
sizes and timing; the engine (:mod:`tensortap.core.blocks`) applies it once per new run, and a
resumed run keeps the block size it was created with.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from tensortap.core.errors import DataError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_COMMIT_SECONDS",
    "DEFAULT_MAX_BLOCK_BYTES",
    "BlockRule",
    "choose_block_size",
]

#: Target bytes of the median array's chunk.  Tens of MB is where zarr and object stores
#: are efficient (few requests, full-speed sequential writes); 64 MiB keeps the seed's small
#: CNN under 100 files per 1,000 samples (benchmarks/RESULTS.md, *Small layers*).
DEFAULT_CHUNK_BYTES = 64 * 2**20


def _memory_bound() -> int:
    """A twelfth of physical memory, between 512 MiB and 2 GiB (512 MiB when unknown)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        physical = 0
    return int(min(max(physical // 12, 512 * 2**20), 2 * 2**30))


#: Bound on a block's bytes over all its arrays (activations, gradients, inputs, outputs):
#: MobileNetV2 at 224² (855 MB a batch of 32) gets two-batch blocks on a 24 GiB machine.
DEFAULT_MAX_BLOCK_BYTES = _memory_bound()
#: Bound on the compute time of one block, in seconds: with about three blocks in flight a
#: kill loses at most ~10 s of work.
DEFAULT_COMMIT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class BlockRule:
    """What decides a new run's block size.

    Attributes
    ----------
    block_size : int or None
        Samples per block given by the user (a positive multiple of the batch size); ``None``
        chooses it by bytes.
    chunk_bytes : int
        Target bytes of the median array's chunk.
    max_block_bytes : int
        Bound on the bytes of one block over all arrays.
    commit_seconds : float
        Bound on the compute time of one block.
    """

    block_size: int | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES
    commit_seconds: float = DEFAULT_COMMIT_SECONDS

    @classmethod
    def from_options(
        cls, block_size: int | None, chunk_bytes: int | None, batch_size: int
    ) -> BlockRule:
        """Check the user's ``block_size=`` / ``chunk_bytes=`` against ``batch_size``.

        Raises
        ------
        DataError
            A block size that is not a positive multiple of the batch size, or a chunk size
            below one byte.
        """
        if block_size is not None:
            if (
                isinstance(block_size, bool)
                or not isinstance(block_size, int)
                or block_size < 1
                or block_size % batch_size
            ):
                lower = max(batch_size, (int(block_size) // batch_size) * batch_size)
                raise DataError(
                    f"block_size={block_size!r} is not a positive multiple of "
                    f"batch_size={batch_size}; pass a multiple such as {lower} or "
                    f"{lower + batch_size}, or leave it unset to size blocks by bytes"
                )
        if chunk_bytes is not None and (
            isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1
        ):
            raise DataError(
                f"chunk_bytes={chunk_bytes!r} is not a positive number of bytes; pass e.g. "
                f"{DEFAULT_CHUNK_BYTES} (the default, 64 MiB)"
            )
        return cls(
            block_size=block_size,
            chunk_bytes=DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes,
        )


def choose_block_size(
    rule: BlockRule,
    *,
    batch_size: int,
    chunk_sample_bytes: int,
    block_sample_bytes: int,
    seconds_per_batch: float | None,
    total: int | None,
) -> int:
    """Samples per block: whole batches filling ``rule.chunk_bytes`` in the median array.

    Parameters
    ----------
    rule : BlockRule
        The user's choice and the bounds.
    batch_size : int
        Samples per compute batch.
    chunk_sample_bytes : int
        Bytes one sample takes in the array whose chunk is sized: the run's median array.
    block_sample_bytes : int
        Bytes one sample takes over all arrays of a block (the memory bound).
    seconds_per_batch : float or None
        Compute time of one batch after the first (``None``: unknown, no time bound).
    total : int or None
        Samples the run will hold, when known.

    Returns
    -------
    int
        A positive multiple of ``batch_size``.
    """
    if rule.block_size is not None:
        return rule.block_size
    by_chunk = rule.chunk_bytes // max(1, chunk_sample_bytes * batch_size)
    by_memory = rule.max_block_bytes // max(1, block_sample_bytes * batch_size)
    batches = min(by_chunk, by_memory)
    if seconds_per_batch is not None and seconds_per_batch > 0:
        batches = min(batches, int(rule.commit_seconds / seconds_per_batch))
    if total is not None:
        batches = min(batches, math.ceil(total / batch_size))
    return max(1, batches) * batch_size
