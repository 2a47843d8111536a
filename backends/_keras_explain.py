"""Model-side operations of explanations for Keras models: input gradients and scores.

Used by :mod:`tensortap.core.attribution` and :mod:`tensortap.core.explain` through the
backend's ``input_gradients`` / ``scores`` methods.  One ``tf.function`` per model with an
unknown batch size, so the noisy copies of SmoothGrad and the path points of Integrated
Gradients of a whole batch run as one compiled step.  Single-input models only.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from tensortap.core.errors import UnsupportedModelError

__all__ = ["ablated_scores", "input_gradients", "scores"]

# model -> {"grad": fn, "score": fn, ("ablate", key): fn}; weak keys: nothing is set on
# the model
_STEPS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _pre_softmax(output: Any) -> Any:
    from tensortap.backends.tensorflow import _scores

    scores, _ = _scores(output)
    return tf.reshape(scores, [tf.shape(scores)[0], -1])


def _input_spec(model: Any) -> tf.TensorSpec:
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"input attributions need a model with one input; {model.name} has {len(inputs)}"
        )
    return tf.TensorSpec((None, *inputs[0].shape[1:]), inputs[0].dtype)


def _steps(model: Any) -> dict[str, Any]:
    steps = _STEPS.get(model)
    if steps is None:
        spec = _input_spec(model)

        def grad(x: Any, classes: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                values = tf.gather(_pre_softmax(model(x, training=False)), classes, batch_dims=1)
                total = tf.reduce_sum(values)  # samples are independent in inference
            return tape.gradient(total, x), values

        def score(x: Any) -> Any:
            return _pre_softmax(model(x, training=False))

        steps = {
            "grad": tf.function(grad, autograph=False).get_concrete_function(
                spec, tf.TensorSpec((None,), tf.int64)
            ),
            "score": tf.function(score, autograph=False).get_concrete_function(spec),
        }
        _STEPS[model] = steps
    return steps


def input_gradients(
    model: Any, x: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``d score[class] / d x`` per sample, and the scores (pre-softmax logits if any)."""
    grads, values = _steps(model)["grad"](
        tf.constant(x, dtype=_input_spec(model).dtype), tf.constant(classes, dtype=tf.int64)
    )
    return np.asarray(grads), np.asarray(values)


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    """The ``(sample, class)`` scores the class targets use (pre-softmax logits if any)."""
    return np.asarray(_steps(model)["score"](tf.constant(x, dtype=_input_spec(model).dtype)))


def _ablation_step(model: Any, key: str) -> Any:
    """A compiled ``(x, mask) -> scores`` with layer ``key``'s output times ``mask``.

    The layer's ``call`` is wrapped only while the step is traced (the capture session's
    technique, ``backends/_keras_trace.py``) and restored in a ``finally``; the traced
    step keeps the multiplication, so every channel reuses one compiled step.
    """
    from tensortap.backends._keras_trace import layer_paths
    from tensortap.backends.tensorflow import TensorFlowBackend

    steps = _steps(model)
    if ("ablate", key) in steps:
        return steps[("ablate", key)]
    node = TensorFlowBackend().graph(model)[key]  # LayerNotFoundError with suggestions
    layer = layer_paths(model)[node.path]
    if "call" in vars(layer):
        raise RuntimeError(f"layer {layer.name!r} is already wrapped (a capture is open?)")
    channels = int(node.shape[-1])  # Keras maps are channels last
    holder: dict[str, Any] = {}
    bound = layer.call

    def masked_call(*args: Any, **kwargs: Any) -> Any:
        output = bound(*args, **kwargs)
        return output * tf.cast(holder["mask"], output.dtype)

    def step(x: Any, mask: Any) -> Any:
        holder["mask"] = mask
        return _pre_softmax(model(x, training=False))

    object.__setattr__(layer, "call", masked_call)
    try:
        concrete = tf.function(step, autograph=False).get_concrete_function(
            _input_spec(model), tf.TensorSpec((channels,), tf.float32)
        )
    finally:
        object.__delattr__(layer, "call")
    steps[("ablate", key)] = (concrete, channels)
    return steps[("ablate", key)]


def ablated_scores(model: Any, key: str, x: np.ndarray, channel: int) -> np.ndarray:
    """Scores with channel ``channel`` of layer ``key``'s output set to zero (AblationCAM)."""
    concrete, channels = _ablation_step(model, key)
    mask = np.ones(channels, dtype=np.float32)
    mask[channel] = 0.0
    return np.asarray(concrete(tf.constant(x, dtype=_input_spec(model).dtype), tf.constant(mask)))
