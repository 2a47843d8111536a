"""Reading what a view needs from a run: validated positions, arrays by dimension name, labels.

Views receive a :class:`tensortap.Run` (or anything with the same reader API, see
docs/contracts.md) and must find dimensions by *name*: a Keras run stores maps as
``(height, width, channel)``, a PyTorch run as ``(channel, height, width)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
import xarray as xr

from tensortap.core.cam_info import target_classes
from tensortap.core.class_names import class_label
from tensortap.core.errors import TensortapError, ViewError
from tensortap.core.graph import channel_dim
from tensortap.core.sample_reads import take_samples
from tensortap.core.selection import resolve_layer_key

__all__ = [
    "channel_count",
    "check_channel",
    "check_sample",
    "hv_dimension",
    "indexed",
    "layer_key",
    "layer_map",
    "positions",
    "sample_caption",
    "stored_input",
    "stored_inputs",
    "target_class",
]


def indexed(run: Any) -> Any:
    """The run whose arrays read a few samples through zarr directly (:meth:`Run.indexed`),
    for views that read a handful of samples; a reader without it is returned as is."""
    view = getattr(run, "indexed", None)
    return view() if callable(view) else run


def layer_key(run: Any, key: str) -> str:
    """The run's key for ``key`` (a unique bare layer name resolves to its full key)."""
    layers = tuple(getattr(run, "layers", ()))
    if key in layers:
        return key
    return resolve_layer_key(layers, key) or key  # unknown: the reader raises with hints


def check_sample(n_samples: int, sample: int) -> int:
    """A 0-based position among the committed samples (negative counts from the end)."""
    if isinstance(sample, bool) or not isinstance(sample, int | np.integer):
        raise ViewError(f"sample must be an int, got {sample!r}")
    if not -n_samples <= sample < n_samples:
        raise ViewError(
            f"sample {sample} is out of range: the run has {n_samples} committed samples"
            + (
                f" (0..{n_samples - 1}); pass a sample in 0..{n_samples - 1} (negative ones "
                "count from the end)"
                if n_samples
                else "; capture or resume the run first"
            )
        )
    return int(sample) % n_samples


def channel_count(array: xr.DataArray) -> int:
    """Number of channels of a layer array (1 when it has no channel-like dim)."""
    name = channel_dim(tuple(str(d) for d in array.dims))
    return int(array.sizes[name]) if name else 1


def check_channel(key: str, n_channels: int, channel: int) -> int:
    """A validated channel index of layer ``key``."""
    if isinstance(channel, bool) or not isinstance(channel, int | np.integer):
        raise ViewError(f"channel must be an int, got {channel!r}")
    if not 0 <= channel < n_channels:
        raise ViewError(
            f"channel {channel} is out of range: layer {key!r} has {n_channels} channels "
            f"(0..{n_channels - 1}); pass a channel in 0..{n_channels - 1}"
        )
    return int(channel)


def hv_dimension(
    array: xr.DataArray | None, name: str, default: str | None = None, *, values: bool = False
) -> hv.Dimension:
    """A HoloViews dimension labelled from xarray attrs (``long_name``, ``units``).

    ``values=True`` labels the array's values (its own attrs); otherwise ``name`` is an axis,
    labelled by its coordinate's attrs when it has one.
    """
    attrs: dict[str, Any] = {}
    if array is not None and values:
        attrs = dict(array.attrs)
    elif array is not None and name in array.coords:
        attrs = dict(array[name].attrs)
    label = attrs.get("long_name") or default or name
    unit = attrs.get("units") or None
    return hv.Dimension(name, label=str(label), unit=str(unit) if unit else None)


def layer_map(array: xr.DataArray, key: str) -> xr.DataArray:
    """One sample's layer output arranged for display, dims found by name.

    Returns ``(channel, height, width)`` for spatial layers; otherwise one image with a
    leading ``channel`` dim of length 1: ``(channel, time, feature)`` for sequences and
    ``(channel, unit_row, unit_column)`` for dense layers (:func:`unit_grid`).
    """
    dims = tuple(str(d) for d in array.dims)
    if "height" in dims and "width" in dims:
        if "channel" not in dims:
            array = array.expand_dims("channel")
        rest = [d for d in array.dims if d not in ("channel", "height", "width")]
        if rest:
            raise ViewError(f"layer {key!r} has dims {dims}: cannot show a 2-D map over {rest}")
        return array.transpose("channel", "height", "width")
    if dims == ("time", "feature") or set(dims) == {"time", "feature"}:
        return array.transpose("time", "feature").expand_dims("channel")
    if len(dims) == 1:
        return unit_grid(array).expand_dims("channel")
    if not dims:
        return array.expand_dims(["channel", "row", "unit"])
    raise ViewError(f"layer {key!r} has dims {dims}: no 2-D view for them")


#: Dense layers up to this many units are drawn as one row; wider ones as a near-square grid.
STRIP_UNITS = 16


def unit_grid(array: xr.DataArray) -> xr.DataArray:
    """A dense layer's units ``(unit,)`` as a readable 2-D image ``(unit_row, unit_column)``.

    Up to :data:`STRIP_UNITS` units stay one row; more fill a near-square grid row by row
    (unit ``row * columns + column``), the tail padded with NaN (drawn transparent), so a
    512-unit layer is a 23 × 23 picture instead of a 1-pixel strip.
    """
    (dim,) = (str(d) for d in array.dims)
    n = int(array.sizes[dim])
    columns = n if n <= STRIP_UNITS else math.ceil(math.sqrt(n))
    rows = max(1, math.ceil(n / max(columns, 1)))
    values = np.full(rows * columns, np.nan)
    values[:n] = np.asarray(array.values, dtype=np.float64)
    row_name = f"row (unit = row × {columns} + column)" if rows > 1 else "row"
    return xr.DataArray(
        values.reshape(rows, columns),
        dims=("unit_row", "unit_column"),
        coords={
            "unit_row": ("unit_row", np.arange(rows), {"long_name": row_name}),
            "unit_column": (
                "unit_column",
                np.arange(columns),
                {"long_name": "column" if rows > 1 else dim},
            ),
        },
        attrs=dict(array.attrs),
        name=array.name,
    )


def stored_input(run: Any, position: int) -> np.ndarray | None:
    """The stored model input of one sample as ``(height, width, channel)``, or ``None``.

    ``None`` when the run kept no inputs or the first input is not image-like.
    """
    images = stored_inputs(run, [position])
    return None if images is None else images[0]


def stored_inputs(run: Any, positions: Sequence[int]) -> np.ndarray | None:
    """The stored model inputs of several samples as ``(n, height, width, channel)``.

    One zarr read for all of them (:func:`indexed`: only their chunks), in the order
    given; ``None`` when the run kept no inputs or the first input is not image-like.
    """
    try:
        inputs = indexed(run).inputs()
    except (TensortapError, KeyError, LookupError, FileNotFoundError):
        return None
    if inputs is None or "height" not in inputs.dims or "width" not in inputs.dims:
        return None
    images = take_samples(inputs, list(positions))
    if "channel" in images.dims:
        images = images.transpose("sample", "height", "width", "channel")
    else:
        images = images.transpose("sample", "height", "width").expand_dims("channel", axis=-1)
    return np.asarray(images.values)


def _coordinate(run: Any, name: str) -> xr.DataArray | None:
    value = getattr(run, name, None)
    return value if isinstance(value, xr.DataArray) else None


def sample_caption(run: Any, position: int) -> str:
    """``"sample 12 · label 3 · pred 5"`` for titles (the parts the run has)."""
    parts = [f"sample {_sample_index(run, position)}"]
    names = (getattr(run, "attrs", None) or {}).get("class_names")
    for word, attr in (("label", "labels"), ("pred", "predictions")):
        values = _coordinate(run, attr)
        if values is not None and values.sizes.get("sample", 0) > position:
            parts.append(f"{word} {class_label(values.isel(sample=position).values.item(), names)}")
    return " · ".join(parts)


def _sample_index(run: Any, position: int) -> int:
    """The run's global index of the sample at ``position`` (they differ after a resume)."""
    labels = _coordinate(run, "predictions")
    if labels is None:
        labels = _coordinate(run, "labels")
    if labels is not None and "sample" in labels.coords:
        return int(labels["sample"].values[position])
    return position


def target_class(run: Any, position: int) -> int | None:
    """The class whose score the stored gradients of this sample differentiate, if known.

    The run's stored per-sample ``target_class``, else derived from the run's target
    (:func:`tensortap.core.cam_info.target_classes`).
    """
    classes = target_classes(run, [position])
    if classes is None or classes[0] < 0:
        return None
    return int(classes[0])


def positions(
    n_samples: int, samples: int | Sequence[int] | range | None, default: int
) -> list[int]:
    """Validated sample positions; ``None`` means the first ``default`` ones."""
    if samples is None:
        return list(range(min(default, n_samples)))
    if isinstance(samples, int | np.integer):
        samples = [int(samples)]
    return [check_sample(n_samples, int(s)) for s in samples]
