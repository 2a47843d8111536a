"""Token-grid CAMs on a keras_hub ``ViTBackbone`` built from constructor arguments (no
weights are downloaded): shape, orientation, and every CAM method on a token layer."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub")

import tensortap as tt  # noqa: E402
from tensortap.core.cam import CAM_METHODS  # noqa: E402
from tensortap.core.tokens import token_grid  # noqa: E402

SIZE, PATCH = 32, 4
GRID = SIZE // PATCH


@pytest.fixture(scope="module")
def classifier() -> object:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 1), patch_size=PATCH, num_layers=2, num_heads=2,
        hidden_dim=16, mlp_dim=32,
    )  # fmt: skip
    inputs = keras.Input((SIZE, SIZE, 1))
    tokens = backbone(inputs)
    logits = keras.layers.Dense(2, name="logits")(tokens[:, 0])  # the class token
    return keras.Model(inputs, logits)


def test_a_patch_lands_where_it_came_from(classifier: object, tmp_path) -> None:
    x = np.repeat(np.random.default_rng(0).random((1, SIZE, SIZE, 1)), 2, axis=0).astype("float32")
    row, col = 1, 6
    x[1, row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH] += 1.0
    graph = tt.graph(classifier)
    key = next(k for k in graph.keys if k.endswith("transformer_block_1.ln_1"))
    run = tt.capture(classifier, x, store=tmp_path / "vit.zarr", layers=[key], progress=False)
    grid = token_grid(run.activation(key))
    assert grid.shape == (2, GRID, GRID, 16) and grid.attrs["prefix_tokens"] == 1
    change = np.abs(grid.values[1] - grid.values[0]).sum(axis=-1)
    assert np.unravel_index(np.argmax(change), change.shape) == (row, col)
    assert np.count_nonzero(change > 1e-6) == 1


def test_every_cam_method_on_a_keras_hub_token_layer(classifier: object, tmp_path) -> None:
    x = np.random.default_rng(1).random((4, SIZE, SIZE, 1)).astype("float32")
    key = next(k for k in tt.graph(classifier).keys if k.endswith("transformer_block_2.ln_1"))
    run = tt.capture(
        classifier, x, store=tmp_path / "vit.zarr", layers=[key], gradients=True, progress=False
    )
    assert float(np.abs(run.gradient(key).values).max()) > 0
    for method in CAM_METHODS:
        maps = tt.cam(run, key, method=method, patch_size=PATCH)
        assert maps.shape == (4, SIZE, SIZE) and maps.attrs["layer_size"] == [GRID, GRID]
        assert np.isfinite(maps.values).all()
