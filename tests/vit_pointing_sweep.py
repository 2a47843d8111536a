"""Offline sweep behind docs/explanations.md, "What localises on a ViT": pointing game of
the gradient CAMs on the toy ViT of ``test_cam_tokens.py``, per seed.

Not a test (too slow for the suite): it trains one ViT per seed with the fixture's recipe
and prints hits out of 40 for each method and layer.  The one-block table was made with::

    python tests/vit_pointing_sweep.py --depth 1 --epochs 10 --seeds 0,1,2,3,4,5,6,7,8,9
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import tensortap as tt

sys.path.insert(0, str(Path(__file__).parent))
from test_cam_tokens import GRID, PATCH, Encoder, _pointing_game, _squares  # noqa: E402

METHODS = ("gradcam", "gradcam++", "layercam", "hirescam", "xgradcam", "gradcam-elementwise")


class SweepViT(nn.Module):
    """``TinyViT`` with a choice of head: the class token (torchvision's) or mean-pooled
    patch tokens; the same module order, so a seed gives the same initial weights."""

    def __init__(self, depth: int, classes: int, pool: str, dim: int = 32) -> None:
        super().__init__()
        self.pool = pool
        self.conv_proj = nn.Conv2d(1, dim, kernel_size=PATCH, stride=PATCH)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder(GRID * GRID + 1, dim, depth, heads=4)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, -1, GRID * GRID).permute(0, 2, 1)
        h = self.encoder(torch.cat([self.class_token.expand(n, -1, -1), x], dim=1))
        return self.heads(h[:, 0] if self.pool == "token" else h[:, 1:].mean(1))


def sweep_one(seed: int, args: argparse.Namespace) -> tuple[float, dict[tuple[str, str], int]]:
    """Train with ``seed``; returns the held-out accuracy and hits per (layer, method)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y, _ = _squares(448, rng)
    model = SweepViT(args.depth, args.classes, args.pool)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(args.epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            idx = order[start : start + 64]
            out = model(xt[idx])
            if args.classes == 1:  # one logit, binary cross-entropy
                loss = nn.functional.binary_cross_entropy_with_logits(out[:, 0], yt[idx].float())
            else:
                loss = nn.functional.cross_entropy(out, yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    test_x, test_y, boxes = _squares(200, rng)
    with torch.no_grad():
        out = model(torch.from_numpy(test_x))
    predicted = out.argmax(1) if args.classes > 1 else (out[:, 0] > 0).long()
    held = test_y == 1
    run = tt.capture(
        model,
        (test_x[held][:40], test_y[held][:40]),
        store=Path(tempfile.mkdtemp()) / "sweep.zarr",
        layers=args.layers.split(","),
        gradients=True,
        target="label" if args.classes > 1 else 0,
        progress=False,
    )
    hits = {
        (key, method): round(
            40 * _pointing_game(tt.cam(run, key, method=method).values, boxes[held][:40])
        )
        for key in args.layers.split(",")
        for method in METHODS
    }
    return float((predicted.numpy() == test_y).mean()), hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--classes", type=int, default=2, choices=(1, 2))
    parser.add_argument("--pool", default="token", choices=("token", "mean"))
    parser.add_argument("--layers", default="encoder.layers.0.ln_1")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        accuracy, hits = sweep_one(seed, args)
        print(f"seed {seed}: accuracy {accuracy:.3f}", flush=True)
        for key in args.layers.split(","):
            print(f"  {key}: " + " ".join(f"{m}={hits[(key, m)]}" for m in METHODS), flush=True)


if __name__ == "__main__":
    main()
