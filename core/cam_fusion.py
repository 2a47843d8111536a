"""One map from several captured layers: pytorch-grad-cam's multi-layer mean.

Each layer's CAM is normalised to [0, 1] and resized to the common output size, the maps
are averaged and the mean normalised again — so a coarse late layer (7x7, semantic) and
a finer earlier one (28x28, precise) each weigh the same (``aggregate_multi_layers`` in
https://github.com/jacobgil/pytorch-grad-cam).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from tensortap.core.cam import cam, input_size, normalize_maps
from tensortap.core.errors import ViewError

__all__ = ["fused_cam"]


def fused_cam(
    run: Any,
    keys: Sequence[str],
    method: str = "gradcam",
    sample: int | Sequence[int] | None = None,
    *,
    size: tuple[int, int] | None = None,
    **options: Any,
) -> xr.DataArray:
    r"""The mean of several layers' normalised CAMs, normalised again.

    .. math:: L = \mathrm{norm}\Big(\frac{1}{K} \sum_{k=1}^{K} \mathrm{norm}(L_k)\Big)

    Parameters
    ----------
    run : tensortap.Run
    keys : sequence of str
        Two or more spatial (or token) layers.
    method, sample, size
        As :func:`tensortap.core.cam.cam`; ``size`` defaults to the model input's size.
    **options
        Passed to :func:`~tensortap.core.cam.cam` (``eigen_smooth``, ``grid``...).

    Returns
    -------
    xarray.DataArray, dims ("sample", "y", "x"), in [0, 1]
        attrs ``layers`` name the fused layers.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ViewError("fused_cam needs at least one layer key; got an empty list")
    target = size or input_size(run)
    if target is None:
        raise ViewError("cannot tell the model input's size; pass size=(height, width)")
    maps = [cam(run, key, method, sample, size=target, **options) for key in keys]
    mean = np.mean([m.values.astype(np.float64) for m in maps], axis=0)
    fused = np.clip(normalize_maps(mean), 0.0, 1.0).astype(np.float32)
    first = maps[0]
    return first.copy(data=fused).assign_attrs(
        long_name=f"{method} map fused over {len(keys)} layers",
        layer=" + ".join(keys),
        layers=keys,
    )
