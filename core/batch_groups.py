"""Consecutive compute batches gathered into groups that one session call runs.

A session whose calls have a fixed cost (:meth:`CaptureSession.batches_per_call` > 1, the
TensorFlow backend on small layers, issue 12) is given several batches at once; the model
still sees them one at a time (:meth:`CaptureSession.run_batches`).  A group holds only
consecutive full batches and never crosses a block boundary: the engine decides each
group's limit from where it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tensortap.core.data import Batch, concat_batches

__all__ = ["BatchGroups"]


class BatchGroups:
    """Groups of ``(start, batch)`` pairs, taken one group at a time.

    Parameters
    ----------
    batches : iterator of (int, Batch)
        Global start and batch, in order (starts may skip committed blocks).
    batch_size : int
        Samples of a full batch; a shorter batch (the data's last) is a group alone.
    """

    def __init__(self, batches: Iterator[tuple[int, Batch]], batch_size: int) -> None:
        self._batches = batches
        self._batch_size = batch_size
        self._held: tuple[int, Batch] | None = None

    def _take(self) -> tuple[int, Batch] | None:
        if self._held is not None:
            taken, self._held = self._held, None
            return taken
        return next(self._batches, None)

    def next_group(self, limit: Callable[[int], int]) -> tuple[int, Batch] | None:
        """The next ``(start, joined batches)``, or ``None`` at the end.

        ``limit(start)`` is the most batches a group starting at ``start`` may hold.
        """
        first = self._take()
        if first is None:
            return None
        start, batch = first
        group = [batch]
        most = max(1, limit(start))
        stop = start + len(batch)
        while len(group) < most and len(batch) == self._batch_size:
            following = self._take()
            if following is None:
                break
            if following[0] != stop or len(following[1]) != self._batch_size:
                self._held = following  # a gap (skipped blocks) or the short last batch
                break
            group.append(following[1])
            stop += self._batch_size
        return start, concat_batches(group)
