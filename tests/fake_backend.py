"""A tiny NumPy "framework" and backend for run-store and engine tests (no TensorFlow).

The model is deterministic: a 1x1 "conv" with ReLU over an NHWC image, a dense layer over
its spatial mean, and a softmax output; gradients are a fixed function of the activations
and the target class, enough to check that the store keeps what the backend returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tensortap.core.backend import Backend, BatchResult, CaptureSession
from tensortap.core.graph import CaptureGraph, CaptureNode, TensorSpec
from tensortap.core.targets import Target


class FakeModel:
    """``image (H, W, 3) -> conv (H, W, C) -> dense (units) -> probs (classes)``."""

    def __init__(
        self,
        size: int = 8,
        channels: int = 4,
        units: int = 5,
        classes: int = 3,
        seed: int = 0,
        name: str = "fake_net",
    ) -> None:
        rng = np.random.default_rng(seed)
        self.size, self.channels, self.units, self.classes = size, channels, units, classes
        self.w_conv = rng.normal(size=(3, channels)).astype(np.float32)
        self.w_dense = rng.normal(size=(channels, units)).astype(np.float32)
        self.w_out = rng.normal(size=(units, classes)).astype(np.float32)
        self.name = name
        self.fail_at_call: int | None = None
        self.calls = 0

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        conv = np.maximum(x.astype(np.float32) @ self.w_conv, 0).astype(np.float32)
        dense = (conv.mean(axis=(1, 2)) @ self.w_dense).astype(np.float32)
        logits = (dense @ self.w_out).astype(np.float32)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {
            "block.conv": conv,
            "dense": dense,
            "probs": (e / e.sum(axis=1, keepdims=True)).astype(np.float32),
        }


class FakeSession(CaptureSession):
    def __init__(
        self, model: FakeModel, nodes: Sequence[CaptureNode], gradients: bool, target: Target | None
    ) -> None:
        super().__init__()
        self.model, self.keys, self.gradients = model, [n.key for n in nodes], gradients
        self.info = {"score": "probabilities (fake)"}

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> BatchResult:
        self.model.calls += 1
        if self.model.fail_at_call is not None and self.model.calls >= self.model.fail_at_call:
            raise RuntimeError("boom")
        out = self.model.forward(inputs["image"])
        chosen = out["probs"].argmax(axis=1) if classes is None else classes
        acts = {k: out[k] for k in self.keys}
        grads = {}
        if self.gradients:
            scale = (chosen + 1).astype(np.float32)
            grads = {
                k: (v * scale.reshape(-1, *([1] * (v.ndim - 1))) - 1).astype(np.float32)
                for k, v in acts.items()
            }
        return BatchResult(
            {"probs": out["probs"]},
            acts,
            grads,
            chosen.astype(np.int64),
            out["probs"][np.arange(len(chosen)), chosen],
        )

    def close(self) -> None:
        pass


class FakeBackend(Backend):
    name = "fake"
    description = "NumPy test backend"

    @classmethod
    def accepts(cls, model: Any) -> bool:
        return isinstance(model, FakeModel)

    def graph(self, model: FakeModel, inputs: Any = None) -> CaptureGraph:
        s, c, u = model.size, model.channels, model.units
        nodes = (
            CaptureNode(
                "block.conv",
                "conv",
                "Conv2D",
                ("block", "conv"),
                (s, s, c),
                ("height", "width", "channel"),
            ),
            CaptureNode("dense", "dense", "Dense", ("dense",), (u,), ("unit",)),
            CaptureNode("probs", "probs", "Softmax", ("probs",), (model.classes,), ("unit",)),
        )
        return CaptureGraph(
            "fake",
            model.name,
            "FakeModel",
            nodes,
            (TensorSpec("image", (s, s, 3), "float32", ("height", "width", "channel")),),
            (TensorSpec("probs", (model.classes,), "float32", ("class",)),),
            params=int(model.w_conv.size + model.w_dense.size + model.w_out.size),
        )

    def session(
        self,
        model: FakeModel,
        nodes: Sequence[CaptureNode],
        *,
        gradients: bool = False,
        target: Target | None = None,
    ) -> FakeSession:
        return FakeSession(model, nodes, gradients, target)

    def fingerprint(self, model: FakeModel) -> str:
        import hashlib

        return hashlib.sha256(model.w_conv.tobytes() + model.w_out.tobytes()).hexdigest()[:16]


def images(n: int, size: int = 8, seed: int = 1) -> np.ndarray:
    """``n`` deterministic float32 images."""
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)
