"""The first compute batches of a new run, held until they decide its block size.

The engine computes batch after batch; a new run's block size is decided from its first
batch (its bytes and, when its time could bound the block, the second batch's time:
:mod:`tensortap.core.block_size`).  Until then the computed batches wait here, in sample
order, and are handed to the write pipeline, one by one, once the size is known; after
that every batch goes to the pipeline as soon as it is computed (issue 12).
:func:`join_results` joins consecutive batches' results into one (a backend's grouped
call, :meth:`~tensortap.core.backend.CaptureSession.run_batches`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tensortap.core.backend import BatchResult
from tensortap.core.pipeline import Block

__all__ = ["BlockParts", "join_results"]


def _join(parts: Sequence[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return np.asarray(parts[0])
    return np.concatenate([np.asarray(p) for p in parts], axis=0)


def _join_all(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: _join([p[key] for p in parts]) for key in parts[0]}


def _join_optional(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    if any(p is None for p in parts):
        return None
    return _join([p for p in parts if p is not None])


def _join_partials(
    parts: Sequence[dict[str, dict[str, np.ndarray]] | None],
) -> dict[str, dict[str, np.ndarray]] | None:
    """Backend step statistics of several batches as one block's: per-sample reductions
    concatenated, histograms summed; a layer some batch lacks gets none (NumPy path)."""
    if any(not p for p in parts):
        return None
    first = parts[0]
    assert first is not None
    joined: dict[str, dict[str, np.ndarray]] = {}
    for key in first:
        layer = [p.get(key) for p in parts if p is not None]
        if any(partial is None for partial in layer):
            continue
        merged: dict[str, np.ndarray] = {}
        for name in layer[0] or {}:
            values = [np.asarray(partial[name]) for partial in layer if partial is not None]
            merged[name] = np.sum(values, axis=0) if name == "histogram" else _join(values)
        joined[key] = merged
    return joined


def join_results(results: Sequence[BatchResult]) -> BatchResult:
    """Consecutive batches' results as one, in sample order."""
    return BatchResult(
        outputs=_join_all([r.outputs for r in results]),
        activations=_join_all([r.activations for r in results]),
        gradients=_join_all([r.gradients for r in results]) if results[0].gradients else {},
        target_classes=_join_optional([r.target_classes for r in results]),
        target_values=_join_optional([r.target_values for r in results]),
        partial_stats=_join_partials([r.partial_stats for r in results]),
        predictions=_join_optional([r.predictions for r in results]),
        attributions=(
            _join_all([r.attributions for r in results]) if results[0].attributions else {}
        ),
    )


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
