"""Explanations stored inside a run: ``/explanations/<name>/values`` (issue 17).

Input attributions (saliency, Integrated Gradients...), model-based CAMs (ScoreCAM,
AblationCAM, occlusion) and faithfulness scores are computed with the model, once, and
written next to the captured tensors so the views read them offline like a CAM.  Each
explanation is one Zarr v3 array with ``dimension_names`` (``sample`` first) and its
attrs, plus a ``sample`` array holding the run's sample indices — it opens with plain
zarr or xarray.  Writing one never touches the captured arrays or the commit record.
Its chunks end with a CRC-32C like every chunk of a run; ``tt.verify`` checks them, and a
read of a missing or damaged chunk is :class:`~tensortap.core.errors.CorruptRunError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from tensortap.core.errors import CorruptRunError, StorageError, ViewError
from tensortap.core.store.checksums import with_checksum
from tensortap.core.store.storage import open_location

__all__ = ["GROUP", "explanation_names", "read_explanation", "write_explanation"]

#: The run's group that holds explanations.
GROUP = "explanations"


def _store(run: Any, *, writable: bool) -> Any:
    location = getattr(run, "_location", None)
    if location is not None and not writable:
        return location.store
    if str(run.path) == "<memory>":
        if location is None:
            raise StorageError("an in-memory run without its store cannot hold explanations")
        return location.store
    return open_location(run.path, None, read_only=not writable).store


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ViewError(f"explanation name {name!r} must be a non-empty name without '/'")
    return name


def write_explanation(run: Any, name: str, values: xr.DataArray) -> None:
    """Store ``values`` (dims ``("sample", ...)``) as explanation ``name``, replacing it.

    Parameters
    ----------
    run : tensortap.Run
    name : str
        e.g. ``"integrated_gradients"`` or ``"scorecam/conv"``-free names (no ``/``).
    values : xarray.DataArray
        First dim ``sample``; its ``sample`` coordinate (the run's sample indices) is kept.
    """
    _check_name(name)
    if not values.dims or values.dims[0] != "sample":
        raise ViewError(f"an explanation's first dim must be 'sample'; got {values.dims}")
    store = _store(run, writable=True)
    data = np.ascontiguousarray(values.values)
    samples = (
        values["sample"].values if "sample" in values.coords else np.arange(data.shape[0])
    ).astype(np.int64)
    path = f"{GROUP}/{name}"
    group = zarr.open_group(store, path=path, mode="w", zarr_format=3)
    attrs = {k: _jsonable(v) for k, v in values.attrs.items()}
    group.create_array(
        "values",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(max(1, min(data.shape[0], 256)), *data.shape[1:]),
        dimension_names=[str(d) for d in values.dims],
        attributes=attrs,
        compressors=with_checksum(ZstdCodec()),  # zarr's default compressor, then a CRC-32C
    )[...] = data
    group.create_array(
        "sample",
        shape=samples.shape,
        dtype=np.int64,
        dimension_names=["sample"],
        compressors=with_checksum(None),
    )[...] = samples


def _read_whole(array: zarr.Array[Any], run: Any, name: str) -> np.ndarray:
    """Every chunk of ``array`` (an explanation is written whole): a missing chunk (zarr
    would read its fill value) or one failing its checksum is :class:`CorruptRunError`."""
    fix = (
        f"compute it again with tt.explain (it replaces the stored one), or run "
        f"`tensortap verify {run.path} --repair` to delete it"
    )
    if array.nchunks_initialized != array.nchunks:
        raise CorruptRunError(
            f"explanation {name!r} of {str(run.path)!r} is damaged: {array.path} has "
            f"{array.nchunks_initialized} of its {array.nchunks} chunks; {fix}"
        )
    try:
        return np.asarray(array[...])
    except Exception as err:  # noqa: BLE001 - a chunk zarr cannot decode is damage
        first = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise CorruptRunError(
            f"explanation {name!r} of {str(run.path)!r} is damaged: {array.path} cannot be "
            f"decoded ({first}); {fix}"
        ) from err


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _captured(run: Any) -> tuple[str, ...]:
    """Input attributions the capture step stored (``/attributions``)."""
    return tuple(getattr(run, "attribution_names", ()))


def explanation_names(run: Any) -> tuple[str, ...]:
    """Names of the explanations stored in ``run`` (sorted), with the input attributions
    computed at capture."""
    try:
        group = zarr.open_group(_store(run, writable=False), path=GROUP, mode="r")
        stored = {name for name, _ in group.groups()}
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        stored = set()
    return tuple(sorted(stored | set(_captured(run))))


def read_explanation(run: Any, name: str) -> xr.DataArray:
    """Explanation ``name`` of ``run`` as a DataArray (loaded; explanations are small).

    One written after the capture (``tt.explain`` / ``tt.attribute``) wins; else an input
    attribution the capture step computed (``/attributions/<name>``).

    Raises
    ------
    ViewError
        No explanation of that name; the message lists the stored ones.
    """
    _check_name(name)
    store = _store(run, writable=False)
    try:
        group = zarr.open_group(store, path=f"{GROUP}/{name}", mode="r")
        array = group["values"]
        sample_array = group["sample"]
        assert isinstance(array, zarr.Array) and isinstance(sample_array, zarr.Array)
        samples = _read_whole(sample_array, run, name)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        if name in _captured(run):
            captured = run.attributions(name)
            return captured.load().rename(name)  # type: ignore[no-any-return]
        stored = explanation_names(run)
        raise ViewError(
            f"the run holds no explanation {name!r}; stored: {', '.join(stored) or 'none'} "
            f"(compute one with tt.explain(model, run, method=...))"
        ) from None
    dims = tuple(getattr(array.metadata, "dimension_names", None) or ())
    return xr.DataArray(
        _read_whole(array, run, name),
        dims=dims,
        coords={"sample": samples},
        name=name,
        attrs=dict(array.attrs),
    )
