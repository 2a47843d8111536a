"""Keras models with recurrent layers and bare ``keras.ops`` nodes, each with a reference
that never uses tensortap (issue 13).

Recurrent references are *unrolled*: the layer's own cell is called step by step in Python
(backwards for ``go_backwards``), its outputs stacked in the order the steps ran.  Gradients
come from an explicit ``tf.GradientTape`` in two parts: through the unrolled steps for the
layers before the RNN (the total derivative), and for the RNN's outputs and what follows
them from a tape whose leaves are those outputs — in the traced model the sequence, the
last output and each final state are separate tensors, so the gradient with respect to one
of them does not flow through the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tensortap.core.testing import ModelCase

RNG = np.random.default_rng(13)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype("float32")


def unroll(layer: Any, x: Any) -> tuple[Any, list[Any]]:
    """``layer``'s cell run step by step: (outputs in step order, final states)."""
    cell = layer.cell
    n = x.shape[0]
    states = [tf.zeros((n, size), dtype=x.dtype) for size in tf.nest.flatten(cell.state_size)]
    steps = range(x.shape[1] - 1, -1, -1) if layer.go_backwards else range(x.shape[1])
    outputs = []
    for t in steps:
        out, states = cell(x[:, t], states, training=False)
        states = list(tf.nest.flatten(states))
        outputs.append(out)
    return tf.stack(outputs, axis=1), states


def _leaves(values: Sequence[Any]) -> list[Any]:
    return [tf.constant(np.asarray(v)) for v in values]


def _grads(tape: Any, total: Any, tensors: Sequence[Any]) -> list[np.ndarray]:
    found = tape.gradient(total, list(tensors), unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [np.asarray(g) for g in found]


def _score(scores: Any, classes: np.ndarray) -> Any:
    return tf.reduce_sum(tf.gather(scores, classes, batch_dims=1))


# -- LSTM / GRU / SimpleRNN, return_sequences on and off, go_backwards ----------------------
def recurrent(kind: str, return_sequences: bool, go_backwards: bool) -> Callable[[], Any]:
    def factory() -> tuple[Any, Any, Any]:
        inp = keras.Input((5, 3), name="sequence")
        proj = keras.layers.Dense(4, activation="tanh", name="proj")(inp)
        layer = getattr(keras.layers, kind)(
            4,
            return_sequences=return_sequences,
            return_state=True,
            go_backwards=go_backwards,
            name="rnn",
        )
        out, *states = layer(proj)
        summary = keras.layers.GlobalAveragePooling1D(name="pool")(out) if return_sequences else out
        join = keras.layers.Concatenate(name="join")([summary, *states])
        logits = keras.layers.Dense(3, name="logits")(join)
        name = f"{kind.lower()}_{'seq' if return_sequences else 'last'}"
        name += "_backwards" if go_backwards else ""
        return keras.Model(inp, logits, name=name), _x(3, 5, 3), np.array([2, 1, 0])

    return factory


def _recurrent_head(m: Any, out: Any, states: Sequence[Any]) -> tuple[dict[str, Any], Any]:
    acts: dict[str, Any] = {}
    summary = out
    if m.get_layer("rnn").return_sequences:
        summary = acts["pool"] = m.get_layer("pool")(out)
    join = acts["join"] = m.get_layer("join")([summary, *states])
    return acts, m.get_layer("logits")(join)


def _recurrent_forward(m: Any, x: Any) -> tuple[Any, Any, list[Any]]:
    proj = m.get_layer("proj")(tf.constant(x))
    layer = m.get_layer("rnn")
    seq, states = unroll(layer, proj)
    out = seq if layer.return_sequences else seq[:, -1]
    return proj, out, states


def _state_keys(states: Sequence[Any]) -> list[str]:
    return [f"rnn:{i + 1}" for i in range(len(states))]


def recurrent_reference(m: Any, x: Any) -> dict[str, np.ndarray]:
    proj, out, states = _recurrent_forward(m, x)
    head, _ = _recurrent_head(m, out, states)
    acts = {"proj": proj, "rnn": out, **dict(zip(_state_keys(states), states, strict=True))}
    return {k: np.asarray(v) for k, v in {**acts, **head}.items()}


def recurrent_gradients(m: Any, x: Any, classes: np.ndarray) -> dict[str, np.ndarray]:
    proj, out, states = _recurrent_forward(m, x)
    (leaf,) = _leaves([proj])
    layer = m.get_layer("rnn")
    with tf.GradientTape() as tape:  # through the unrolled steps
        tape.watch(leaf)
        seq, last_states = unroll(layer, leaf)
        _, scores = _recurrent_head(m, seq if layer.return_sequences else seq[:, -1], last_states)
        total = _score(scores, classes)
    result = {"proj": _grads(tape, total, [leaf])[0]}
    outputs = _leaves([out, *states])
    with tf.GradientTape() as tape:  # the RNN's outputs as the separate tensors they are
        for t in outputs:
            tape.watch(t)
        head, scores = _recurrent_head(m, outputs[0], outputs[1:])
        for t in head.values():
            tape.watch(t)
        total = _score(scores, classes)
    keys = ["rnn", *_state_keys(states), *head]
    values = _grads(tape, total, [*outputs, *head.values()])
    return {**result, **dict(zip(keys, values, strict=True))}


# -- Bidirectional(LSTM) ----------------------------------------------------------------
def bidirectional() -> tuple[Any, Any, Any]:
    inp = keras.Input((5, 3), name="sequence")
    proj = keras.layers.Dense(4, activation="tanh", name="proj")(inp)
    lstm = keras.layers.LSTM(3, return_sequences=True, name="enc")
    both = keras.layers.Bidirectional(lstm, name="bi")(proj)
    pool = keras.layers.GlobalAveragePooling1D(name="pool")(both)
    logits = keras.layers.Dense(3, name="logits")(pool)
    return keras.Model(inp, logits, name="bilstm"), _x(3, 5, 3), np.array([0, 2, 1])


BI_FORWARD, BI_BACKWARD = "bi.forward_enc", "bi.backward_enc"


def _bi_head(m: Any, forward: Any, backward: Any) -> tuple[dict[str, Any], Any]:
    # the backward layer's steps ran from the last input to the first: flip them back
    both = tf.concat([forward, tf.reverse(backward, axis=[1])], axis=-1)
    pool = m.get_layer("pool")(both)
    return {"bi": both, "pool": pool}, m.get_layer("logits")(pool)


def _bi_forward(m: Any, x: Any) -> tuple[Any, Any, Any]:
    proj = m.get_layer("proj")(tf.constant(x))
    bi = m.get_layer("bi")
    return proj, unroll(bi.forward_layer, proj)[0], unroll(bi.backward_layer, proj)[0]


def bidirectional_reference(m: Any, x: Any) -> dict[str, np.ndarray]:
    proj, forward, backward = _bi_forward(m, x)
    head, _ = _bi_head(m, forward, backward)
    acts = {"proj": proj, BI_FORWARD: forward, BI_BACKWARD: backward, **head}
    return {k: np.asarray(v) for k, v in acts.items()}


def bidirectional_gradients(m: Any, x: Any, classes: np.ndarray) -> dict[str, np.ndarray]:
    proj, forward, backward = _bi_forward(m, x)
    bi = m.get_layer("bi")
    (leaf,) = _leaves([proj])
    with tf.GradientTape() as tape:
        tape.watch(leaf)
        _, scores = _bi_head(
            m, unroll(bi.forward_layer, leaf)[0], unroll(bi.backward_layer, leaf)[0]
        )
        total = _score(scores, classes)
    result = {"proj": _grads(tape, total, [leaf])[0]}
    parts = _leaves([forward, backward])
    with tf.GradientTape() as tape:
        for t in parts:
            tape.watch(t)
        head, scores = _bi_head(m, *parts)
        for t in head.values():
            tape.watch(t)
        total = _score(scores, classes)
    values = _grads(tape, total, [*parts, *head.values()])
    return {**result, **dict(zip([BI_FORWARD, BI_BACKWARD, *head], values, strict=True))}


# -- TimeDistributed(Conv2D) -> LSTM ------------------------------------------------------
FRAMES = 3


def time_distributed() -> tuple[Any, Any, Any]:
    inp = keras.Input((FRAMES, 6, 6, 2), name="frames")
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv")
    maps = keras.layers.TimeDistributed(conv, name="td_conv")(inp)
    flat = keras.layers.TimeDistributed(keras.layers.Flatten(name="flatten"), name="td_flat")(maps)
    last = keras.layers.LSTM(4, name="rnn")(flat)
    logits = keras.layers.Dense(3, name="logits")(last)
    return keras.Model(inp, logits, name="td_lstm"), _x(2, FRAMES, 6, 6, 2), np.array([1, 0])


def _conv_key(t: int) -> str:
    return "td_conv.conv" + (f"@{t}" if t else "")


def _td_after_conv(m: Any, frames: Sequence[Any]) -> tuple[dict[str, Any], Any]:
    maps = tf.stack(list(frames), axis=1)
    flatten = m.get_layer("td_flat").layer
    flat = tf.stack([flatten(maps[:, t]) for t in range(FRAMES)], axis=1)
    last = unroll(m.get_layer("rnn"), flat)[0][:, -1]
    return {"td_conv": maps, "td_flat": flat, "rnn": last}, m.get_layer("logits")(last)


def _td_frames(m: Any, x: Any) -> list[Any]:
    conv = m.get_layer("td_conv").layer
    return [conv(tf.constant(x[:, t])) for t in range(FRAMES)]


def time_distributed_reference(m: Any, x: Any) -> dict[str, np.ndarray]:
    frames = _td_frames(m, x)
    acts, _ = _td_after_conv(m, frames)
    acts.update({_conv_key(t): f for t, f in enumerate(frames)})
    return {k: np.asarray(v) for k, v in acts.items()}


def time_distributed_gradients(m: Any, x: Any, classes: np.ndarray) -> dict[str, np.ndarray]:
    frames = _leaves(_td_frames(m, x))
    with tf.GradientTape() as tape:
        for t in frames:
            tape.watch(t)
        acts, scores = _td_after_conv(m, frames)
        for t in acts.values():
            tape.watch(t)
        total = _score(scores, classes)
    keys = [*(_conv_key(t) for t in range(FRAMES)), *acts]
    return dict(zip(keys, _grads(tape, total, [*frames, *acts.values()]), strict=True))


# -- bare keras.ops nodes: a ConvNeXt-like block, a class-token slice ---------------------
def _op_names(m: Any, kind: str) -> list[str]:
    """Names of the model's bare ``keras.ops`` nodes of one class, in graph order."""
    return [
        op.name
        for op in m.operations
        if not isinstance(op, keras.layers.Layer) and type(op).__name__ == kind
    ]


def convnext_like() -> tuple[Any, Any, Any]:
    inp = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(8, 2, strides=2, name="stem")(inp)
    for b in range(2):
        r = keras.layers.DepthwiseConv2D(3, padding="same", name=f"b{b}_dw")(h)
        r = keras.layers.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln")(r)
        r = keras.layers.Dense(16, name=f"b{b}_pw1")(r)
        r = keras.layers.Activation("gelu", name=f"b{b}_gelu")(r)
        r = keras.layers.Dense(8, name=f"b{b}_pw2")(r)
        h = h + r * 0.5  # layer scale and residual add: bare keras.ops, no Layer
    pool = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    logits = keras.layers.Dense(3, name="logits")(pool)
    return keras.Model(inp, logits, name="convnext_like"), _x(2, 8, 8, 3), np.array([2, 0])


def _convnext_forward(m: Any, x: Any, watch: Callable[[Any], None]) -> tuple[dict[str, Any], Any]:
    muls, adds = _op_names(m, "Multiply"), _op_names(m, "Add")
    acts: dict[str, Any] = {}

    def keep(key: str, t: Any) -> Any:
        watch(t)
        acts[key] = t
        return t

    h = keep("stem", m.get_layer("stem")(tf.constant(x)))
    for b in range(2):
        r = h
        for part in ("dw", "ln", "pw1", "gelu", "pw2"):
            r = keep(f"b{b}_{part}", m.get_layer(f"b{b}_{part}")(r))
        scaled = keep(muls[b], tf.multiply(r, tf.constant(0.5, tf.float32)))
        h = keep(adds[b], tf.add(h, scaled))
    pool = keep("pool", m.get_layer("pool")(h))
    return acts, m.get_layer("logits")(pool)


def class_token() -> tuple[Any, Any, Any]:
    inp = keras.Input((5, 6), name="tokens")
    h = keras.layers.Dense(8, name="embed")(inp)
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    s = h + a
    logits = keras.layers.Dense(3, name="logits")(s[:, 0])  # the class token: x[:, 0]
    return keras.Model(inp, logits, name="class_token"), _x(3, 5, 6), np.array([0, 1, 2])


def _class_token_forward(
    m: Any, x: Any, watch: Callable[[Any], None]
) -> tuple[dict[str, Any], Any]:
    (add,), (item,) = _op_names(m, "Add"), _op_names(m, "GetItem")
    h = m.get_layer("embed")(tf.constant(x))
    watch(h)
    a = m.get_layer("mha")(h, h)
    watch(a)
    s = tf.add(h, a)
    watch(s)
    token = s[:, 0]
    watch(token)
    return {"embed": h, "mha": a, add: s, item: token}, m.get_layer("logits")(token)


def _ops_case(id: str, factory: Any, forward: Any) -> ModelCase:
    """A case whose references call the layers one by one and write the ops out in TF."""

    def reference(m: Any, x: Any) -> dict[str, np.ndarray]:
        acts, _ = forward(m, x, lambda t: None)
        return {k: np.asarray(v) for k, v in acts.items()}

    def gradients(m: Any, x: Any, classes: np.ndarray) -> dict[str, np.ndarray]:
        with tf.GradientTape() as tape:
            acts, scores = forward(m, x, tape.watch)
            total = _score(scores, classes)
        return dict(zip(acts, _grads(tape, total, list(acts.values())), strict=True))

    return ModelCase(id, factory, reference, gradients)


CASES = (
    *(
        ModelCase(
            f"{kind.lower()}_{'seq' if seq else 'last'}{'_backwards' if back else ''}",
            recurrent(kind, seq, back),
            recurrent_reference,
            recurrent_gradients,
        )
        for kind in ("LSTM", "GRU", "SimpleRNN")
        for seq, back in ((True, False), (False, True), (True, True))
    ),
    ModelCase(
        "bidirectional_lstm", bidirectional, bidirectional_reference, bidirectional_gradients
    ),
    ModelCase(
        "time_distributed_conv_lstm",
        time_distributed,
        time_distributed_reference,
        time_distributed_gradients,
    ),
    _ops_case("convnext_like_ops", convnext_like, _convnext_forward),
    _ops_case("class_token_slice", class_token, _class_token_forward),
)
