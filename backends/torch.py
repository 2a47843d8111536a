"""The PyTorch backend: capture any ``torch.nn.Module`` through forward hooks.

Registered like a third-party plugin, through the ``tensortap.backends`` entry point in
pyproject.toml (issue 6), so the registry discovers it the way it discovers any plugin.

PyTorch modules have no static input shape, so the capture graph comes from tracing an
example batch: :attr:`TorchBackend.needs_example_inputs` is ``True`` and the engine passes
its first batch to ``graph(model, inputs=...)`` (docs/contracts.md, "torch").  Graphs are
cached per model object (weakly), so later ``graph(model)`` calls — ``model_info``,
``fingerprint``, the engine's selection — reuse the trace; a fresh instance of the same
architecture (class, name, submodules and parameter shapes) with inputs of the same
shapes reuses it too.

>>> backend = TorchBackend()
>>> graph = backend.graph(model, inputs=x[:2])           # doctest: +SKIP
>>> with backend.session(model, graph.select("layer*"), gradients=True) as session:
...     result = session.run({"x": x})                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import warnings
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from tensortap.core.backend import Backend
from tensortap.core.errors import (
    DataError,
    ModelNotBuiltError,
    UnsupportedModelError,
)
from tensortap.core.graph import CaptureGraph, CaptureNode
from tensortap.core.targets import Target

from ._torch_graph import build_graph, check_module, model_name
from ._torch_session import TorchCaptureSession
from ._torch_util import split_example

__all__ = ["TorchBackend", "TorchCaptureSession"]

#: Traced graphs by model object, with the structure they were traced from; weak keys,
#: so tensortap never keeps a model alive nor adds an attribute to it.
_GRAPHS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[Any, ...], CaptureGraph]] = (
    weakref.WeakKeyDictionary()
)


#: Traced graphs by model class, display name and structure: a fresh instance of an
#: already traced architecture (a new model per training run, issue 14) reuses its trace
#: instead of running the example again.  Bounded, oldest out first.
_BY_STRUCTURE: OrderedDict[tuple[Any, ...], CaptureGraph] = OrderedDict()
_BY_STRUCTURE_SIZE = 16


def _structure(model: torch.nn.Module) -> tuple[Any, ...]:
    """What a traced graph depends on besides the inputs: submodule paths and types, and
    parameter shapes.  A model edited after tracing no longer matches its cached graph."""
    return (
        tuple((path, type(module)) for path, module in model.named_modules()),
        tuple((name, tuple(p.shape)) for name, p in model.named_parameters()),
    )


def _same_inputs(graph: CaptureGraph, model: torch.nn.Module, inputs: Any) -> bool:
    values, by_keyword = split_example(model, inputs)
    if by_keyword != graph.extra.get("by_keyword") or len(values) != len(graph.inputs):
        return False
    for spec, (name, value) in zip(graph.inputs, values.items(), strict=True):
        array = np.asarray(value) if not isinstance(value, torch.Tensor) else value
        shape = tuple(array.shape[1:])
        if spec.name != name or shape != spec.shape:
            return False
    return True


class TorchBackend(Backend):
    """Capture ``torch.nn.Module`` activations (forward hooks) and gradients (autograd).

    Keys are module paths from ``named_modules()`` (``layer1.0.conv2``); a module called
    twice gives ``act`` and ``act@1``; a module returning a tuple gives ``lstm``,
    ``lstm:1``, ...  Image-like maps keep PyTorch's NCHW layout, stored with dims
    ``("channel", "height", "width")``.

    Class attributes
    ----------------
    needs_example_inputs : bool
        Capability flag: :meth:`graph` must see an example batch once per model (the
        engine passes its first batch); afterwards ``graph(model)`` returns the cached trace.
    """

    name: ClassVar[str] = "torch"
    description: ClassVar[str] = "PyTorch torch.nn.Module, through forward hooks and autograd"
    url: ClassVar[str] = "https://pytorch.org"
    model_modules: ClassVar[tuple[str, ...]] = ("torch",)
    channels_last: ClassVar[bool] = False
    supports_gradients: ClassVar[bool] = True
    supports_attributions: ClassVar[bool] = True
    needs_example_inputs: ClassVar[bool] = True

    @classmethod
    def accepts(cls, model: Any) -> bool:
        """Whether ``model`` is a ``torch.nn.Module`` (tensors and optimizers are not)."""
        return isinstance(model, torch.nn.Module)

    def graph(self, model: Any, inputs: Any = None) -> CaptureGraph:
        """The model's capture graph, traced from an example batch.

        Parameters
        ----------
        model : torch.nn.Module
            Any module (not TorchScript: hooks do not fire inside compiled code).
        inputs : array, tensor, tuple of them, or dict, optional
            An example batch (only its first two samples run): one array for one input, a
            tuple in ``forward``'s argument order, or a dict by argument name.  Input names
            come from ``forward``'s parameters (``x``; ``input_0, ...`` for ``*args``).
            Omitted, the graph traced last for this model is returned.

        Raises
        ------
        ModelNotBuiltError
            When ``inputs`` is omitted and the model was never traced (or changed since).
        InputMismatchError
            When the model rejects the example.
        """
        check_module(model)
        cached = _GRAPHS.get(model)
        structure = _structure(model)
        if (
            cached is not None
            and cached[0] == structure
            and (inputs is None or _same_inputs(cached[1], model, inputs))
        ):
            return cached[1]
        shared = (type(model), model_name(model), structure)
        twin = _BY_STRUCTURE.get(shared)
        if twin is not None and inputs is not None and _same_inputs(twin, model, inputs):
            _GRAPHS[model] = (structure, twin)
            return twin
        if inputs is None:
            raise ModelNotBuiltError(
                f"torch model {model_name(model)} has no static input shape; trace it with an "
                "example batch first: tensortap.get_backend('torch').graph(model, inputs=x) "
                "(tensortap.capture does it with its first batch)"
            )
        graph = build_graph(model, inputs)
        _GRAPHS[model] = (structure, graph)
        _BY_STRUCTURE[shared] = graph
        _BY_STRUCTURE.move_to_end(shared)
        while len(_BY_STRUCTURE) > _BY_STRUCTURE_SIZE:
            _BY_STRUCTURE.popitem(last=False)
        return graph

    def session(
        self,
        model: Any,
        nodes: Sequence[CaptureNode],
        *,
        gradients: bool = False,
        target: Target | None = None,
        attributions: Any = None,
    ) -> TorchCaptureSession:
        """Open a capture session for ``nodes`` of the (already traced) ``model``;
        ``attributions`` (an ``AttributionSpec``) adds input attributions to each batch."""
        return TorchCaptureSession(
            model,
            self.graph(model),
            nodes,
            gradients=gradients,
            target=target,
            attributions=attributions,
        )

    def model_info(self, model: Any) -> dict[str, Any]:
        """``{"name", "class", "params"}``; needs no trace."""
        check_module(model)
        return {
            "name": model_name(model),
            "class": type(model).__qualname__,
            "params": sum(p.numel() for p in model.parameters()),
        }

    def fingerprint(self, model: Any) -> str:
        """Digest of the architecture (submodule paths and types, parameter and buffer
        names, shapes and dtypes) and of every weight; needs no trace."""
        check_module(model)
        digest = hashlib.sha256(type(model).__qualname__.encode())
        for path, module in model.named_modules():
            digest.update(f"{path}:{type(module).__qualname__};".encode())
        for name, tensor in (*model.named_parameters(), *model.named_buffers()):
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype};".encode())
            data = tensor.detach()
            if data.dtype == torch.bfloat16:
                data = data.float()
            digest.update(np.ascontiguousarray(data.cpu().numpy()).tobytes())
        return digest.hexdigest()[:16]

    def batches(self, data: Any, batch_size: int) -> Iterator[Any] | None:
        """A ``DataLoader``, a map-style ``Dataset`` or a tensor as NumPy batches.

        A ``DataLoader`` keeps its own batch size; a ``Dataset`` is batched with
        ``batch_size``.  Batches come out as ``x`` or ``(x, y)``, where ``x`` is an array,
        a tuple of arrays (several inputs) or a dict of arrays.
        """
        from torch.utils.data import DataLoader, Dataset

        if isinstance(data, torch.Tensor):
            return (
                _to_numpy_tree(data[i : i + batch_size]) for i in range(0, len(data), batch_size)
            )
        if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
            data = DataLoader(data, batch_size=batch_size)
        if isinstance(data, DataLoader):
            return _loader_batches(data)
        return None

    # -- explanations (issue 17: core/attribution.py, core/explain.py) -------------------
    def input_gradients(self, model: Any, x: np.ndarray, classes: np.ndarray) -> Any:
        """``(d score[class] / d x, scores[class])`` per sample (one-input models)."""
        from ._torch_explain import input_gradients

        return input_gradients(model, x, classes)

    def scores(self, model: Any, x: np.ndarray) -> np.ndarray:
        """``(sample, class)`` scores, the input of a final softmax if any."""
        from ._torch_explain import scores

        return scores(model, x)

    def ablated_scores(self, model: Any, key: str, x: np.ndarray, channel: int) -> np.ndarray:
        """Scores with channel ``channel`` of submodule ``key``'s output zeroed."""
        from ._torch_explain import ablated_scores

        return ablated_scores(model, key, x, channel)

    @classmethod
    def can_load(cls, path: str) -> bool:
        """``.pt`` / ``.pth`` files."""
        return os.path.isfile(path) and path.endswith((".pt", ".pth"))

    def load_model(self, path: str) -> Any:
        """Load a whole pickled module saved with ``torch.save(model, path)``.

        Unpickling runs code from the file (``weights_only=False``), so a warning says so:
        load only files you trust.  TorchScript archives and bare ``state_dict`` files are
        refused with the fix, since hooks cannot see into the first and the second has
        no architecture.
        """
        if _is_torchscript(path):
            raise UnsupportedModelError(
                f"{path} is a TorchScript archive: its submodules run as compiled code, where "
                "forward hooks never fire; save the nn.Module itself with torch.save(model, path)"
            )
        warnings.warn(
            f"loading {path} with torch.load(weights_only=False) unpickles arbitrary code; "
            "only load model files you trust",
            UserWarning,
            stacklevel=2,
        )
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise DataError(f"cannot load a torch model from {path}: {err}") from err
        if not isinstance(model, torch.nn.Module):
            raise UnsupportedModelError(
                f"{path} holds a {type(model).__name__}, not an nn.Module (a state_dict has no "
                "architecture); build the model in Python, load_state_dict, and capture it"
            )
        return model


def _is_torchscript(path: str) -> bool:
    # TorchScript archives are zip files with a code/ folder; torch.save pickles are not.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def _to_numpy_tree(value: Any) -> Any:
    # Inner sequences become lists: the engine reads a list as one array per model input.
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (tuple, list)):
        return [_to_numpy_tree(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_numpy_tree(item) for key, item in value.items()}
    return np.asarray(value)


def _loader_batches(loader: Any) -> Iterator[Any]:
    """DataLoader batches as the engine reads them: ``x`` or ``(x, y)``.

    A loader yields ``[x, y]`` (default collate makes lists), ``[x]`` (a ``TensorDataset``
    of inputs only), a bare tensor or a dict; several inputs come as ``[[x1, x2], y]``.
    Only the outermost pair becomes the ``(x, y)`` tuple.
    """
    for batch in loader:
        batch = _to_numpy_tree(batch)
        if isinstance(batch, list) and len(batch) == 1:
            yield batch[0]
        elif isinstance(batch, list) and len(batch) == 2:
            yield batch[0], batch[1]
        elif isinstance(batch, list):  # the engine explains how to structure several items
            yield tuple(batch)
        else:
            yield batch
