"""Several compute batches per session call (issue 12, small layers).

The engine hands a session that asks for it (``batches_per_call``) groups of consecutive
batches; groups never cross a block boundary, and the values are those of a batch-by-batch
capture: activations equal a Keras sub-model's outputs, gradients an explicit GradientTape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tensortap.core.batch_groups import BatchGroups
from tensortap.core.data import Batch


def _batches(sizes: list[int], starts: list[int]) -> list[tuple[int, Batch]]:
    return [
        (start, Batch({"x": np.arange(start, start + n, dtype=np.float32)}, None))
        for start, n in zip(starts, sizes, strict=True)
    ]


def _all_groups(groups: BatchGroups, limit: int, block: int, batch: int) -> list[tuple[int, int]]:
    found = []
    while group := groups.next_group(lambda s: min(limit, (block - s % block) // batch)):
        start, joined = group
        np.testing.assert_array_equal(joined.inputs["x"], np.arange(start, start + len(joined)))
        found.append((start, len(joined)))
    return found


def test_groups_stop_at_blocks_gaps_and_the_short_last_batch() -> None:
    # blocks of 12 samples, batches of 4: a gap after sample 8 (block 1 committed) and a
    # short last batch of 2
    items = _batches([4, 4, 4, 4, 4, 4, 4, 2], [0, 4, 8, 24, 28, 32, 36, 40])
    found = _all_groups(BatchGroups(iter(items), 4), limit=8, block=12, batch=4)
    assert found == [(0, 12), (24, 12), (36, 4), (40, 2)]


def test_group_limit_is_respected() -> None:
    items = _batches([4] * 6, list(range(0, 24, 4)))
    assert _all_groups(BatchGroups(iter(items), 4), limit=2, block=24, batch=4) == [
        (0, 8),
        (8, 8),
        (16, 8),
    ]


tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


def _mlp() -> object:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="dense_0")(inputs)
    h = keras.layers.Dense(8, activation="relu", name="dense_1")(h)
    outputs = keras.layers.Dense(4, activation="softmax", name="probs")(h)
    return keras.Model(inputs, outputs, name="small_mlp")


def test_grouped_capture_matches_submodels_and_gradient_tape(tmp_path: Path) -> None:
    import tensortap as tt
    from tensortap.backends.tensorflow import TensorFlowBackend

    model = _mlp()
    x = np.random.default_rng(1).standard_normal((1000, 10)).astype(np.float32)
    backend = TensorFlowBackend()
    nodes = backend.graph(model).select("*")
    with backend.session(model, nodes, gradients=True) as session:
        assert session.batches_per_call(32) > 1  # the grouped path is the one tested
    # blocks of 256 samples (8 batches), 1000 samples: a short last batch of 8
    run = tt.capture(
        model, x, store=tmp_path / "r.zarr", gradients=True, block_size=256, progress=False
    )
    assert run.samples == 1000 and run.block_size == 256
    layers = ["dense_0", "dense_1", "probs"]
    for name in layers:
        sub = keras.Model(model.inputs, model.get_layer(name).output)
        expected = np.concatenate([np.asarray(sub([x[i : i + 32]])) for i in range(0, 1000, 32)])
        np.testing.assert_array_equal(run.activation(name).values, expected, err_msg=name)
    # the reference: the predicted class's logit, differentiated batch by batch
    dense = [model.get_layer(name) for name in layers]
    for i in range(0, 1000, 32):
        with tf.GradientTape() as tape:
            h, acts = tf.constant(x[i : i + 32]), []
            for layer in dense[:-1]:
                h = layer(h)
                tape.watch(h)
                acts.append(h)
            logits = tf.matmul(h, dense[-1].kernel) + dense[-1].bias
            tape.watch(logits)
            total = tf.reduce_sum(tf.reduce_max(logits, axis=1))
        grads = tape.gradient(total, [*acts, logits])
        for name, grad in zip(layers[:-1], grads, strict=False):
            np.testing.assert_allclose(
                run.gradient(name).values[i : i + 32], grad, rtol=1e-5, atol=1e-7, err_msg=name
            )
        # the score is the logit before the softmax: the probabilities are off its path
        np.testing.assert_array_equal(run.gradient("probs").values[i : i + 32], 0.0)
    np.testing.assert_array_equal(
        run.tree["prediction"].values,
        np.argmax(keras.Model(model.inputs, model.output).predict(x, verbose=0), axis=1),
    )


def test_run_batches_refuses_partial_batches() -> None:
    from tensortap.backends.tensorflow import TensorFlowBackend

    model = _mlp()
    backend = TensorFlowBackend()
    with backend.session(model, backend.graph(model).select("*")) as session:
        with pytest.raises(ValueError, match="not whole batches of 32"):
            session.run_batches({"x": np.zeros((40, 10), np.float32)}, 32)
