"""The torch session copies an activation only where it must (backends/_torch_session.py):
values stay those of the module's own output whether a later op changes it in place
always, only for some batches, or whether the output shares memory with a weight."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tensortap.backends.torch import TorchBackend  # noqa: E402


class SometimesInPlace(nn.Module):
    """``fc``'s output is changed in place, after its hook, only when the batch's first
    value is positive: the session first learns nothing to copy, then must notice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if bool(x[0, 0] > 0):
            h.mul_(-3.0)
        return self.out(h)


class ReturnsWeight(nn.Module):
    """``table`` returns a view of its own parameter (as an embedding table lookup of all
    rows would): the captured value must not follow later changes to the weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(12.0).reshape(3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight[None].expand(x.shape[0], 3, 4)


class Table(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = ReturnsWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.table(x) * x[:, None, :]).sum(dim=(1, 2))


def test_in_place_change_in_a_later_batch_is_noticed() -> None:
    torch.manual_seed(0)
    model = SometimesInPlace().eval()
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(3)]
    batches[0][0, 0], batches[1][0, 0], batches[2][0, 0] = -1.0, 1.0, 1.0
    backend = TorchBackend()
    graph = backend.graph(model, batches[0])
    with backend.session(model, graph.select(["fc", "out"])) as session:
        for x in batches:
            result = session.run({"x": x})
            with torch.no_grad():
                expected = model.fc(torch.from_numpy(x)).numpy()  # before any in-place op
            np.testing.assert_array_equal(result.activations["fc"], expected)
            with torch.no_grad():
                np.testing.assert_array_equal(result.outputs["output"], model(torch.from_numpy(x)))


def test_output_sharing_a_weight_is_copied() -> None:
    model = Table().eval()
    x = np.ones((1, 4), np.float32)  # one sample: the expanded view is contiguous
    backend = TorchBackend()
    graph = backend.graph(model, x)
    with backend.session(model, graph.select(["table"])) as session:
        result = session.run({"x": x})
    with torch.no_grad():
        model.table.weight.add_(100.0)  # an optimizer step after the capture
    expected = np.broadcast_to(np.arange(12.0, dtype=np.float32).reshape(3, 4), (1, 3, 4))
    np.testing.assert_array_equal(result.activations["table"], expected)


def test_gradient_mode_in_place_and_weights() -> None:
    """With gradients, the in-place-changed ``fc`` keeps its own value and its gradient
    (explicit autograd), and a weight-sharing output is a copy."""
    torch.manual_seed(0)
    model = SometimesInPlace().eval()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 4)).astype(np.float32)
    x[0, 0] = 1.0  # the in-place branch runs
    backend = TorchBackend()
    graph = backend.graph(model, x)
    with backend.session(model, graph.select(["fc"]), gradients=True) as session:
        result = session.run({"x": x}, classes=np.zeros(4, np.int64))
    h = model.fc(torch.from_numpy(x))
    h.retain_grad()
    model.out(h * -3.0)[:, 0].sum().backward()
    np.testing.assert_allclose(result.activations["fc"], h.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.gradients["fc"], h.grad.numpy(), rtol=1e-6)

    table = Table().eval()
    one = np.ones((1, 4), np.float32)
    graph = backend.graph(table, one)
    with backend.session(table, graph.select(["table"]), gradients=True) as session:
        got = session.run({"x": one}, classes=np.zeros(1, np.int64))
    with torch.no_grad():
        table.table.weight.add_(100.0)
    np.testing.assert_array_equal(got.activations["table"][0], np.arange(12.0).reshape(3, 4))
