"""A ``Run``-like object built from xarray arrays, shaped as docs/contracts.md says.

For the view and CAM unit tests: no engine, no framework, any dimension order (a PyTorch run
stores maps as ``channel, height, width``).  Statistics are computed here with plain NumPy
in the stored layout (``count``, ``mean``, ..., ``histogram(bin)``, ``bin_edges(bin_edge)``,
``sample_mean``/``sample_max(sample, channel)``).
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import xarray as xr

from tensortap.core.errors import LayerNotFoundError
from tensortap.core.graph import channel_dim


def layer_stats(array: xr.DataArray, bins: int = 32) -> xr.Dataset:
    """Per-channel statistics of a ``(sample, ...)`` array, as ``run.stats(key)`` returns them."""
    dims = tuple(str(d) for d in array.dims)
    chan = channel_dim(dims[1:])
    if chan is None:
        array = array.expand_dims("channel", axis=-1)
        chan = "channel"
    other = [d for d in array.dims if d not in ("sample", chan)]
    values = np.asarray(array.transpose("sample", *other, chan).values, dtype=np.float64)
    n, c = values.shape[0], values.shape[-1]
    per_sample = values.reshape(n, -1, c)
    flat = per_sample.reshape(-1, c)
    edges = np.linspace(
        flat.min(), flat.max() if flat.max() > flat.min() else flat.min() + 1, bins + 1
    )
    counts, _ = np.histogram(flat, bins=edges)
    return xr.Dataset(
        {
            "count": ("channel", np.full(c, flat.shape[0], dtype=np.int64)),
            "mean": ("channel", flat.mean(axis=0)),
            "std": ("channel", flat.std(axis=0)),
            "min": ("channel", flat.min(axis=0)),
            "max": ("channel", flat.max(axis=0)),
            "zero_fraction": ("channel", (flat == 0).mean(axis=0)),
            "nonfinite": ("channel", np.zeros(c, dtype=np.int64)),
            "histogram": ("bin", counts.astype(np.int64)),
            "underflow": ((), 0),
            "overflow": ((), 0),
            "zeros": ((), int((flat == 0).sum())),
            "sample_mean": (("sample", "channel"), per_sample.mean(axis=1).astype(np.float32)),
            "sample_max": (("sample", "channel"), per_sample.max(axis=1).astype(np.float32)),
        },
        coords={"bin_edges": ("bin_edge", edges), "sample": array["sample"].values},
        attrs={"channel_dim": chan},
    )


class FakeRun:
    """The reader API of ``tensortap.Run`` over in-memory arrays.

    Parameters
    ----------
    activations : dict of key -> (dims, ndarray)
        ``dims`` excludes ``"sample"``.
    gradients : dict, optional
        Same keys and shapes as ``activations``.
    inputs : (dims, ndarray), optional
        The stored model input (dims exclude ``"sample"``).
    """

    def __init__(
        self,
        activations: dict[str, tuple[tuple[str, ...], np.ndarray]],
        gradients: dict[str, np.ndarray] | None = None,
        inputs: tuple[tuple[str, ...], np.ndarray] | None = None,
        labels: np.ndarray | None = None,
        predictions: np.ndarray | None = None,
        attrs: dict[str, Any] | None = None,
        path: str = "fake.zarr",
    ) -> None:
        first = next(iter(activations.values()))[1]
        self.samples = int(first.shape[0])
        sample = np.arange(self.samples, dtype=np.int64)
        self._acts = {
            k: xr.DataArray(
                v,
                dims=("sample", *d),
                coords={"sample": sample},
                name="activation",
                attrs={"long_name": f"{k} activation", "units": "a.u."},
            )
            for k, (d, v) in activations.items()
        }
        self._grads = {k: self._acts[k].copy(data=g) for k, g in (gradients or {}).items()}
        self._inputs = (
            None
            if inputs is None
            else xr.DataArray(inputs[1], dims=("sample", *inputs[0]), coords={"sample": sample})
        )

        def coord(v: Any) -> xr.DataArray | None:
            return None if v is None else xr.DataArray(v, dims="sample", coords={"sample": sample})

        self.labels, self.predictions = coord(labels), coord(predictions)
        self.layers = tuple(activations)
        self.attrs = {"target": "predicted", "inputs": [], **(attrs or {})}
        self.path = path
        self._stats: dict[str, xr.Dataset] = {}

    def _check(self, key: str) -> None:
        if key not in self._acts:
            close = difflib.get_close_matches(key, self.layers)
            raise LayerNotFoundError(f"no layer {key!r} in the run; did you mean {close}?")

    def activation(self, key: str) -> xr.DataArray:
        self._check(key)
        return self._acts[key]

    def has_gradient(self, key: str) -> bool:
        self._check(key)
        return key in self._grads

    def gradient(self, key: str) -> xr.DataArray:
        self._check(key)
        return self._grads[key]

    def inputs(self, name: str | None = None) -> xr.DataArray | None:
        return self._inputs

    @property
    def input_names(self) -> tuple[str, ...]:
        return () if self._inputs is None else ("input",)

    def stats(self, key: str) -> xr.Dataset:
        self._check(key)
        if key not in self._stats:
            self._stats[key] = layer_stats(self._acts[key])
        return self._stats[key]

    def node(self, key: str) -> dict[str, Any]:
        self._check(key)
        return {
            "name": key,
            "layer_type": "Fake",
            "long_name": f"{key} activation",
            "dims": list(self._acts[key].dims[1:]),
        }
