"""Write a run's histograms and scalars as TensorBoard event files (issue 14).

``tensortap export RUN --tensorboard DIR`` — for people who live in TensorBoard.  Each
committed step of a training run (or step 0 of a capture run) becomes one event per tag:

- ``<layer>/activation`` (and ``<layer>/gradient``): the layer's **exact stored
  histogram** as a ``HistogramProto`` — our bins' upper edges as ``bucket_limit`` with
  their counts (never re-binned), preceded by an underflow bucket and followed by an
  overflow bucket when they hold values;
- ``<layer>/activation_mean``, ``_std``, ``_zero_fraction``, ``_nonfinite``: scalars over
  the whole layer.

The files are written without TensorFlow or TensorBoard: a few protobuf fields encoded
by hand (``tensorboard/compat/proto/event.proto``, ``summary.proto``) in TFRecord framing
(length, masked CRC-32C of the length, data, masked CRC-32C of the data).  The tests read
them back with TensorBoard's own ``EventAccumulator``.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["export_tensorboard", "layer_summary"]


# ---------------------------------------------------------------------- CRC-32C
def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def _crc32c(data: bytes) -> int:
    try:
        import google_crc32c  # zarr's own dependency: C speed

        return int(google_crc32c.value(data))
    except ImportError:  # pragma: no cover - zarr installs it
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    """One TFRecord: the framing TensorBoard's event reader expects."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", _masked_crc(length))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


# ---------------------------------------------------------------------- protobuf
def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 fields: two's complement, as protobuf encodes them
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _packed_doubles(field: int, values: np.ndarray) -> bytes:
    return _bytes(field, np.asarray(values, "<f8").tobytes())


def _histogram_proto(
    edges: np.ndarray, counts: np.ndarray, under: int, over: int, summary: dict[str, float]
) -> bytes:
    """``HistogramProto`` of exact bins: ``bucket_limit[i]`` is bucket *i*'s upper edge."""
    limits = list(edges[1:])
    buckets = [float(c) for c in counts]
    if under:
        limits.insert(0, float(edges[0]))
        buckets.insert(0, float(under))
    if over:
        limits.append(max(float(summary["max"]), float(edges[-1])) + 1e-12)
        buckets.append(float(over))
    return b"".join(
        [
            _double(1, summary["min"]),
            _double(2, summary["max"]),
            _double(3, summary["num"]),
            _double(4, summary["sum"]),
            _double(5, summary["sum_squares"]),
            _packed_doubles(6, np.asarray(limits)),
            _packed_doubles(7, np.asarray(buckets)),
        ]
    )


def _event(step: int, wall_time: float, values: list[bytes]) -> bytes:
    summary = b"".join(_bytes(1, value) for value in values)
    return _double(1, wall_time) + _key(2, 0) + _varint(step) + _bytes(5, summary)


def _scalar_value(tag: str, value: float) -> bytes:
    return _bytes(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value)


def _histogram_value(tag: str, proto: bytes) -> bytes:
    return _bytes(1, tag.encode()) + _bytes(5, proto)


# ---------------------------------------------------------------------- statistics
def layer_summary(stats: Any) -> dict[str, float]:
    """Whole-layer ``min``, ``max``, ``num``, ``sum``, ``sum_squares``, ``mean``, ``std``,
    ``zero_fraction`` and ``nonfinite`` from one step's per-channel statistics."""
    count = np.asarray(stats["count"], np.float64)
    mean = np.nan_to_num(np.asarray(stats["mean"], np.float64))
    std = np.nan_to_num(np.asarray(stats["std"], np.float64))
    total = float(count.sum())
    sums = float((count * mean).sum())
    squares = float((count * (std**2 + mean**2)).sum())
    overall = sums / total if total else float("nan")
    variance = max(squares / total - overall**2, 0.0) if total else float("nan")
    nonfinite = float(np.asarray(stats["nonfinite"]).sum())
    zeros = float(
        np.asarray(stats["zero_fraction"] * (count + np.asarray(stats["nonfinite"]))).sum()
    )
    with np.errstate(invalid="ignore"):
        low = float(np.nanmin(np.asarray(stats["min"]))) if total else 0.0
        high = float(np.nanmax(np.asarray(stats["max"]))) if total else 0.0
    return {
        "min": low,
        "max": high,
        "num": total,
        "sum": sums,
        "sum_squares": squares,
        "mean": overall,
        "std": float(np.sqrt(variance)),
        "zero_fraction": zeros / (total + nonfinite) if total + nonfinite else float("nan"),
        "nonfinite": nonfinite,
    }


def _step_values(stats: Any, tag: str) -> list[bytes]:
    summary = layer_summary(stats)
    proto = _histogram_proto(
        np.asarray(stats["bin_edges"], np.float64),
        np.asarray(stats["histogram"]),
        int(stats["underflow"]),
        int(stats["overflow"]),
        summary,
    )
    values = [_histogram_value(tag, proto)]
    for name in ("mean", "std", "zero_fraction", "nonfinite"):
        values.append(_scalar_value(f"{tag}_{name}", summary[name]))
    return values


def _events(run: Any) -> Iterator[tuple[int, float, list[bytes]]]:
    training = hasattr(run, "step_values")
    if not training:  # a capture run: one step, 0
        values: list[bytes] = []
        for key in run.layers:
            values += _step_values(run.stats(key), f"{key}/activation")
        yield 0, time.time(), values
        return
    per_layer = {}
    for key in run.layers:
        per_layer[(key, "activation")] = run.stats(key)
        try:
            per_layer[(key, "gradient")] = run.stats(key, of="gradient")
        except Exception:  # noqa: BLE001 - a run without gradient statistics
            pass
    walls = run.steps["wall_time"].values
    for position, step in enumerate(run.step_values):
        values = []
        for (key, of), stats in per_layer.items():
            at = stats.isel(step=position)
            if of == "gradient" and not int(np.asarray(at["count"]).sum()):
                continue  # a step whose gradients were not captured
            values += _step_values(at, f"{key}/{of}")
        yield int(step), float(walls[position]), values


def export_tensorboard(run: Any, directory: str | os.PathLike[str], progress: bool = False) -> Path:
    """Write ``run``'s histograms and scalars to one event file in ``directory``.

    Parameters
    ----------
    run : Run or TrainingRun
        An opened run (``tensortap.open_run``).
    directory : str or os.PathLike
        The TensorBoard log folder (``tensorboard --logdir DIR``); created if missing.
    progress : bool
        Show a progress bar over the steps.

    Returns
    -------
    Path
        The event file written.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.tensortap"
    events: Any = _events(run)
    if progress:
        from tqdm.auto import tqdm

        total = len(run.step_values) if hasattr(run, "step_values") else 1
        events = tqdm(events, total=total, unit="step", desc="tensorboard")
    with open(path, "wb") as out:
        header = _double(1, time.time()) + _bytes(3, b"brain.Event:2")
        out.write(_record(header))
        for step, wall, values in events:
            out.write(_record(_event(step, wall, values)))
    return path
