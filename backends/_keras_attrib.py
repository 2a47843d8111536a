"""Input attributions inside the TensorFlow capture step (``capture(attributions=...)``).

:func:`input_attributions` is called while the session's ``tf.function`` is traced, after
the layer recorder stopped: saliency and gradient x input come from the input gradient of
the capture's own ``GradientTape`` (the same target as the captured gradients); SmoothGrad
and Integrated Gradients differentiate the same classes over the noisy copies / path points,
one batch per copy in a ``tf.map_fn`` loop of the same compiled step (memory of one batch).
The noise is an input of the step, drawn in NumPy (seeded per sample, as in torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tensortap.core.capture_attributions import AttributionSpec

__all__ = ["input_attributions"]


def input_attributions(
    spec: AttributionSpec,
    scores: Callable[[Any], Any],
    x: Any,
    gradient: Any,
    classes: Any,
    noise: Any = None,
) -> dict[str, Any]:
    """Attribution tensors of ``spec`` for batch ``x`` (traced into the capture step).

    Parameters
    ----------
    scores : callable
        ``rows -> (rows, class)`` scores, the ones the target differentiates.
    gradient : tf.Tensor
        ``d target / d x`` from the capture's tape.
    classes : tf.Tensor
        The class each sample's target differentiated.
    noise : tf.Tensor, optional
        ``(n_samples, *x.shape)`` SmoothGrad noise.
    """

    def input_gradient(rows: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(rows)
            values = tf.gather(scores(rows), classes, batch_dims=1)
            total = tf.reduce_sum(values)
        return tape.gradient(total, rows, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    out: dict[str, Any] = {}
    for method in spec.methods:
        if method == "saliency":
            out[method] = tf.abs(gradient)
        elif method == "gradient_x_input":
            out[method] = x * gradient
        elif method == "smoothgrad":
            grads = tf.map_fn(
                lambda e: tf.abs(input_gradient(x + e)), noise, fn_output_signature=x.dtype
            )
            out[method] = tf.reduce_mean(grads, axis=0)
        else:  # integrated_gradients
            base = tf.fill(tf.shape(x), tf.cast(spec.baseline, x.dtype))
            alphas = tf.constant(spec.alphas, dtype=x.dtype)
            grads = tf.map_fn(
                lambda a, b=base: input_gradient(b + a * (x - b)),
                alphas,
                fn_output_signature=x.dtype,
            )
            weights = tf.constant(spec.weights, dtype=x.dtype)
            out[method] = (x - base) * tf.tensordot(weights, grads, axes=1)
    return {k: tf.cast(v, tf.float32) for k, v in out.items()}
