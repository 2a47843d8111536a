"""Reading a few samples of a stored array without reading their whole blocks.

A run's arrays open as Dask arrays chunked by block (up to a twelfth of the memory; the
large arrays sharded into ~1 MiB inner chunks on disk).  Dask fuses a *slice* into the
read of its chunk, so zarr reads only the inner chunks it needs; a *list* of positions
becomes a ``take`` over whole chunks, and picking 9 samples of a 224-sample block of a
64×64×256 layer then reads ~1 GB.  Several slices in one graph lose the fusion too (they
share the chunk's read), so :func:`take_samples` reads scattered positions one slice at a
time: 9 such samples take ~0.3 s instead of ~4 s (measured on bench_serve's run).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

__all__ = ["take_samples"]

#: More positions than this are read with one ``isel`` (a take over the chunks): a read of
#: most of a run is cheaper as whole blocks than as hundreds of small reads.
MAX_SCATTERED = 64


def take_samples(array: xr.DataArray, positions: Sequence[int] | np.ndarray) -> xr.DataArray:
    """``array.isel(sample=positions)``, read position by position when that reads less.

    Parameters
    ----------
    array : xarray.DataArray
        An array with a ``sample`` dimension, Dask-backed or not.
    positions : sequence of int
        Positions along ``sample``, in the order wanted (repeats allowed).

    Returns
    -------
    xarray.DataArray
        The selected samples, equal to ``array.isel(sample=positions)``: lazy when the
        positions are contiguous or the array is not Dask-backed, else already read.
    """
    chosen = [int(p) for p in np.asarray(positions, dtype=np.int64).ravel()]
    n = array.sizes["sample"]
    chosen = [p + n if p < 0 else p for p in chosen]
    if not chosen:
        return array.isel(sample=chosen)
    first = chosen[0]
    if chosen == list(range(first, first + len(chosen))):  # contiguous: one slice
        return array.isel(sample=slice(first, first + len(chosen)))
    # ``chunks``, not ``array.data``: the data of a lazily indexed array is all of it, read.
    if array.chunks is None or len(chosen) > MAX_SCATTERED:
        return array.isel(sample=chosen)
    parts = [array.isel(sample=slice(p, p + 1)).compute() for p in chosen]
    return xr.concat(parts, dim="sample", coords="minimal", compat="override", join="override")
