"""The first compute batches of a new run, held until they decide its block size.

The engine computes batch after batch; a new run's block size is decided from its first
batch (its bytes and, when its time could bound the block, the second batch's time:
:mod:`tensortap.core.block_size`).  Until then the computed batches wait here, in sample
order, and are handed to the write pipeline, one by one, once the size is known; after
that every batch goes to the pipeline as soon as it is computed (issue 12).
"""

from __future__ import annotations

import numpy as np

from tensortap.core.backend import BatchResult
from tensortap.core.pipeline import Block

__all__ = ["BlockParts"]


class BlockParts:
    """Computed batches in sample order, not yet handed to the writer.

    Parameters
    ----------
    start : int
        Global index of the first sample.
    """

    def __init__(self, start: int) -> None:
        self.start = start
        self.pieces: list[Block] = []
        self._samples = 0

    def __len__(self) -> int:
        return self._samples

    @property
    def stop(self) -> int:
        """One past the global index of the last sample added."""
        return self.start + self._samples

    @property
    def batches(self) -> int:
        """Batches added so far."""
        return len(self.pieces)

    @property
    def first_result(self) -> BatchResult:
        """The first batch's result (its sizes decide the block size)."""
        return self.pieces[0].result

    @property
    def first_inputs(self) -> dict[str, np.ndarray]:
        """The first batch's inputs."""
        return self.pieces[0].inputs

    def add(
        self,
        result: BatchResult,
        inputs: dict[str, np.ndarray],
        labels: np.ndarray | None,
        predictions: np.ndarray | None,
    ) -> None:
        """Append the next batch."""
        self.pieces.append(Block(self.stop, result, inputs, labels, predictions))
        self._samples += len(self.pieces[-1])
