"""Small PyTorch models covering every shape the torch backend must capture, each with an
independent reference that calls the submodules one by one.

A reference returns ``(activations, output)``: every capture key mapped to its tensor, and
the model output computed *from those tensors*, so ``torch.autograd.grad`` of a score of
the output with respect to them is the reference gradient.  In-place modules
(``ReLU(inplace=True)``) get a clone, so a reference tensor keeps its value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

Reference = Callable[..., tuple[dict[str, torch.Tensor], Any]]


@dataclass(frozen=True)
class TorchCase:
    """One model fixture: how to build it, an example batch, and its reference."""

    name: str
    build: Callable[[], nn.Module]
    example: Callable[[], Any]
    reference: Reference
    keys: tuple[str, ...] | None = None  # the exact capture keys, where spelled out
    score_key: str | None = None  # where the scores are, when not the first output


def _images(n: int = 4, channels: int = 3, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, channels, size, size)).astype(np.float32)


def _vectors(n: int = 4, width: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


def _seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        model = build()
        # Non-trivial BatchNorm statistics, so eval mode visibly differs from train mode.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        return model

    return make


# -- nn.Sequential ------------------------------------------------------------------------
def sequential() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
        nn.Softmax(dim=1),
    )


def sequential_reference(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    acts: dict[str, torch.Tensor] = {}
    h = x
    for index, module in enumerate(model):
        h = module(h.clone() if getattr(module, "inplace", False) else h)
        acts[str(index)] = h
    return acts, h


# -- nested modules -----------------------------------------------------------------------
class ConvUnit(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvUnit(3, 4), nn.Sequential(ConvUnit(4, 4), nn.AvgPool2d(2))
        )
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def nested_reference(model: Nested, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    a: dict[str, torch.Tensor] = {}
    f = model.features
    a["features.0.conv"] = f[0].conv(x)
    a["features.0.act"] = a["features.0"] = f[0].act(a["features.0.conv"])
    a["features.1.0.conv"] = f[1][0].conv(a["features.0"])
    a["features.1.0.act"] = a["features.1.0"] = f[1][0].act(a["features.1.0.conv"])
    a["features.1.1"] = a["features.1"] = a["features"] = f[1][1](a["features.1.0"])
    a["head"] = model.head(a["features"].mean(dim=(2, 3)))
    return a, a["head"]


NESTED_KEYS = (
    "features.0.conv",
    "features.0.act",
    "features.0",
    "features.1.0.conv",
    "features.1.0.act",
    "features.1.0",
    "features.1.1",
    "features.1",
    "features",
    "head",
)


# -- a module called twice ----------------------------------------------------------------
class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.shared = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        h = self.act(self.shared(h))
        h = self.act(self.shared(h))
        return self.out(h)


def twice_reference(model: CalledTwice, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    a: dict[str, torch.Tensor] = {"fc1": model.fc1(x)}
    a["act"] = model.act(a["fc1"])
    a["shared"] = model.shared(a["act"])
    a["act@1"] = model.act(a["shared"])
    a["shared@1"] = model.shared(a["act@1"])
    a["act@2"] = model.act(a["shared@1"])
    a["out"] = model.out(a["act@2"])
    return a, a["out"]


TWICE_KEYS = ("fc1", "act", "shared", "act@1", "shared@1", "act@2", "out")


# -- multi-input --------------------------------------------------------------------------
class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.meta = nn.Linear(6, 4)
        self.head = nn.Linear(2 + 4, 3)

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.conv(image)).flatten(1)
        return self.head(torch.cat([pooled, self.meta(extra)], dim=1))


def two_inputs_reference(
    model: TwoInputs, image: torch.Tensor, extra: torch.Tensor
) -> tuple[dict[str, torch.Tensor], Any]:
    a = {"conv": model.conv(image)}
    a["pool"] = model.pool(a["conv"])
    a["meta"] = model.meta(extra)
    a["head"] = model.head(torch.cat([a["pool"].flatten(1), a["meta"]], dim=1))
    return a, a["head"]


# -- multi-output -------------------------------------------------------------------------
class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.GELU())
        self.classes = nn.Linear(8, 4)
        self.box = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"classes": self.classes(h), "box": self.box(h)}


def two_heads_reference(model: TwoHeads, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    a = {"body.0": model.body[0](x)}
    a["body.1"] = a["body"] = model.body[1](a["body.0"])
    a["classes"] = model.classes(a["body"])
    a["box"] = model.box(a["body"])
    return a, {"classes": a["classes"], "box": a["box"]}


# -- a module returning a tuple -----------------------------------------------------------
class Split(nn.Module):
    """Returns two tensors (and a non-tensor, which is not a node)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str, torch.Tensor]:
        half = x.shape[1] // 2
        return torch.sigmoid(x[:, :half]), "gate", torch.tanh(x[:, half:])


class TupleOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.split = Split()
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, _, value = self.split(self.fc(x))
        return self.out(gate * value), gate


def tuple_reference(model: TupleOutputs, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    a = {"fc": model.fc(x)}
    # Output indices count tensors only: the string between them is not a node.
    a["split"], _, a["split:1"] = model.split(a["fc"])
    a["out"] = model.out(a["split"] * a["split:1"])
    return a, (a["out"], a["split"])


# -- a small ResNet ------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """ResNet-18's layout at toy width: stem, two stages of two basic blocks, pool, fc."""

    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(
            BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _block_reference(
    block: BasicBlock, prefix: str, x: torch.Tensor, a: dict[str, torch.Tensor]
) -> torch.Tensor:
    a[f"{prefix}.conv1"] = block.conv1(x)
    a[f"{prefix}.bn1"] = block.bn1(a[f"{prefix}.conv1"])
    a[f"{prefix}.relu"] = functional.relu(a[f"{prefix}.bn1"])
    a[f"{prefix}.conv2"] = block.conv2(a[f"{prefix}.relu"])
    a[f"{prefix}.bn2"] = block.bn2(a[f"{prefix}.conv2"])
    identity = x
    if block.downsample is not None:
        a[f"{prefix}.downsample.0"] = block.downsample[0](x)
        a[f"{prefix}.downsample.1"] = a[f"{prefix}.downsample"] = block.downsample[1](
            a[f"{prefix}.downsample.0"]
        )
        identity = a[f"{prefix}.downsample"]
    a[f"{prefix}.relu@1"] = a[prefix] = functional.relu(a[f"{prefix}.bn2"] + identity)
    return a[prefix]


def resnet_reference(model: TinyResNet, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    a = {"conv1": model.conv1(x)}
    a["bn1"] = model.bn1(a["conv1"])
    h = a["relu"] = functional.relu(a["bn1"])
    for stage in ("layer1", "layer2"):
        for index, block in enumerate(getattr(model, stage)):
            h = _block_reference(block, f"{stage}.{index}", h, a)
        a[stage] = h
    a["avgpool"] = model.avgpool(h)
    a["fc"] = model.fc(torch.flatten(a["avgpool"], 1))
    return a, a["fc"]


CASES = (
    TorchCase(
        "sequential",
        _seeded(sequential),
        lambda: _images(),
        sequential_reference,
        keys=("0", "1", "2", "3", "4", "5", "6"),
        score_key="5",
    ),
    TorchCase("nested", _seeded(Nested), lambda: _images(), nested_reference, keys=NESTED_KEYS),
    TorchCase(
        "called_twice", _seeded(CalledTwice), lambda: _vectors(), twice_reference, keys=TWICE_KEYS
    ),
    TorchCase(
        "two_inputs",
        _seeded(TwoInputs),
        lambda: (_images(), _vectors()),
        two_inputs_reference,
        keys=("conv", "pool", "meta", "head"),
    ),
    TorchCase(
        "two_heads",
        _seeded(TwoHeads),
        lambda: _vectors(),
        two_heads_reference,
        keys=("body.0", "body.1", "body", "classes", "box"),
    ),
    TorchCase(
        "tuple_outputs",
        _seeded(TupleOutputs),
        lambda: _vectors(),
        tuple_reference,
        keys=("fc", "split", "split:1", "out"),
    ),
    TorchCase("resnet", _seeded(TinyResNet), lambda: _images(size=8), resnet_reference),
)
