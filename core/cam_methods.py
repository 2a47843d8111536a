"""More CAM methods from stored tensors: the principal-component family, FEM, element-wise.

Pure NumPy, framework-free, channels last like :mod:`tensortap.core.cam`: every function
maps activations ``A`` (and gradients ``G``, where the method uses them) shaped
``(sample, height, width, channel)`` to raw maps ``(sample, height, width)``.  EigenCAM,
KPCA-CAM and FEM use no gradient: they work on runs captured with ``gradients=False``.

``eigen_smooth`` (pytorch-grad-cam's option) replaces a method's channel sum by the first
principal component of its per-channel contributions (:func:`channel_contributions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = [
    "GRADIENT_FREE_METHODS",
    "channel_contributions",
    "eigen_smooth",
    "eigencam",
    "eigengradcam",
    "fem",
    "gradcam_elementwise",
    "gradcam_pp_weights",
    "kpca_cam",
    "principal_projection",
]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum(x, 0.0))


def _oriented(projection: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Flip each sample's projection so it correlates positively with ``reference``.

    A principal component's sign is arbitrary (``v`` and ``-v`` are both eigenvectors);
    pytorch-grad-cam keeps whatever the SVD returns, so its EigenCAM sometimes highlights
    the background.  Here the sign is the one under which the map agrees with the layer's
    total response at each location (``reference``: the channel sum), a choice that does not
    depend on the solver.
    """
    flat_p = projection.reshape(len(projection), -1)
    flat_r = reference.reshape(len(reference), -1)
    centred = flat_r - flat_r.mean(axis=1, keepdims=True)
    sign = np.where((flat_p * centred).sum(axis=1) < 0.0, -1.0, 1.0)
    return np.asarray(projection * sign[:, None, None])


_CONTROLLER: ThreadpoolController | None = None
_NOT_LOADED: Any = object()
_DSYEVR: Any = _NOT_LOADED


def _dsyevr() -> Any:
    """SciPy's LAPACK ``dsyevr``, or ``None`` without SciPy (imported on first use)."""
    global _DSYEVR
    if _DSYEVR is _NOT_LOADED:
        try:  # SciPy is optional (scikit-learn brings it)
            from scipy.linalg.lapack import dsyevr
        except ImportError:  # pragma: no cover - depends on the environment
            dsyevr = None
        _DSYEVR = dsyevr
    return _DSYEVR


def _one_blas_thread() -> Any:
    """A context with one BLAS thread.  One controller for the process: building one
    reads ``/proc/self/maps`` (~14 ms a call measured here, 3x a CAM's eigenproblems)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _top_eigenpair(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest eigenvalue ``(n,)`` and its eigenvector ``(n, m)`` of a stack of
    symmetric matrices, on one BLAS thread.

    LAPACK's ``dsyevr`` asked for that one eigenpair only (SciPy, when installed: 3x faster
    than the full ``np.linalg.eigh`` on 49x49 matrices, and the same MRRR solver, so equal
    to float noise); else ``np.linalg.eigh``.  OpenBLAS splits even a 49x49 problem over
    its threads; on a busy machine that made a batch of them 30x slower (0.5 vs 16 ms per
    matrix measured on W1), so one thread.
    """
    matrices = np.ascontiguousarray(matrices, dtype=np.float64)
    n, m = matrices.shape[0], matrices.shape[-1]
    solver = _dsyevr()
    with _one_blas_thread():
        if solver is None or m < 2:
            values, vectors = np.linalg.eigh(matrices)
            return values[:, -1], vectors[:, :, -1]
        top = np.empty(n)
        vectors = np.empty((n, m))
        for i in range(n):
            w, z, _, _, info = solver(matrices[i], range="I", il=m, iu=m, overwrite_a=0)
            if info != 0:  # not converged: the full solver
                full_values, full_vectors = np.linalg.eigh(matrices[i])
                top[i], vectors[i] = full_values[-1], full_vectors[:, -1]
            else:
                top[i], vectors[i] = w[0], z[:, 0]
    return top, vectors


def _double_centred(matrices: np.ndarray) -> np.ndarray:
    r""":math:`J M J` for each matrix, :math:`J = I - \tfrac{1}{n}\mathbf{1}\mathbf{1}^\top`:
    :math:`M - \bar M_{\cdot q} - \bar M_{p \cdot} + \bar M`, every mean of ``M`` itself.

    (Adding the mean of the already row- and column-centred matrix, as before, added
    :math:`-\bar M` instead of :math:`+\bar M`: harmless for a positive mean, where the
    error only adds a negative eigenvalue along :math:`\mathbf{1}`, but a negative one made
    the constant vector the top component.)
    """
    rows = matrices.mean(axis=1, keepdims=True)
    columns = matrices.mean(axis=2, keepdims=True)
    return np.asarray(matrices - rows - columns + rows.mean(axis=2, keepdims=True))


def principal_projection(x: np.ndarray) -> np.ndarray:
    r"""Each location's coordinate on the first principal component of its channel vector.

    With :math:`X \in \mathbb{R}^{HW \times C}` one sample's values, centred per channel
    (:math:`\bar X = X - \mathbf{1}\mu^\top`) and :math:`\bar X = U \Sigma V^\top`:

    .. math:: L = \bar X v_1 = \sigma_1 u_1  \quad (\text{reshaped to } H \times W)

    computed from the smaller of the two Gram matrices (``HW x HW`` or ``C x C``), the
    sign oriented by :func:`_oriented`.

    Parameters
    ----------
    x : ndarray, shape (sample, height, width, channel)

    Returns
    -------
    ndarray, shape (sample, height, width)
        Not rectified (the caller applies its ReLU).
    """
    x = np.asarray(x, dtype=np.float64)
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    if h * w <= c:
        # The Gram matrix of the centred rows is the raw one double-centred
        # (X_c = J X with J = I - 11^T/HW, so X_c X_c^T = J X X^T J): one matmul, no copy.
        gram = flat @ flat.transpose(0, 2, 1)
        gram = _double_centred(gram)
        if not np.isfinite(gram).all():  # NaN/inf activations count as 0, not as a crash
            return principal_projection(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
        value, vector = _top_eigenpair(gram)  # eigenvectors of X X^T are the u_i
        projection = vector * np.sqrt(np.maximum(value[:, None], 0.0))
    else:  # eigenvectors of X^T X are the v_i
        centred = np.nan_to_num(flat - flat.mean(axis=1, keepdims=True))
        _, vector = _top_eigenpair(centred.transpose(0, 2, 1) @ centred)
        projection = np.einsum("npc,nc->np", centred, vector)
    return _oriented(projection.reshape(n, h, w), np.nan_to_num(flat.sum(axis=-1)))


def eigencam(activations: np.ndarray, gradients: np.ndarray | None = None) -> np.ndarray:
    r"""EigenCAM: the activations' first principal component, no gradient needed.

    .. math:: L = \mathrm{ReLU}(\bar A\, v_1), \quad \bar A = A - \mathrm{mean}_{ij} A

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020, https://arxiv.org/abs/2008.00299 (centred as in pytorch-grad-cam).

    Parameters
    ----------
    activations : ndarray, shape (sample, height, width, channel)
    gradients : ignored
        Accepted so every method has one signature; may be ``None``.
    """
    return _relu(principal_projection(activations))


def eigengradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""EigenGradCAM: the first principal component of gradients times activations.

    .. math:: L = \mathrm{ReLU}\big(\overline{(G \odot A)}\, v_1\big)

    The class-discriminative variant of EigenCAM in pytorch-grad-cam
    (https://github.com/jacobgil/pytorch-grad-cam, ``EigenGradCAM``); paper as EigenCAM,
    https://arxiv.org/abs/2008.00299.

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)
    """
    return _relu(principal_projection(gradients * activations))


def gradcam_elementwise(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    r"""Grad-CAM element-wise: positive parts of the element-wise products, summed.

    .. math:: L = \mathrm{ReLU}\Big(\sum_c \mathrm{ReLU}(G_{\cdot\cdot c} \odot A_{\cdot\cdot c})\Big)

    Unlike HiResCAM the ReLU is taken per channel before the sum, so negative evidence in
    one channel cannot cancel positive evidence in another (pytorch-grad-cam's
    ``GradCAMElementWise``; Draelos & Carin, https://arxiv.org/abs/2011.08891, for the
    element-wise product).

    Parameters
    ----------
    activations, gradients : ndarray, shape (sample, height, width, channel)
    """
    return _relu(_relu(gradients * activations).sum(axis=-1))


def kpca_cam(
    activations: np.ndarray,
    gradients: np.ndarray | None = None,
    *,
    kernel: str = "sigmoid",
    gamma: float | None = None,
    coef0: float = 1.0,
) -> np.ndarray:
    r"""KPCA-CAM: the first kernel principal component of the locations' channel vectors.

    With :math:`X` one sample's centred ``(HW, C)`` activations, the kernel
    :math:`K_{pq} = k(x_p, x_q)` (sigmoid :math:`\tanh(\gamma x_p^\top x_q + c_0)` or RBF
    :math:`\exp(-\gamma \lVert x_p - x_q\rVert^2)`, :math:`\gamma = 1/C` by default), its
    double-centred form :math:`\tilde K = H K H` (:math:`H = I - \tfrac{1}{HW}\mathbf{1}\mathbf{1}^\top`)
    and top eigenpair :math:`(\lambda_1, \alpha_1)`:

    .. math:: L = \mathrm{ReLU}\big(\sqrt{\lambda_1}\, \alpha_1\big)

    Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using
    Kernel PCA", MMSP 2024, https://arxiv.org/abs/2410.00267 (the kernel and default
    ``gamma`` of scikit-learn's ``KernelPCA``, as in pytorch-grad-cam's ``KPCA_CAM``).
    Cost is one ``HW x HW`` eigenproblem per sample: fine for CAM layers (7x7 to 28x28).

    Parameters
    ----------
    activations : ndarray, shape (sample, height, width, channel)
    gradients : ignored
    kernel : {"sigmoid", "rbf"}
    gamma : float, optional
    coef0 : float
        The sigmoid kernel's offset.
    """
    a = np.asarray(activations, dtype=np.float64)
    n, h, w, c = a.shape
    flat = a.reshape(n, h * w, c)
    g = 1.0 / c if gamma is None else float(gamma)
    # Dot products of the centred rows from the raw Gram matrix, double-centred
    # (X_c X_c^T = J X X^T J): no centred copy of the activations.
    dots = flat @ flat.transpose(0, 2, 1)
    dots = _double_centred(dots)
    if not np.isfinite(dots).all():  # NaN/inf activations count as 0, not as a crash
        clean = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        return kpca_cam(clean, kernel=kernel, gamma=gamma, coef0=coef0)
    if kernel == "sigmoid":
        k = np.tanh(g * dots + coef0)
    elif kernel == "rbf":
        sq = np.diagonal(dots, axis1=1, axis2=2)  # |x_p - mean|^2
        k = np.exp(-g * np.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * dots, 0.0))
    else:
        raise ValueError(f"unknown KPCA kernel {kernel!r}; choose 'sigmoid' or 'rbf'")
    k = _double_centred(k)
    value, vector = _top_eigenpair(k)
    projection = vector * np.sqrt(np.maximum(value[:, None], 0.0))
    return _relu(_oriented(projection.reshape(n, h, w), flat.sum(axis=-1)))


def fem(
    activations: np.ndarray, gradients: np.ndarray | None = None, *, k: float = 2.0
) -> np.ndarray:
    r"""FEM (Feature Explanation Method): k-sigma masks weighted by the channel means.

    .. math::

        \mu_c = \mathrm{mean}_{ij} A_{ijc}, \quad \sigma_c = \mathrm{std}_{ij} A_{ijc}, \quad
        M_{ijc} = [A_{ijc} \ge \mu_c + k \sigma_c], \quad
        L = \sum_c \mu_c\, M_{\cdot\cdot c}

    Gradient-free and class-agnostic.  Fuad et al., "Features understanding in 3D CNNs for
    actions recognition in video", IPTA 2020, https://doi.org/10.1109/IPTA50016.2020.9286629

    Parameters
    ----------
    activations : ndarray, shape (sample, height, width, channel)
    gradients : ignored
    k : float
        Threshold in standard deviations above the channel mean.
    """
    return _relu(_fem_contributions(np.asarray(activations, dtype=np.float64), k).sum(axis=-1))


def _fem_contributions(a: np.ndarray, k: float = 2.0) -> np.ndarray:
    mean = a.mean(axis=(1, 2), keepdims=True)
    std = a.std(axis=(1, 2), keepdims=True)
    return np.asarray(np.where(a >= mean + k * std, mean, 0.0) * np.ones_like(a))


def _channel_weighted(a: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.asarray(a * weights[:, None, None, :])


def gradcam_pp_weights(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    r"""Grad-CAM++'s channel weights :math:`w_c = \sum_{ij} \alpha_{ijc} \mathrm{ReLU}(G_{ijc})`.

    :math:`\alpha = G^2 / (2G^2 + S_c G^3)` is :math:`1 / (2 + S_c G)` where :math:`G \ne 0`,
    and only :math:`G > 0` survives the ReLU, so :math:`w_c = \sum_{G>0} G / (2 + S_c G)`
    (0 where the denominator is 0, as in the paper's convention): three passes over the
    gradients instead of a dozen temporaries.
    """
    spatial_sum = a.sum(axis=(1, 2), keepdims=True)  # S_c = sum_ab A_abc
    positive = np.maximum(g, 0.0)
    denominator = spatial_sum * positive
    denominator += 2.0
    # G <= 0 has positive == 0 (the term is 0 whatever the denominator); a zero denominator
    # (S_c G = -2) has alpha = 0 by convention
    denominator[denominator == 0.0] = np.inf
    np.divide(positive, denominator, out=positive)
    return np.asarray(positive.sum(axis=(1, 2)))


def _xgradcam_weights(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    total = a.sum(axis=(1, 2))
    safe = np.where(total != 0.0, total, 1.0)
    return np.asarray(np.where(total != 0.0, (a * g).sum(axis=(1, 2)) / safe, 0.0))


Contributions = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Per-channel terms whose channel sum is each method's map (before its final ReLU).
_CONTRIBUTIONS: Mapping[str, Contributions] = MappingProxyType(
    {
        "gradcam": lambda a, g: _channel_weighted(a, g.mean(axis=(1, 2))),
        "gradcam++": lambda a, g: _channel_weighted(a, gradcam_pp_weights(a, g)),
        "xgradcam": lambda a, g: _channel_weighted(a, _xgradcam_weights(a, g)),
        "layercam": lambda a, g: _relu(g) * a,
        "hirescam": lambda a, g: g * a,
        "gradcam-elementwise": lambda a, g: _relu(g * a),
        "fem": lambda a, g: _fem_contributions(a),
    }
)

#: Methods that read only activations (runs without gradients can use them).
GRADIENT_FREE_METHODS = frozenset({"eigencam", "kpca-cam", "fem"})
#: Methods that already are a principal component: eigen_smooth leaves them unchanged.
_ALREADY_PRINCIPAL = frozenset({"eigencam", "eigengradcam", "kpca-cam"})


def channel_contributions(
    method: str, activations: np.ndarray, gradients: np.ndarray
) -> np.ndarray:
    """The ``(sample, height, width, channel)`` terms that ``method`` sums over channels.

    Raises
    ------
    ValueError
        ``method`` has no per-channel form (the principal-component methods).
    """
    if method not in _CONTRIBUTIONS:
        raise ValueError(
            f"method {method!r} has no per-channel contributions; eigen_smooth applies to: "
            f"{', '.join(_CONTRIBUTIONS)}"
        )
    return _CONTRIBUTIONS[method](activations, gradients)


def eigen_smooth(method: str, activations: np.ndarray, gradients: np.ndarray | None) -> np.ndarray:
    r"""A method's map with pytorch-grad-cam's ``eigen_smooth``: the first principal
    component of its per-channel contributions instead of their sum.

    .. math:: L = \mathrm{ReLU}\big(\bar T\, v_1\big), \quad T_{ijc} = \text{contribution of channel } c

    (for Grad-CAM :math:`T = w_c A_{ijc}`).  It removes noise spread over many channels
    (https://github.com/jacobgil/pytorch-grad-cam, "Smoothing to get nice looking CAMs").
    The principal-component methods are returned unchanged.

    Parameters
    ----------
    method : str
        A CAM method name.
    activations, gradients : ndarray, shape (sample, height, width, channel)
        ``gradients`` may be ``None`` for gradient-free methods.
    """
    a = np.asarray(activations, dtype=np.float64)
    g = np.zeros_like(a) if gradients is None else np.asarray(gradients, dtype=np.float64)
    if method in _ALREADY_PRINCIPAL:
        return {"eigencam": eigencam, "eigengradcam": eigengradcam, "kpca-cam": kpca_cam}[method](
            a, g
        )
    return _relu(principal_projection(channel_contributions(method, a, g)))
