"""Class activation maps (the Grad-CAM family) from stored activations and gradients.

Pure NumPy and framework-free: a CAM here is computed offline, from what a run stored —
the activations ``A`` of a spatial layer and the gradients ``G = dy/dA`` of the run's
per-sample target score ``y`` — never by running the model again.  Each method is a small
function from ``(A, G)`` shaped ``(sample, height, width, channel)`` to the raw map
``(sample, height, width)`` after the ReLU, with its formula and paper in the docstring
(the torch-cam layout).  :func:`cam` reads a run, finds the dimensions by *name*
(a PyTorch run stores ``channel, height, width``, a Keras run ``height, width, channel``),
normalises each sample's map to [0, 1] and resizes it to the model input's size.

>>> import tensortap as tt
>>> tt.cam(run, "conv2d_1", method="gradcam++")          # doctest: +SKIP
<xarray.DataArray 'cam' (sample: 32, y: 28, x: 28)> ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from tensortap.core import cam_methods
from tensortap.core.cam_info import MapFacts, choose_targets, describe_cam, map_facts
from tensortap.core.errors import NoGradientsError, ViewError
from tensortap.core.sample_reads import take_samples
from tensortap.core.tokens import is_token_layer, token_grid

__all__ = [
    "CAM_METHODS",
    "cam",
    "cam_maps",
    "gradcam",
    "gradcam_plus_plus",
    "hirescam",
    "input_size",
    "layercam",
    "normalize_maps",
    "resize_bilinear",
    "xgradcam",
]

#: Canonical order of a map tensor inside this module: channels last.
_MAP_DIMS = ("sample", "height", "width", "channel")
#: Samples read and processed at once by :func:`cam`: bounds memory on runs of many GB.
_BLOCK = 256


def _relu(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum(x, 0.0))


def gradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""Grad-CAM: channels weighted by their spatially averaged gradient.

    .. math::

        w_c = \frac{1}{HW} \sum_{i,j} G_{ijc}, \qquad
        L = \mathrm{ReLU}\Big(\sum_c w_c A_{\cdot\cdot c}\Big)

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, https://arxiv.org/abs/1610.02391

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)

    Returns
    -------
    ndarray, shape (sample, height, width)
        The map after the ReLU, not normalised.
    """
    weights = gradients.mean(axis=(1, 2))  # (sample, channel)
    return _relu(np.einsum("nhwc,nc->nhw", activations, weights))


def gradcam_plus_plus(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""Grad-CAM++: pixel-wise weighted positive gradients.

    With the exponential-score trick of the paper (``Y = exp(S)``), the higher derivatives
    are powers of the first one and ``exp(S)`` cancels in :math:`\alpha`:

    .. math::

        \alpha_{ijc} = \frac{G_{ijc}^2}{2 G_{ijc}^2 + \sum_{a,b} A_{abc}\, G_{ijc}^3}, \qquad
        w_c = \sum_{i,j} \alpha_{ijc}\, \mathrm{ReLU}(G_{ijc}), \qquad
        L = \mathrm{ReLU}\Big(\sum_c w_c A_{\cdot\cdot c}\Big)

    with :math:`\alpha = 0` where the denominator is 0 (no gradient there).  The remaining
    positive factor ``exp(S)`` of the first derivative scales a sample's whole map and
    disappears in the per-sample normalisation.

    Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, https://arxiv.org/abs/1710.11063 (eq. 19)

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)

    Returns
    -------
    ndarray, shape (sample, height, width)
    """
    weights = cam_methods.gradcam_pp_weights(activations, gradients)  # (sample, channel)
    return _relu(np.einsum("nhwc,nc->nhw", activations, weights))


def layercam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""LayerCAM: every location weighted by its own positive gradient.

    .. math::

        L = \mathrm{ReLU}\Big(\sum_c \mathrm{ReLU}(G_{\cdot\cdot c}) \odot A_{\cdot\cdot c}\Big)

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 30, 2021, https://doi.org/10.1109/TIP.2021.3089943

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)

    Returns
    -------
    ndarray, shape (sample, height, width)
    """
    return _relu((_relu(gradients) * activations).sum(axis=-1))


def hirescam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""HiResCAM: the element-wise product of gradients and activations, summed over channels.

    .. math::

        L = \mathrm{ReLU}\Big(\sum_c G_{\cdot\cdot c} \odot A_{\cdot\cdot c}\Big)

    Unlike Grad-CAM it does not average the gradients, so the map provably reflects the
    locations the model used (for models ending in one fully connected layer).

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", 2020, https://arxiv.org/abs/2011.08891

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)

    Returns
    -------
    ndarray, shape (sample, height, width)
    """
    return _relu((gradients * activations).sum(axis=-1))


def xgradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""XGrad-CAM: gradients averaged with the normalised activations as weights.

    .. math::

        w_c = \sum_{i,j} \frac{A_{ijc}}{\sum_{a,b} A_{abc}}\, G_{ijc}, \qquad
        L = \mathrm{ReLU}\Big(\sum_c w_c A_{\cdot\cdot c}\Big)

    A channel whose activations sum to 0 gets weight 0.

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of
    CNNs", BMVC 2020, https://arxiv.org/abs/2008.02312

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)

    Returns
    -------
    ndarray, shape (sample, height, width)
    """
    spatial_sum = activations.sum(axis=(1, 2))  # (sample, channel)
    safe = np.where(spatial_sum != 0.0, spatial_sum, 1.0)
    weights = np.where(spatial_sum != 0.0, (activations * gradients).sum(axis=(1, 2)) / safe, 0.0)
    return _relu(np.einsum("nhwc,nc->nhw", activations, weights))


CamMethod = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: The CAM methods by name (read-only; ``tt.cam(method=...)`` accepts these keys).
#: The last five live in :mod:`tensortap.core.cam_methods` (issue 17).
CAM_METHODS: Mapping[str, CamMethod] = MappingProxyType(
    {
        "gradcam": gradcam,
        "gradcam++": gradcam_plus_plus,
        "layercam": layercam,
        "hirescam": hirescam,
        "xgradcam": xgradcam,
        "gradcam-elementwise": cam_methods.gradcam_elementwise,
        "eigencam": cam_methods.eigencam,
        "eigengradcam": cam_methods.eigengradcam,
        "kpca-cam": cam_methods.kpca_cam,
        "fem": cam_methods.fem,
    }
)


def _method(name: str) -> CamMethod:
    try:
        return CAM_METHODS[name]
    except (KeyError, TypeError):
        raise ViewError(
            f"unknown CAM method {name!r}; choose one of: {', '.join(CAM_METHODS)}"
        ) from None


def cam_maps(
    activations: np.ndarray,
    gradients: np.ndarray | None,
    method: str = "gradcam",
    *,
    eigen_smooth: bool = False,
) -> np.ndarray:
    """Raw maps of one method, before normalisation and resizing.

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)
        Channels last.  Computed in float64 whatever the storage dtype.  ``gradients``
        may be ``None`` for the gradient-free methods (``eigencam``, ``kpca-cam``, ``fem``).
    method : str
        A key of :data:`CAM_METHODS`.
    eigen_smooth : bool
        The first principal component of the method's per-channel terms instead of their
        sum (:func:`tensortap.core.cam_methods.eigen_smooth`).

    Returns
    -------
    ndarray of float64, shape (sample, height, width), non-negative
    """
    function = _method(method)
    a = np.asarray(activations, dtype=np.float64)
    if gradients is None:
        if method not in cam_methods.GRADIENT_FREE_METHODS:
            raise NoGradientsError(f"CAM method {method!r} needs gradients")
        g = np.zeros_like(a)
    else:
        g = np.asarray(gradients, dtype=np.float64)
    if a.shape != g.shape or a.ndim != 4:
        raise ValueError(f"activations {a.shape} and gradients {g.shape} must both be (n, h, w, c)")
    if eigen_smooth:
        return cam_methods.eigen_smooth(method, a, g)
    return function(a, g)


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    r"""Min-max normalise each sample's map to [0, 1].

    .. math:: \hat L = \frac{L - \min L}{\max L - \min L}

    A constant map becomes all ones if positive and stays all zeros if zero (no NaN: a
    sample whose target gets no positive evidence at this layer shows nothing).
    """
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    span = high - low
    flat = np.where(high > 0.0, 1.0, 0.0) * np.ones_like(maps)
    return np.asarray(np.where(span > 0.0, (maps - low) / np.where(span > 0.0, span, 1.0), flat))


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(sample, height, width)`` maps to ``size = (height, width)``.

    Pixel centres are aligned (``align_corners=False``), the convention of OpenCV's
    ``INTER_LINEAR`` and ``torch.nn.functional.interpolate``: output pixel ``i`` samples the
    source at ``(i + 0.5) * in / out - 0.5``, clamped to the edge.
    """
    maps = np.asarray(maps)
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = maps.shape[1], maps.shape[2]
    if (in_h, in_w) == (out_h, out_w):
        return maps.copy()

    def weights(n_in: int, n_out: int) -> np.ndarray:
        """``(n_out, n_in)`` interpolation matrix: two non-zeros a row, summing to 1."""
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        matrix = np.zeros((n_out, n_in))
        rows = np.arange(n_out)
        np.add.at(matrix, (rows, lo), 1 - frac)
        np.add.at(matrix, (rows, hi), frac)
        return matrix

    # Separable: rows then columns as two small matrix products (BLAS), ~20x faster than
    # gathering four neighbours per output pixel.
    along_y = np.matmul(weights(in_h, out_h), maps)
    return np.asarray(np.matmul(along_y, weights(in_w, out_w).T))


def _sample_positions(n_samples: int, sample: int | Sequence[int] | None) -> np.ndarray:
    """Positions (0-based, in committed-sample order) to compute, validated."""
    if sample is None:
        return np.arange(n_samples)
    positions = np.atleast_1d(np.asarray(sample))
    if positions.dtype.kind not in "iu" or positions.ndim != 1:
        raise ViewError(f"sample must be an int or a list of ints, got {sample!r}")
    bad = positions[(positions < -n_samples) | (positions >= n_samples)]
    if bad.size:
        raise ViewError(
            f"sample {int(bad[0])} is out of range: the run has {n_samples} committed samples "
            f"(0..{n_samples - 1}); pass samples in 0..{n_samples - 1} (negative ones count "
            "from the end)"
        )
    return np.where(positions < 0, positions + n_samples, positions)


def input_size(run: Any) -> tuple[int, int] | None:
    """``(height, width)`` of the model's first image-like input, or ``None`` if unknown.

    Looked up by dimension name in the run's attrs (``tensortap.inputs``: name, shape and
    dims of each model input), then in the stored inputs.
    """
    specs = (getattr(run, "attrs", None) or {}).get("inputs") or []
    if isinstance(specs, Mapping):
        specs = [dict(spec, name=name) for name, spec in specs.items()]
    for spec in specs:
        if not isinstance(spec, Mapping):
            continue
        dims, shape = list(spec.get("dims") or ()), list(spec.get("shape") or ())
        if "height" in dims and "width" in dims and len(shape) == len(dims):
            height, width = shape[dims.index("height")], shape[dims.index("width")]
            if height and width:
                return int(height), int(width)
    try:
        stored = run.inputs()
    except Exception:  # no stored inputs either
        return None
    if stored is not None and "height" in stored.dims and "width" in stored.dims:
        return int(stored.sizes["height"]), int(stored.sizes["width"])
    return None


def _spatial(
    array: xr.DataArray, key: str, tokens: Mapping[str, Any] | None = None
) -> xr.DataArray:
    """The array as ``(sample, height, width, channel)``, dims found by name.

    A ``(token, feature)`` layer (a ViT block) is laid out on its patch grid first
    (:func:`tensortap.core.tokens.token_grid`, options in ``tokens``).
    """
    dims = tuple(str(d) for d in array.dims)
    if is_token_layer(dims[1:]):
        return token_grid(array, **dict(tokens or {}))
    if "height" not in dims or "width" not in dims:
        raise ViewError(
            f"layer {key!r} has dims {dims[1:]}: a CAM needs a spatial layer with 'height' "
            f"and 'width' (a convolution or pooling output); choose such a layer, or declare "
            f"this one spatial with capture(..., dims={{{key!r}: ('height', 'width', 'channel')}})"
        )
    if "channel" not in dims:  # a single-channel map stored without a channel axis
        array = array.expand_dims("channel", axis=-1)
    extra = [d for d in array.dims if d not in _MAP_DIMS]
    if extra:
        raise ViewError(f"layer {key!r} has dims {dims[1:]}: cannot compute a 2-D CAM over {extra}")
    return array.transpose(*_MAP_DIMS)


def cam(
    run: Any,
    key: str,
    method: str = "gradcam",
    sample: int | Sequence[int] | None = None,
    *,
    size: tuple[int, int] | None = None,
    upsample: bool = True,
    normalize: bool = True,
    resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray] | None = None,
    class_index: int | None = None,
    target: str | None = None,
    eigen_smooth: bool = False,
    grid: tuple[int, int] | None = None,
    patch_size: int | tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
) -> xr.DataArray:
    """Class activation maps of one layer, computed from a run's stored tensors.

    Parameters
    ----------
    run : tensortap.Run
        A run captured with ``gradients=True``.
    key : str
        Node key of a spatial layer (dims include ``height`` and ``width``).
    method : str
        One of :data:`CAM_METHODS`: ``gradcam``, ``gradcam++``, ``layercam``, ``hirescam``,
        ``xgradcam``, ``gradcam-elementwise``, ``eigengradcam``, and the gradient-free
        ``eigencam``, ``kpca-cam``, ``fem`` (these work on runs without gradients).
    sample : int, sequence of int or None
        Positions among the committed samples (negative counts from the end); ``None``
        computes every sample.
    size : (int, int), optional
        Output ``(height, width)``; defaults to the model input's size.
    upsample : bool
        ``False`` keeps the layer's resolution (for comparisons before interpolation).
    normalize : bool
        Min-max normalise each sample to [0, 1] (after the method's ReLU).  ``False``
        returns the raw maps.
    resize : callable, optional
        ``resize(maps, (height, width))`` replacing the built-in NumPy bilinear resize
        (:func:`resize_bilinear`), e.g. one based on OpenCV in ``viz``.
    class_index : int, optional
        Explain this class: in a run of several targets (``target=["predicted",
        "label"]``, ``"top3"``), each sample's target whose class it is; in a run of one
        target, a check that it is that target's class.
    target : str, optional
        A captured target by name (``"label"``, ``"top2"``; ``run.attrs["targets"]``).
    eigen_smooth : bool
        First principal component of the method's per-channel terms instead of their sum
        (pytorch-grad-cam's option; :func:`tensortap.core.cam_methods.eigen_smooth`).
    grid, patch_size, prefix_tokens
        For a ``(token, feature)`` layer (ViT): its patch grid, or the patch size (the grid
        is then the input size over it), and the number of class/register tokens before the
        patches.  Inferred when omitted (:func:`tensortap.core.tokens.patch_grid`).

    Returns
    -------
    xarray.DataArray, dims ("sample", "y", "x")
        In [0, 1] when ``normalize``; coordinates ``sample`` (the run's sample indices)
        and ``target_class`` (the class each map explains, -1 if unknown); attrs name the
        method, layer, target, its source and score, and flag maps that are zero or
        constant everywhere (``flat_samples``, ``warning``;
        :func:`tensortap.core.cam_info.describe_cam`).

    Raises
    ------
    LayerNotFoundError
        ``key`` is not in the run (raised by the run, with suggestions).
    NoGradientsError
        The run holds no gradients for the layer.
    ViewError
        Unknown method, a layer without spatial dims, or a sample out of range.
    """
    _method(method)
    tokens: dict[str, Any] = {
        "grid": grid,
        "patch_size": patch_size,
        "prefix_tokens": prefix_tokens,
    }
    if patch_size is not None and grid is None:
        tokens["input_size"] = input_size(run)
    activation = _spatial(run.activation(key), key, tokens)  # LayerNotFoundError + suggestions
    gradient: xr.DataArray | None = None
    if method not in cam_methods.GRADIENT_FREE_METHODS:
        has_gradient = getattr(run, "has_gradient", None)
        if has_gradient is not None and not has_gradient(key):
            raise NoGradientsError(
                f"the run holds no gradients for layer {key!r}; capture it again with "
                f"gradients=True (tt.capture(..., gradients=True) or `tensortap capture "
                f"--gradients`), or use a gradient-free method: "
                f"{', '.join(sorted(cam_methods.GRADIENT_FREE_METHODS))}"
            )
        gradient = run.gradient(key)
        if gradient is None:
            raise NoGradientsError(
                f"the run holds no gradients for layer {key!r}; capture it again with "
                f"gradients=True"
            )
    positions = _sample_positions(int(activation.sizes["sample"]), sample)
    choice = choose_targets(run, positions, class_index, target)
    several = gradient is not None and "target" in gradient.dims
    if gradient is not None and not several:
        gradient = _spatial(gradient, key, tokens)

    out_size = size if size is not None else (input_size(run) if upsample else None)
    if upsample and out_size is None:
        raise ViewError(
            f"cannot tell the model input's size for layer {key!r}; pass size=(height, width) "
            f"or upsample=False"
        )
    resize = resize or resize_bilinear

    blocks = []
    facts = []
    for start in range(0, len(positions), _BLOCK):
        chosen = positions[start : start + _BLOCK]
        # Read only the chosen samples; .values loads them (zarr/dask) in one go.
        a = np.asarray(take_samples(activation, chosen).values, dtype=np.float64)
        if gradient is None:  # a gradient-free method (EigenCAM, FEM)
            g = None
        elif several:  # each sample's chosen target, picked point-wise (one read)
            picks = choice[0][start : start + _BLOCK] if choice[0] is not None else 0
            pick = gradient.isel(
                sample=xr.DataArray(chosen, dims="pick"), target=xr.DataArray(picks, dims="pick")
            )
            picked = xr.DataArray(pick.data, dims=("sample", *pick.dims[1:]))
            g = np.asarray(_spatial(picked, key, tokens).values, dtype=np.float64)
        else:
            g = np.asarray(take_samples(gradient, chosen).values, dtype=np.float64)
        maps = cam_maps(a, g, method, eigen_smooth=eigen_smooth)
        facts.append(map_facts(maps, a, g))
        if normalize:
            maps = normalize_maps(maps)
        if upsample and out_size is not None:
            maps = np.asarray(resize(maps, out_size), dtype=np.float64)
            if normalize:  # interpolation stays inside [min, max]; clip float round-off
                maps = np.clip(maps, 0.0, 1.0)
        blocks.append(maps)
    height, width = activation.sizes["height"], activation.sizes["width"]
    out_h, out_w = out_size if (upsample and out_size is not None) else (height, width)
    values = np.concatenate(blocks) if blocks else np.zeros((0, out_h, out_w))

    samples = activation["sample"].values[positions] if "sample" in activation.coords else positions
    described, classes = describe_cam(
        run, key, method, positions, MapFacts.concatenate(facts), choice=choice
    )
    if gradient is None:  # activations alone: the map explains no class
        classes = np.full(len(positions), -1, np.int64)
        described |= {
            "target_source": "none",
            "explains": f"no class: {method} reads the activations alone (gradient-free)",
        }
    return xr.DataArray(
        values.astype(np.float32),
        dims=("sample", "y", "x"),
        coords={
            "sample": samples,
            "y": np.arange(out_h),
            "x": np.arange(out_w),
            "target_class": ("sample", classes, {"long_name": "class the map explains"}),
        },
        name="cam",
        attrs={
            "long_name": f"{method} map of {key}",
            "units": "normalised" if normalize else "",
            **described,
            "layer_size": [int(height), int(width)],
            "eigen_smooth": int(eigen_smooth),
        },
    )
