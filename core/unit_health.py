"""Dead and saturated units per layer, by index, from the stored per-channel statistics.

Pure NumPy over ``run.stats(key)`` (never the activations), so ``tensortap info`` and the
views list them on runs of any size.  Layers that only move their input's values around
(pooling, flatten, reshape, dropout...) *inherit* their input's dead channels: they are
reported but marked ``derived`` and left out of totals, so a dead channel is counted once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["BOUNDED_ACTIVATIONS", "DERIVED_LAYER_TYPES", "is_derived", "unit_health"]

#: Output ranges of bounded activations, matched (case-insensitively) against a layer's
#: key, name, type and long name: these layers can saturate.
BOUNDED_ACTIVATIONS: dict[str, tuple[float, float]] = {
    "hard_sigmoid": (0.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu6": (0.0, 6.0),
}

#: Layer types (Keras and PyTorch class names, lower case, matched as substrings) whose
#: output channel is a rearrangement or a pooling of the same input channel.
DERIVED_LAYER_TYPES = (
    "pool",
    "flatten",
    "reshape",
    "dropout",
    "identity",
    "permute",
    "cropping",
    "zeropadding",
    "upsampling",
)


def _node(run: Any, key: str) -> Mapping[str, Any]:
    try:
        return run.node(key) or {}
    except Exception:  # noqa: BLE001 - a reader without .node(): match the key alone
        return {}


def is_derived(run: Any, key: str) -> bool:
    """Whether layer ``key`` pools or rearranges its input (inherits its dead channels)."""
    layer_type = str(_node(run, key).get("layer_type", "")).lower()
    return any(word in layer_type for word in DERIVED_LAYER_TYPES)


def _bounds(
    run: Any, key: str, given: Mapping[str, tuple[float, float]] | None
) -> tuple[float, float] | None:
    if given and key in given:
        return given[key]
    node = _node(run, key)
    text = " ".join(str(node.get(f, "")) for f in ("name", "layer_type", "long_name", "activation"))
    text = f"{key} {text}".lower()
    for name, bounds in BOUNDED_ACTIVATIONS.items():
        if re.search(rf"(^|[^a-z_]|_){re.escape(name)}($|[^a-z0-9])", text):
            return bounds
    return None


def unit_health(
    run: Any,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    tolerance: float = 0.01,
    keys: Any = None,
) -> list[dict[str, Any]]:
    """Per layer: channels never active, and channels stuck at a bound, by index.

    A channel is *dead* when it never exceeded 0 over the whole run (``max <= 0``: a ReLU
    unit that never fires).  For a bounded activation with range ``[lo, hi]`` (from
    ``bounds`` or :data:`BOUNDED_ACTIVATIONS`), a channel is *saturated* when all its values
    lie within ``tolerance * (hi - lo)`` of one bound (``min >= hi - eps`` or ``max <= lo + eps``).

    Parameters
    ----------
    keys : sequence of str, optional
        Layers to report (default: every layer of the run).

    Returns
    -------
    list of dict
        ``layer, channels, dead, dead_fraction, dead_units, saturated,
        saturated_fraction, saturated_units, bounds, derived`` (``derived``: a pooling or
        reshaping layer, whose dead channels are its input's).
    """
    rows = []
    for key in run.layers if keys is None else keys:
        stats = run.stats(key)
        high_c = np.asarray(stats["max"].values, dtype=np.float64)
        low_c = np.asarray(stats["min"].values, dtype=np.float64)
        seen = np.asarray(stats["count"].values) > 0
        n = int(seen.sum())
        dead_units = np.flatnonzero(seen & (high_c <= 0.0))
        layer_bounds = _bounds(run, key, bounds)
        saturated_units = np.zeros(0, dtype=np.intp)
        if layer_bounds is not None:
            lo, hi = layer_bounds
            eps = tolerance * (hi - lo)
            stuck = seen & ((low_c >= hi - eps) | (high_c <= lo + eps))
            saturated_units = np.flatnonzero(stuck)
        rows.append(
            {
                "layer": key,
                "channels": n,
                "dead": len(dead_units),
                "dead_fraction": len(dead_units) / n if n else 0.0,
                "dead_units": [int(u) for u in dead_units],
                "saturated": len(saturated_units),
                "saturated_fraction": len(saturated_units) / n if n else 0.0,
                "saturated_units": [int(u) for u in saturated_units],
                "bounds": layer_bounds,
                "derived": is_derived(run, key),
            }
        )
    return rows
