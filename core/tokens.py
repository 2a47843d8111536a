"""Token outputs of patch-embedding models (ViT) as spatial maps on their patch grid.

A Vision Transformer block outputs ``(token, feature)`` per sample: optional prefix tokens
(the class token, distillation or register tokens) followed by one token per image patch
in row-major order — torchvision's ``VisionTransformer`` flattens its ``conv_proj`` output
``(feature, gh, gw)`` that way, as do timm, Hugging Face and keras_hub.  The patch tokens
reshaped to ``(gh, gw, feature)`` are a channels-last feature map, so every CAM method
applies to them unchanged (the reshape that pytorch-grad-cam users write by hand as a
``reshape_transform``).
"""

from __future__ import annotations

import math

import xarray as xr

from tensortap.core.errors import ViewError

__all__ = ["SEQUENCE_DIMS", "is_token_layer", "patch_grid", "token_grid"]

#: Names a backend gives the token axis of a ``(token, feature)`` output.
SEQUENCE_DIMS = ("token", "time")
#: Prefix tokens tried when the grid is inferred (class + up to 8 register tokens).
_MAX_PREFIX = 9


def is_token_layer(dims: tuple[str, ...]) -> bool:
    """Whether per-sample ``dims`` (sample excluded) are ``(token|time, feature)``."""
    return len(dims) == 2 and dims[0] in SEQUENCE_DIMS and dims[1] == "feature"


def patch_grid(
    n_tokens: int,
    *,
    grid: tuple[int, int] | None = None,
    input_size: tuple[int, int] | None = None,
    patch_size: int | tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
) -> tuple[int, tuple[int, int]]:
    """The number of prefix tokens and the ``(rows, columns)`` patch grid of a token layer.

    In order of preference: ``grid`` as given; ``input_size // patch_size``; else a square
    grid after the fewest prefix tokens (0..9) that leave a perfect square.
    ``prefix_tokens`` fixes the prefix in each case.

    Raises
    ------
    ViewError
        The tokens do not fit the grid, or no square grid fits.
    """
    if grid is None and input_size is not None and patch_size is not None:
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        grid = (int(input_size[0]) // int(ph), int(input_size[1]) // int(pw))
    if grid is not None:
        rows, cols = int(grid[0]), int(grid[1])
        prefix = n_tokens - rows * cols if prefix_tokens is None else int(prefix_tokens)
        if prefix < 0 or prefix + rows * cols != n_tokens:
            raise ViewError(
                f"a layer of {n_tokens} tokens does not fit a {rows}x{cols} patch grid with "
                f"{prefix} prefix tokens; pass grid=(rows, cols) and prefix_tokens= that match"
            )
        return prefix, (rows, cols)
    candidates = range(_MAX_PREFIX + 1) if prefix_tokens is None else [int(prefix_tokens)]
    for prefix in candidates:
        side = math.isqrt(max(n_tokens - prefix, 0))
        if side > 0 and side * side == n_tokens - prefix:
            return prefix, (side, side)
    raise ViewError(
        f"cannot tell the patch grid of a layer of {n_tokens} tokens (no square grid after "
        f"0..{_MAX_PREFIX} prefix tokens); pass grid=(rows, columns) or patch_size="
    )


def token_grid(
    array: xr.DataArray,
    *,
    grid: tuple[int, int] | None = None,
    input_size: tuple[int, int] | None = None,
    patch_size: int | tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
) -> xr.DataArray:
    """A ``(sample, token, feature)`` array as ``(sample, height, width, channel)``.

    Prefix tokens (class, registers) are dropped; the patch tokens are laid out row-major
    on the grid found by :func:`patch_grid`.  Lazy arrays stay lazy.

    Parameters
    ----------
    array : xarray.DataArray, dims ("sample", "token" or "time", "feature")
    grid, input_size, patch_size, prefix_tokens
        See :func:`patch_grid`.

    Returns
    -------
    xarray.DataArray, dims ("sample", "height", "width", "channel")
        attrs gain ``prefix_tokens`` and ``patch_grid``.
    """
    dims = tuple(str(d) for d in array.dims)
    if dims[0] != "sample" or not is_token_layer(dims[1:]):
        raise ViewError(f"a token layer has dims (sample, token, feature); got {dims}")
    token_dim = dims[1]
    prefix, (rows, cols) = patch_grid(
        int(array.sizes[token_dim]),
        grid=grid,
        input_size=input_size,
        patch_size=patch_size,
        prefix_tokens=prefix_tokens,
    )
    patches = array.isel({token_dim: slice(prefix, None)}).drop_vars(token_dim, errors="ignore")
    data = patches.data.reshape(patches.shape[0], rows, cols, patches.shape[2])
    coords = {"sample": array["sample"].values} if "sample" in array.coords else {}
    return xr.DataArray(
        data,
        dims=("sample", "height", "width", "channel"),
        coords=coords,
        name=array.name,
        attrs={**array.attrs, "prefix_tokens": prefix, "patch_grid": [rows, cols]},
    )
