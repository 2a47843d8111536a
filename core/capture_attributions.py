"""Input attributions computed by the capture step itself (``tt.capture(attributions=...)``).

Framework-free: what to compute, the seeded noise of SmoothGrad and the Integrated
Gradients path.  The backends do the differentiation in the step that captures the batch
(TensorFlow: the same ``tf.function`` and ``GradientTape``; torch: the same autograd pass),
with the same target as the captured gradients: saliency and gradient x input are the input
gradient of that very pass; SmoothGrad and Integrated Gradients add, in the same step,
batched passes over the noisy copies / path points.  Results are stored in the run as
``/attributions/<method>`` with the input's dims (docs/store-format.md).

SmoothGrad's noise is drawn per sample from ``numpy.random.default_rng([seed, sample])``
(the global sample index): the same sample gets the same noise whatever the batching, on
both backends, and after a resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tensortap.core.attribution import ATTRIBUTION_METHODS, integration_points
from tensortap.core.errors import OptionError, TargetError, TensortapError

__all__ = ["ALIASES", "AttributionSpec", "check_attributions", "parse_attributions"]

#: The parameters ``attribution_options=`` accepts.
OPTIONS = ("n_samples", "sigma", "seed", "steps", "baseline", "rule")

#: Short names accepted for the methods (``--attributions saliency,gxi,sg,ig``).
ALIASES = {
    "grad_x_input": "gradient_x_input",
    "gxi": "gradient_x_input",
    "sg": "smoothgrad",
    "ig": "integrated_gradients",
}


@dataclass(frozen=True)
class AttributionSpec:
    """Which input attributions a capture computes, and their parameters.

    Parameters
    ----------
    methods : tuple of str
        Among :data:`tensortap.core.attribution.ATTRIBUTION_METHODS`, in order.
    n_samples : int
        SmoothGrad's noisy copies.
    sigma : float
        SmoothGrad's noise standard deviation, in the input's units.
    seed : int
        SmoothGrad's noise seed (combined with each sample's global index).
    steps : int
        Integrated Gradients' path points.
    baseline : float
        Integrated Gradients' constant baseline.
    rule : str
        Integrated Gradients' quadrature rule (:func:`integration_points`).
    """

    methods: tuple[str, ...]
    n_samples: int = 16
    sigma: float = 0.15
    seed: int = 0
    steps: int = 32
    baseline: float = 0.0
    rule: str = "gausslegendre"
    _alphas: np.ndarray = field(init=False, repr=False, compare=False)
    _weights: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alphas, weights = integration_points(self.steps, self.rule)
        object.__setattr__(self, "_alphas", alphas)
        object.__setattr__(self, "_weights", weights)
        if self.n_samples < 1:
            raise OptionError(f"attribution n_samples must be >= 1, got {self.n_samples}")
        if not self.sigma > 0:
            raise OptionError(f"attribution sigma must be > 0, got {self.sigma}")

    @property
    def needs_noise(self) -> bool:
        """Whether SmoothGrad is asked for."""
        return "smoothgrad" in self.methods

    @property
    def needs_path(self) -> bool:
        """Whether Integrated Gradients is asked for."""
        return "integrated_gradients" in self.methods

    @property
    def alphas(self) -> np.ndarray:
        """Integrated Gradients' path points in [0, 1]."""
        return self._alphas

    @property
    def weights(self) -> np.ndarray:
        """Integrated Gradients' quadrature weights (summing to 1)."""
        return self._weights

    def noise(self, start: int, x: np.ndarray) -> np.ndarray:
        """SmoothGrad's noise for samples ``start ..`` of batch ``x``: ``(n_samples, *x.shape)``.

        Each sample's draws come from ``default_rng([seed, start + i])``.
        """
        out = np.empty((self.n_samples, *x.shape), dtype=x.dtype)
        for i in range(len(x)):
            rng = np.random.default_rng([self.seed, start + i])
            out[:, i] = rng.normal(0.0, self.sigma, size=(self.n_samples, *x.shape[1:]))
        return out

    def params(self, method: str) -> dict[str, Any]:
        """The parameters of ``method`` (stored in its array's attrs)."""
        if method == "smoothgrad":
            return {"n_samples": self.n_samples, "sigma": self.sigma, "seed": self.seed}
        if method == "integrated_gradients":
            return {"steps": self.steps, "rule": self.rule, "baseline": self.baseline}
        return {}

    def describe(self) -> dict[str, Any]:
        """The root attrs' ``attributions`` entry (compared on resume)."""
        record = asdict(self)
        record["methods"] = list(self.methods)
        return {k: v for k, v in record.items() if not k.startswith("_")}


def parse_attributions(methods: Any, **options: Any) -> AttributionSpec | None:
    """The spec of ``capture(attributions=..., attribution_options=...)``.

    Parameters
    ----------
    methods : None, str (a comma list), sequence of str or AttributionSpec
    **options
        Among :data:`OPTIONS` (see :class:`AttributionSpec`).

    Raises
    ------
    OptionError
        An unknown method or option, naming the known ones.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise OptionError(
            f"unknown attribution option(s) {unknown}; attribution_options takes {', '.join(OPTIONS)}"
        )
    if methods is None or isinstance(methods, AttributionSpec):
        return methods
    n_samples = options.get("n_samples", 16)
    sigma = options.get("sigma", 0.15)
    seed = options.get("seed", 0)
    steps = options.get("steps", 32)
    baseline = options.get("baseline", 0.0)
    rule = options.get("rule", "gausslegendre")
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    chosen: list[str] = []
    for raw in names:
        name = ALIASES.get(str(raw).strip(), str(raw).strip())
        if not name:
            continue
        if name not in ATTRIBUTION_METHODS:
            raise OptionError(
                f"unknown attribution {raw!r}; choose from {', '.join(ATTRIBUTION_METHODS)} "
                f"(or {', '.join(ALIASES)})"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        return None
    rules = (
        "gausslegendre",
        "riemann_left",
        "riemann_right",
        "riemann_middle",
        "riemann_trapezoid",
    )
    if rule not in rules:
        raise OptionError(f"unknown integration rule {rule!r}; choose one of {', '.join(rules)}")
    return AttributionSpec(
        tuple(chosen),
        n_samples=int(n_samples),
        sigma=float(sigma),
        seed=int(seed),
        steps=int(steps),
        baseline=float(baseline),
        rule=rule,
    )


def check_attributions(backend: Any, graph: Any, target: Any) -> None:
    """Refuse, in one line each, what capture-time attributions cannot do."""
    if not getattr(backend, "supports_attributions", False):
        raise TensortapError(
            f"the {backend.name} backend cannot compute attributions at capture; use the "
            "torch or tensorflow backend, or tt.attribute(model, run) after the capture"
        )
    if len(graph.inputs) != 1:
        raise OptionError(
            f"attributions at capture need a model with one input; this one has "
            f"{len(graph.inputs)} ({', '.join(s.name for s in graph.inputs)}); capture "
            "without attributions="
        )
    if callable(target) or (isinstance(target, (list, tuple)) and len(target) != 1):
        raise TargetError(
            f"attributions differentiate one class score per sample; target {target!r} is "
            "not one: use 'predicted', 'label', a class index or one class per sample"
        )
    if isinstance(target, str) and (target.startswith("top") or "," in target):
        raise TargetError(
            f"attributions differentiate one class score per sample; target {target!r} names "
            "several: use 'predicted', 'label' or a class index"
        )
