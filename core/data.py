"""Turn whatever the user passed as data into blocks of ``batch_size`` samples.

Accepted: a NumPy array (``.npy`` memory maps are sliced, never loaded whole), a dict of
arrays by model input name, a list of arrays (one per model input), ``(x, y)`` or ``(x,)``
tuples of those, a Python iterable of batches (each ``x``, ``(x, y)`` or a dict), and
framework-native data (``tf.data.Dataset``...) through :meth:`Backend.batches`.

Every batch yielded holds exactly ``batch_size`` samples except the last one, whatever
sizes an iterable produced: one batch is one chunk of the run store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tensortap.core.errors import DataError, EmptyDataError, InputMismatchError

if TYPE_CHECKING:
    from tensortap.core.backend import Backend

__all__ = ["Batch", "DataSource", "as_source", "concat_batches"]


@dataclass(frozen=True, slots=True)
class Batch:
    """One block of samples: inputs by model input name, and labels or ``None``."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


class DataSource:
    """Batches from sample ``start`` on; :attr:`length` is the sample count when known."""

    length: int | None = None

    def batches(self, start: int = 0) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_lengths(arrays: Mapping[str, Any]) -> int:
    lengths = {name: len(value) for name, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"model inputs have different numbers of samples {lengths}; give every input "
            "the same number of samples"
        )
    return next(iter(lengths.values()))


def _check_labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    array: np.ndarray = np.asarray(labels)
    if array.ndim == 0 or len(array) != n:
        got = "a scalar" if array.ndim == 0 else f"{len(array)} labels"
        raise DataError(
            f"labels do not fit the data: {got} for {n} samples; give one label per sample"
        )
    return array


class ArraySource(DataSource):
    """In-memory or memory-mapped arrays, sliced batch by batch."""

    def __init__(self, arrays: dict[str, Any], labels: Any, batch_size: int) -> None:
        self.arrays = arrays
        self.length = _check_lengths(arrays)
        self.labels = _check_labels(labels, self.length)
        self.batch_size = batch_size

    def batches(self, start: int = 0) -> Iterator[Batch]:
        for i in range(start, self.length or 0, self.batch_size):
            j = min(i + self.batch_size, self.length or 0)
            # ascontiguousarray reads only this slice of a memory map.
            inputs = {name: np.ascontiguousarray(a[i:j]) for name, a in self.arrays.items()}
            labels = None if self.labels is None else np.asarray(self.labels[i:j])
            yield Batch(inputs, labels)


class IterableSource(DataSource):
    """A stream of batches of any size, re-cut into blocks of ``batch_size``."""

    def __init__(
        self,
        items: Iterable[Any],
        input_names: Sequence[str],
        labels: Any,
        batch_size: int,
        length: int | None = None,
    ) -> None:
        self.items = items
        self.input_names = tuple(input_names)
        self.labels = None if labels is None else np.asarray(labels)
        self.batch_size = batch_size
        self.length = length

    def _raw(self) -> Iterator[Batch]:
        position = 0
        for item in self.items:
            x, y = _split_xy(item)
            inputs = _as_inputs(x, self.input_names)
            n = _check_lengths(inputs)
            if y is not None and self.labels is not None:
                raise DataError("labels were given twice (labels= and (x, y) batches); give one")
            if self.labels is not None:
                y = self.labels[position : position + n]
                if len(y) != n:
                    raise DataError(
                        f"labels do not fit the data: {len(self.labels)} labels but the data has "
                        f"more samples; give one label per sample"
                    )
            position += n
            yield Batch(inputs, None if y is None else _check_labels(y, n))
        if self.labels is not None and position != len(self.labels):
            raise DataError(
                f"labels do not fit the data: {len(self.labels)} labels for {position} samples; "
                "give one label per sample"
            )

    def batches(self, start: int = 0) -> Iterator[Batch]:
        pending: list[Batch] = []
        held = 0
        skipped = 0
        for batch in self._raw():
            n = len(batch)
            if skipped + n <= start:  # resume: consume what is already committed
                skipped += n
                continue
            if skipped < start:
                batch = _slice(batch, start - skipped, n)
                skipped = start
            pending.append(batch)
            held += len(batch)
            while held >= self.batch_size:
                merged = _concat(pending)
                yield _slice(merged, 0, self.batch_size)
                rest = _slice(merged, self.batch_size, len(merged))
                pending, held = ([rest], len(rest)) if len(rest) else ([], 0)
        if held:
            yield _concat(pending)


def _slice(batch: Batch, i: int, j: int) -> Batch:
    labels = None if batch.labels is None else batch.labels[i:j]
    return Batch({k: v[i:j] for k, v in batch.inputs.items()}, labels)


def concat_batches(batches: list[Batch]) -> Batch:
    """Consecutive batches as one (the first batch itself when alone)."""
    return _concat(batches)


def _concat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    inputs = {k: np.concatenate([b.inputs[k] for b in batches]) for k in batches[0].inputs}
    have = [b.labels is not None for b in batches]
    if any(have) and not all(have):
        raise DataError("some batches carry labels and some do not; give labels for every batch")
    parts = [b.labels for b in batches if b.labels is not None]
    labels = np.concatenate(parts) if all(have) else None
    return Batch(inputs, labels)


def _split_xy(item: Any) -> tuple[Any, Any]:
    if isinstance(item, tuple):
        if len(item) == 1:
            return item[0], None
        if len(item) == 2:
            return item[0], item[1]
        raise DataError(
            f"a data tuple holds (x,) or (x, y), got {len(item)} items; put multiple inputs in "
            "a list or dict: ([x1, x2], y)"
        )
    return item, None


def _as_inputs(x: Any, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Map ``x`` (array, dict or list of arrays) onto the model's input names."""
    if isinstance(x, Mapping):
        missing = [n for n in input_names if n not in x]
        extra = [k for k in x if k not in input_names]
        if missing or extra:
            raise InputMismatchError(
                f"input dict keys {sorted(x)} do not match the model inputs {list(input_names)}; "
                "key the arrays by input name"
            )
        return {name: _array(x[name]) for name in input_names}
    if isinstance(x, list):
        if len(x) != len(input_names):
            raise InputMismatchError(
                f"got a list of {len(x)} arrays for a model with {len(input_names)} inputs "
                f"{list(input_names)}; give one array per input"
            )
        return {name: _array(value) for name, value in zip(input_names, x, strict=True)}
    if len(input_names) != 1:
        raise InputMismatchError(
            f"the model has {len(input_names)} inputs {list(input_names)}; pass a dict by name "
            "or a list with one array per input"
        )
    return {input_names[0]: _array(x)}


def _array(value: Any) -> Any:
    # Keep memory maps and arrays as they are (sliced lazily); convert the rest.
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__") or isinstance(value, list | tuple):
        return np.asarray(value)
    raise DataError(
        f"cannot use a {type(value).__name__} as model input; pass NumPy arrays, a dict or "
        "list of them, (x, y) tuples, or an iterable of batches"
    )


def _is_arraylike(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, Mapping):
        return all(isinstance(v, np.ndarray) for v in x.values())
    if isinstance(x, list):
        return bool(x) and all(isinstance(v, np.ndarray) for v in x)
    return False


def as_source(
    data: Any,
    *,
    input_names: Sequence[str],
    batch_size: int,
    labels: Any = None,
    backend: Backend | None = None,
) -> DataSource:
    """Normalise ``data`` into a :class:`DataSource`.

    Raises
    ------
    DataError
        Unusable data, labels of the wrong length, or ``batch_size < 1``.
    EmptyDataError
        Arrays with no sample.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    x, y = _split_xy(data) if isinstance(data, tuple) else (data, None)
    if y is not None and labels is not None:
        raise DataError("labels were given twice (labels= and (x, y) data); give one")
    labels = labels if y is None else y
    if _is_arraylike(x):
        source = ArraySource(_as_inputs(x, input_names), labels, batch_size)
        if source.length == 0:
            raise EmptyDataError("the data holds no sample (arrays of length 0)")
        return source
    if backend is not None:
        native = backend.batches(data, batch_size)
        if native is not None:
            return IterableSource(native, input_names, labels, batch_size)
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise DataError(
            f"cannot read data of type {type(data).__name__}; pass NumPy arrays, a dict or list "
            "of arrays, (x, y) tuples, an iterable of batches, or framework-native data"
        )
    return IterableSource(data, input_names, labels, batch_size)
