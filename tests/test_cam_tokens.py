"""Token-grid CAMs (core/tokens.py) on a Vision Transformer written in plain torch.

torchvision cannot import on this machine (its wheel does not match the CPU torch build),
so ``TinyViT`` below follows torchvision's ``VisionTransformer`` module for module:
``conv_proj`` (patch embedding), a prepended ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_i`` blocks with ``ln_1`` / ``self_attention`` / ``ln_2`` /
``mlp``, ``encoder.ln`` and ``heads``.  The token order is torchvision's: class token first,
then the patches row by row.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.core.cam import CAM_METHODS  # noqa: E402
from tensortap.core.tokens import patch_grid, token_grid  # noqa: E402

SIZE, PATCH, SQUARE = 32, 4, 8
GRID = SIZE // PATCH


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, tokens: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.layers = nn.Sequential(
            *[EncoderBlock(dim, heads) for _ in range(depth)],
        )
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(x + self.pos_embedding))


class TinyViT(nn.Module):
    """torchvision's VisionTransformer, small: 32x32 images, 4x4 patches, an 8x8 grid."""

    def __init__(self, channels: int = 1, dim: int = 32, depth: int = 2, classes: int = 2):
        super().__init__()
        self.conv_proj = nn.Conv2d(channels, dim, kernel_size=PATCH, stride=PATCH)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder(GRID * GRID + 1, dim, depth, heads=4)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x)  # (n, dim, gh, gw)
        x = x.reshape(n, x.shape[1], -1).permute(0, 2, 1)  # (n, gh*gw, dim), row-major
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def test_patch_grid_inference() -> None:
    assert patch_grid(197) == (1, (14, 14))  # ViT-B/16 at 224: class token + 14x14
    assert patch_grid(196) == (0, (14, 14))
    assert patch_grid(201, prefix_tokens=5) == (5, (14, 14))  # class + 4 registers
    assert patch_grid(50, input_size=(224, 224), patch_size=32) == (1, (7, 7))
    assert patch_grid(129, grid=(8, 16)) == (1, (8, 16))
    with pytest.raises(tt.ViewError, match="130 tokens does not fit a 8x16"):
        patch_grid(130, grid=(8, 16), prefix_tokens=1)


def test_a_patch_lands_where_it_came_from(tmp_path) -> None:
    torch.manual_seed(0)
    model = TinyViT().eval()
    rng = np.random.default_rng(0)
    base = rng.random((1, 1, SIZE, SIZE)).astype("float32")
    x = np.repeat(base, 2, axis=0)
    row, col = 2, 5  # not symmetric: a transposed grid would put it at (5, 2)
    x[1, :, row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH] += 1.0
    # ln_1 of the first block is per token: only the changed patch's token changes there.
    key = "encoder.layers.0.ln_1"
    run = tt.capture(model, x, store=tmp_path / "vit.zarr", layers=[key], progress=False)
    assert run.activation(key).dims == ("sample", "time", "feature")
    grid = token_grid(run.activation(key))
    assert grid.dims == ("sample", "height", "width", "channel")
    assert grid.shape == (2, GRID, GRID, 32) and grid.attrs["prefix_tokens"] == 1
    change = np.abs(grid.values[1] - grid.values[0]).sum(axis=-1)
    assert np.unravel_index(np.argmax(change), change.shape) == (row, col)
    assert np.count_nonzero(change > 1e-6) == 1
    # EigenCAM of the difference points there too: every view sees a spatial map.
    maps = tt.cam(run, key, method="fem", sample=[1], upsample=False)
    assert maps.shape == (1, GRID, GRID)


def _squares(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.uniform(0.0, 0.3, size=(n, 1, SIZE, SIZE)).astype("float32")
    present = rng.random(n) < 0.5
    boxes = np.zeros((n, 2), dtype=int)
    for i in np.flatnonzero(present):
        top, left = rng.integers(0, SIZE - SQUARE + 1, size=2)
        x[i, :, top : top + SQUARE, left : left + SQUARE] = 1.0
        boxes[i] = top, left
    return x, present.astype("int64"), boxes


@pytest.fixture(scope="module")
def trained_vit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = _squares(448, rng)
    model = TinyViT()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(5):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    test_x, test_y, test_boxes = _squares(200, rng)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean()
    held = test_y == 1
    # The tokens entering the last block (pytorch-grad-cam takes the last block's norm1): the
    # last block's own output reaches the class token only through the head, so its patch
    # tokens get no gradient at all.
    key = "encoder.layers.0"
    run = tt.capture(
        model,
        (test_x[held][:40], test_y[held][:40]),
        store=tmp_path_factory.mktemp("vit") / "trained.zarr",
        layers=[key],
        gradients=True,
        target="label",
        progress=False,
    )
    return {"run": run, "key": key, "boxes": test_boxes[held][:40], "accuracy": accuracy}


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_cam_method_works_on_a_token_layer(trained_vit: dict, method: str) -> None:
    run, key = trained_vit["run"], trained_vit["key"]
    maps = tt.cam(run, key, method=method)
    assert maps.shape == (40, SIZE, SIZE) and maps.attrs["layer_size"] == [GRID, GRID]
    assert np.isfinite(maps.values).all() and 0.0 <= float(maps.min()) <= float(maps.max()) <= 1


# Gradient methods are not asserted here: on this 2-block ViT Grad-CAM's pointing game went
# from 38/40 to 11/40 between 6 and 5 epochs of training — too fragile for a test bar.
@pytest.mark.parametrize("method", ["eigencam", "kpca-cam"])
def test_trained_vit_cam_points_at_the_square(trained_vit: dict, method: str) -> None:
    """Pointing game, 2 px tolerance (15 px at 224, Zhang et al. 2016, scaled to 32)."""
    assert trained_vit["accuracy"] >= 0.95
    maps = tt.cam(trained_vit["run"], trained_vit["key"], method=method).values
    hits = 0
    for m, (top, left) in zip(maps, trained_vit["boxes"], strict=True):
        y, x = np.unravel_index(np.argmax(m), m.shape)
        hits += top - 2 <= y < top + SQUARE + 2 and left - 2 <= x < left + SQUARE + 2
    assert hits / len(maps) >= 0.9, f"{method} on the ViT: {hits}/{len(maps)}"
