"""Tiny Keras models for the TensorFlow conformance tests, each with an independent reference.

References never use tensortap: activations come from calling the layers one by one (or a
flat ``keras.Model(inputs, layer.output)`` sub-model where the graph allows it); gradients
come from an explicit ``tf.GradientTape`` watching each intermediate tensor of that manual
forward pass.  The score is the pre-softmax logit when the model ends in a softmax, as the
backend documents (``session.info["score"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tensortap.core.testing import ModelCase

RNG = np.random.default_rng(0)
BASE = "mobilenetv2_0.35_32"  # keras.applications names the base after alpha and size


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype("float32")


def _pre_softmax(layer: Any, h: Any) -> Any:
    """A softmax Dense layer's logits, written out (Dense.call: matmul, then bias)."""
    return tf.add(tf.matmul(h, layer.kernel), layer.bias)


Forward = Callable[[Any, Any, Callable[[Any], None]], tuple[dict[str, Any], Any]]


def _case(
    id: str, factory: Any, forward: Forward, activations: Any = None, *, in_graph: bool = False
) -> ModelCase:
    """A case whose references come from ``forward(model, inputs, watch) -> (acts, scores)``.

    ``in_graph`` runs the gradient reference inside ``tf.function``: a partial derivative
    with respect to an intermediate tensor depends on the graph's structure, and Keras
    RNNs build eager and graph outputs differently (eagerly the last state *is* the last
    step of the sequence; in a graph they are two outputs of the while loop).
    """

    def reference(model: Any, inputs: Any) -> dict[str, np.ndarray]:
        if activations is not None:
            return activations(model, inputs)
        acts, _ = forward(model, inputs, lambda t: None)
        return {k: np.asarray(v) for k, v in acts.items()}

    def gradient_reference(model: Any, inputs: Any, classes: np.ndarray) -> dict[str, np.ndarray]:
        def grads() -> dict[str, Any]:
            with tf.GradientTape() as tape:
                acts, scores = forward(model, inputs, tape.watch)
                total = tf.reduce_sum(tf.gather(scores, classes, batch_dims=1))
            values = tape.gradient(
                total, list(acts.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            return dict(zip(acts, values, strict=True))

        found = tf.function(grads, autograph=False)() if in_graph else grads()
        return {k: np.asarray(g) for k, g in found.items()}

    return ModelCase(id, factory, reference, gradient_reference)


def _chain(
    layers: list[Any], x: Any, watch: Callable[[Any], None], keys: list[str]
) -> tuple[dict[str, Any], Any]:
    """Run layers one by one; the last one's logits are the score."""
    acts: dict[str, Any] = {}
    h = tf.constant(x)
    for layer, key in zip(layers[:-1], keys, strict=False):
        h = layer(h, training=False)
        watch(h)
        acts[key] = h
    last = layers[-1]
    logits = _pre_softmax(last, h) if last.activation is keras.activations.softmax else last(h)
    return acts, logits


def _flat(
    model: Any, keys_to_layers: dict[str, str]
) -> Callable[[Any, Any], dict[str, np.ndarray]]:
    def activations(m: Any, inputs: Any) -> dict[str, np.ndarray]:
        sub = keras.Model(m.inputs, [m.get_layer(name).output for name in keys_to_layers.values()])
        values = sub(inputs, training=False)
        values = values if isinstance(values, list) else [values]
        return {k: np.asarray(v) for k, v in zip(keys_to_layers, values, strict=True)}

    return activations


# -- 1, 2: Sequential with and without Input -------------------------------------------
def sequential_input() -> tuple[Any, Any, Any]:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(5, activation="softmax", name="probs"),
        ],
        name="seq_input",
    )
    return model, _x(4, 8, 8, 3), np.array([0, 1, 2, 3])


def sequential_no_input() -> tuple[Any, Any, Any]:
    model = keras.Sequential(
        [
            keras.layers.Dense(6, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ],
        name="seq_called",
    )
    x = _x(3, 5)
    model(x[:1])  # built by a call, no Input
    return model, x, np.array([2, 0, 1])


def _seq_forward(model: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    layers = list(model.layers)
    acts, logits = _chain(layers, x, watch, [layer.name for layer in layers[:-1]])
    return acts, logits


# -- 3: Functional with a skip connection ---------------------------------------------
def functional() -> tuple[Any, Any, Any]:
    inp = keras.Input((6,), name="features")
    a = keras.layers.Dense(8, activation="relu", name="a")(inp)
    b = keras.layers.Dense(8, activation="tanh", name="b")(a)
    s = keras.layers.Add(name="skip")([a, b])
    out = keras.layers.Dense(3, name="logits")(s)
    return keras.Model(inp, out, name="functional"), _x(4, 6), np.array([0, 1, 2, 0])


def _functional_forward(m: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    a = m.get_layer("a")(tf.constant(x))
    watch(a)
    b = m.get_layer("b")(a)
    watch(b)
    s = m.get_layer("skip")([a, b])
    watch(s)
    return {"a": a, "b": b, "skip": s}, m.get_layer("logits")(s)


# -- 4, 5: a keras.applications base nested in Sequential and in Functional ------------
def _base() -> Any:
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False, alpha=0.35
    )


def nested_sequential() -> tuple[Any, Any, Any]:
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            _base(),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="probs"),
        ],
        name="nested_seq",
    )
    return model, _x(2, 32, 32, 3), np.array([1, 2])


def nested_functional() -> tuple[Any, Any, Any]:
    inp = keras.Input((32, 32, 3), name="image")
    h = keras.layers.Rescaling(0.5, name="scale")(inp)
    h = _base()(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(4, name="logits")(h)
    return keras.Model(inp, out, name="nested_fn"), _x(2, 32, 32, 3), np.array([3, 0])


def _nested_forward(m: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    base = m.get_layer(BASE)
    h = tf.constant(x)
    if "scale" in [layer.name for layer in m.layers]:
        h = m.get_layer("scale")(h)
    # inside the base: a flat sub-model up to block_1_expand, then a head from there on
    expand = base.get_layer("block_1_expand")
    e = keras.Model(base.inputs, expand.output)(h, training=False)
    watch(e)
    out = keras.Model(expand.output, base.output)(e, training=False)
    watch(out)
    g = m.get_layer("gap")(out)
    watch(g)
    last = m.layers[-1]
    logits = _pre_softmax(last, g) if last.activation is keras.activations.softmax else last(g)
    return {f"{BASE}.block_1_expand": e, BASE: out, "gap": g}, logits


# -- 6: subclassed, with a residual block (a custom Layer owning layers) ---------------
class Residual(keras.layers.Layer):
    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(
            channels, 3, padding="same", activation="relu", name="conv1"
        )
        self.conv2 = keras.layers.Conv2D(channels, 3, padding="same", name="conv2")
        self.add = keras.layers.Add(name="add")
        self.relu = keras.layers.ReLU(name="relu")

    def call(self, x: Any) -> Any:
        return self.relu(self.add([x, self.conv2(self.conv1(x))]))


class SmallResNet(keras.Model):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")
        self.block = Residual(4, name="block")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x: Any) -> Any:
        return self.head(self.pool(self.block(self.stem(x))))


def subclassed() -> tuple[Any, Any, Any]:
    model = SmallResNet(name="resnet")
    x = _x(3, 6, 6, 2)
    model(x[:1])
    return model, x, np.array([0, 1, 2])


def _subclassed_forward(m: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    acts: dict[str, Any] = {}

    def keep(key: str, t: Any) -> Any:
        watch(t)
        acts[key] = t
        return t

    h = keep("stem", m.stem(tf.constant(x)))
    c1 = keep("block.conv1", m.block.conv1(h))
    c2 = keep("block.conv2", m.block.conv2(c1))
    added = keep("block.add", m.block.add([h, c2]))
    out = keep("block.relu", m.block.relu(added))
    acts["block"] = out  # the block's output is its relu's output
    p = keep("pool", m.pool(out))
    return acts, m.head(p)


# -- 7: multi-input, 8: multi-output ---------------------------------------------------
def multi_input() -> tuple[Any, Any, Any]:
    image = keras.Input((6, 6, 1), name="image")
    meta = keras.Input((3,), name="meta")
    c = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(image)
    f = keras.layers.Flatten(name="flat")(c)
    m = keras.layers.Dense(4, activation="relu", name="meta_dense")(meta)
    j = keras.layers.Concatenate(name="join")([f, m])
    out = keras.layers.Dense(3, activation="softmax", name="probs")(j)
    model = keras.Model({"image": image, "meta": meta}, out, name="multi_in")
    return model, {"image": _x(3, 6, 6, 1), "meta": _x(3, 3)}, np.array([0, 2, 1])


def _multi_input_forward(
    m: Any, x: Any, watch: Callable[[Any], None]
) -> tuple[dict[str, Any], Any]:
    conv = m.get_layer("conv")(tf.constant(x["image"]))
    watch(conv)
    flat = m.get_layer("flat")(conv)
    watch(flat)
    meta = m.get_layer("meta_dense")(tf.constant(x["meta"]))
    watch(meta)
    join = m.get_layer("join")([flat, meta])
    watch(join)
    acts = {"conv": conv, "flat": flat, "meta_dense": meta, "join": join}
    return acts, _pre_softmax(m.get_layer("probs"), join)


def multi_output() -> tuple[Any, Any, Any]:
    inp = keras.Input((5,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="trunk")(inp)
    cls = keras.layers.Dense(3, name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model(inp, [cls, reg], name="multi_out"), _x(4, 5), np.array([0, 1, 2, 1])


def _multi_output_forward(
    m: Any, x: Any, watch: Callable[[Any], None]
) -> tuple[dict[str, Any], Any]:
    h = m.get_layer("trunk")(tf.constant(x))
    watch(h)
    reg = m.get_layer("reg")(h)
    watch(reg)  # the second output does not feed the target: its gradient is zero
    return {"trunk": h, "reg": reg}, m.get_layer("cls")(h)


# -- 9: a shared layer called twice, 10: a layer with several outputs ------------------
def shared() -> tuple[Any, Any, Any]:
    inp = keras.Input((6,), name="x")
    layer = keras.layers.Dense(6, activation="tanh", name="shared")
    out = keras.layers.Dense(2, name="logits")(layer(layer(inp)))
    return keras.Model(inp, out, name="shared_model"), _x(3, 6), np.array([0, 1, 1])


def _shared_forward(m: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    layer = m.get_layer("shared")
    first = layer(tf.constant(x))
    watch(first)
    second = layer(first)
    watch(second)
    return {"shared": first, "shared@1": second}, m.get_layer("logits")(second)


def recurrent_states() -> tuple[Any, Any, Any]:
    inp = keras.Input((5, 3), name="sequence")
    # return_sequences keeps the output apart from the last state: without it Keras returns
    # one tensor twice in eager mode but two tensors in a graph, and their gradients differ
    seq, h, c = keras.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(inp)
    pooled = keras.layers.GlobalAveragePooling1D(name="seq_pool")(seq)
    j = keras.layers.Concatenate(name="join")([pooled, h, c])
    logits = keras.layers.Dense(3, name="logits")(j)
    return keras.Model(inp, logits, name="lstm_states"), _x(3, 5, 3), np.array([2, 1, 0])


def _recurrent_forward(m: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    seq, h, c = m.get_layer("lstm")(tf.constant(x))
    for t in (seq, h, c):
        watch(t)
    pooled = m.get_layer("seq_pool")(seq)
    watch(pooled)
    j = m.get_layer("join")([pooled, h, c])
    watch(j)
    acts = {"lstm": seq, "lstm:1": h, "lstm:2": c, "seq_pool": pooled, "join": j}
    return acts, m.get_layer("logits")(j)


CASES = (
    _case("sequential_input", sequential_input, _seq_forward),
    _case("sequential_no_input", sequential_no_input, _seq_forward),
    _case(
        "functional",
        functional,
        _functional_forward,
        _flat(None, {"a": "a", "b": "b", "skip": "skip"}),
    ),
    _case("nested_sequential", nested_sequential, _nested_forward),
    _case("nested_functional", nested_functional, _nested_forward),
    _case("subclassed", subclassed, _subclassed_forward),
    _case(
        "multi_input",
        multi_input,
        _multi_input_forward,
        _flat(None, {"conv": "conv", "meta_dense": "meta_dense", "join": "join"}),
    ),
    _case("multi_output", multi_output, _multi_output_forward),
    _case("shared_layer", shared, _shared_forward),
    _case("multi_output_layer", recurrent_states, _recurrent_forward, in_graph=True),
)
