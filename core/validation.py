"""Checks on a capture's arguments and input values, made before any run is created.

:func:`tensortap.capture` calls these first so that a refused capture leaves nothing behind
and says in one line what it received, what is allowed and how to fix it (issue 20).
Non-finite inputs are counted block by block (:class:`NonFiniteInputs`): a warning at the
end of the capture and a record in the run's attrs, or an error with ``strict=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensortap.core.errors import DataError, NonFiniteInputWarning, OptionError

__all__ = [
    "STORAGE_DTYPES",
    "NonFiniteInputs",
    "check_int",
    "check_storage_dtype",
]

#: Storage dtypes of activations and gradients: floating types only, since narrowing to an
#: integer type truncates (``int8`` turned 96 % of a ReLU layer's values into 0).
STORAGE_DTYPES = ("float16", "float32", "float64")
#: Named in messages with the reason it is refused.
_BFLOAT16 = "bfloat16"


def check_storage_dtype(dtype: Any) -> str | None:
    """The storage dtype's canonical name, ``None`` for "as computed".

    Raises
    ------
    OptionError
        For a name NumPy does not know, an integer or complex type, or ``bfloat16`` (zarr v3
        has no such data type, so no plain reader could decode it).
    """
    if dtype is None:
        return None
    if str(dtype) == _BFLOAT16:
        raise OptionError(
            "dtype 'bfloat16' cannot be stored: Zarr v3 has no bfloat16 data type; "
            f"use one of {', '.join(STORAGE_DTYPES)} (float16 halves the size)"
        )
    try:
        name = str(np.dtype(dtype))
    except TypeError:
        name = ""
    if name not in STORAGE_DTYPES:
        raise OptionError(
            f"dtype {dtype!r} is not allowed for stored activations; use one of "
            f"{', '.join(STORAGE_DTYPES)} (or leave it out to store them as computed)"
        )
    return name


def check_int(name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> int | None:
    """``value`` as an ``int`` when it is an integer of at least ``minimum``.

    ``bool`` and floats (even ``2.0``) are refused: a fractional batch size is a mistake
    worth reporting, not rounding.

    Raises
    ------
    OptionError
        Naming the argument, the value received and what is allowed.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise OptionError(
            f"{name} must be an integer >= {minimum}, got {value!r} "
            f"({type(value).__name__}); pass a whole number such as {max(minimum, 1)}"
        )
    if value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value}; pass a larger one")
    return int(value)


@dataclass
class NonFiniteInputs:
    """Counts NaN and infinite input values block by block.

    Parameters
    ----------
    strict : bool
        Raise :class:`~tensortap.core.errors.DataError` at the first block holding one.
    """

    strict: bool = False
    values: int = 0
    samples: int = 0
    first_sample: int | None = None

    def check(self, start: int, inputs: Mapping[str, np.ndarray]) -> None:
        """Count the non-finite values of the block starting at sample ``start``."""
        bad: np.ndarray | None = None
        count = 0
        for value in inputs.values():
            array = np.asarray(value)
            if array.dtype.kind not in "fc":
                continue
            # A sum is NaN or ±inf whenever a value is, and costs one pass without the
            # boolean temporary of isfinite (a 154 MB array: 8 vs 22 ms; W1's 19 MB
            # inputs: 1.2 vs 1.9 ms); a sum that overflowed on finite values only is
            # caught by the exact check below.
            with np.errstate(over="ignore", invalid="ignore"):
                total = np.add.reduce(array, axis=None)
            if np.isfinite(total):
                continue
            finite = np.isfinite(array)
            if finite.all():
                continue
            per_sample = (~finite).reshape(len(array), -1).sum(axis=1)
            count += int(per_sample.sum())
            bad = per_sample > 0 if bad is None else bad | (per_sample > 0)
        if bad is None:
            return
        first = start + int(np.flatnonzero(bad)[0])
        if self.strict:
            raise DataError(
                f"the input holds {count} NaN or infinite values in samples {start}-"
                f"{start + len(bad) - 1} (first: sample {first}); clean the data, or drop "
                "strict=True (--strict) to capture it with a warning"
            )
        self.values += count
        self.samples += int(bad.sum())
        if self.first_sample is None:
            self.first_sample = first

    def add(self, record: Mapping[str, Any]) -> None:
        """Add counts made elsewhere: another counter's :meth:`record` (a Dask worker's),
        or a resumed run's ``nonfinite_inputs`` attr under that key."""
        counts = record.get("nonfinite_inputs") or {}
        if not counts.get("values"):
            return
        self.values += int(counts["values"])
        self.samples += int(counts.get("samples", 0))
        first = counts.get("first_sample")
        if first is not None and (self.first_sample is None or int(first) < self.first_sample):
            self.first_sample = int(first)

    def record(self) -> dict[str, Any]:
        """The run's ``nonfinite_inputs`` attr (empty when every value was finite)."""
        if not self.values:
            return {}
        return {
            "nonfinite_inputs": {
                "values": self.values,
                "samples": self.samples,
                "first_sample": self.first_sample,
            }
        }

    def warn(self, stacklevel: int = 4) -> None:
        """Warn once, with the counts, when some input value was not finite.

        ``stacklevel`` points the warning at the user's call (4: the caller of
        :func:`tensortap.capture`, whose helper calls this)."""
        if self.values:
            warnings.warn(
                f"the input held {self.values} NaN or infinite values in {self.samples} "
                f"samples (first: sample {self.first_sample}); they were captured as given "
                "and recorded in the run's attrs (nonfinite_inputs); pass strict=True "
                "(--strict) to refuse such data",
                NonFiniteInputWarning,
                stacklevel=stacklevel,
            )
