"""The PyTorch capture session: forward hooks for activations, autograd for gradients.

Every :meth:`TorchCaptureSession.run` attaches its hooks, switches the model to eval mode,
runs one batch and detaches everything again in a ``finally`` — so a batch that raises,
or an engine that forgets to close the session, leaves no hook and no changed
``training`` flag behind.  :meth:`close` removes whatever might remain and is idempotent.

Gradients are ``torch.autograd.grad(target.sum(), activations)``: in eval mode samples are
independent, so the gradient of the batch sum with respect to one sample's activation is
that sample's gradient.

Copies only where needed.  A captured output is kept as the module's own tensor unless a
later in-place op changes it (``ReLU(inplace=True)`` after a batch norm, as in ResNets): its
version counter shows that after the forward pass, the batch runs again, and from then on
that key is copied — without gradients the hook keeps a copy, with gradients it hands a
*clone* to the rest of the model, so the in-place op changes the clone and the captured
tensor keeps both its value and its place in the autograd graph.  An output sharing memory
with a parameter or buffer is copied too (an optimizer step could change it before the
write).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tensortap.core.backend import BatchResult, CaptureSession
from tensortap.core.capture_attributions import AttributionSpec
from tensortap.core.errors import InputMismatchError, TargetError
from tensortap.core.graph import CaptureGraph, CaptureNode
from tensortap.core.targets import Target

from ._torch_util import (
    eval_mode,
    map_tensors,
    model_device,
    output_items,
    remove_all,
    tensor_leaves,
    to_numpy,
    to_tensors,
)

__all__ = ["TorchCaptureSession"]

OUTPUT = "model output"

#: Keys each model's sessions learnt to copy (see ``TorchCaptureSession._keep``), kept
#: across sessions so a new capture does not run its first batch twice.  A stale key only
#: costs a copy; a missing one is caught again by the version check.
_COPIED: weakref.WeakKeyDictionary[torch.nn.Module, set[str]] = weakref.WeakKeyDictionary()


class TorchCaptureSession(CaptureSession):
    """Captures a fixed set of nodes of one ``nn.Module``, batch by batch.

    Parameters
    ----------
    model : torch.nn.Module
        The traced model.
    graph : CaptureGraph
        Its capture graph (from :func:`build_graph`).
    nodes : sequence of CaptureNode
        The nodes to capture.
    gradients : bool
        Whether to differentiate the target with respect to each captured activation.
    target : Target, optional
        The per-sample scalar; ``None`` means ``"predicted"``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        graph: CaptureGraph,
        nodes: Sequence[CaptureNode],
        *,
        gradients: bool,
        target: Target | None,
        attributions: AttributionSpec | None = None,
    ) -> None:
        super().__init__()
        # Input attributions (backends/_torch_attrib.py) need the target's autograd pass.
        self.attributions = attributions
        self._needs_grad = gradients or attributions is not None
        self.model, self.graph = model, graph
        self.nodes = tuple(graph[node.key] for node in nodes)
        self.gradients = gradients
        self.target = target or Target("predicted")
        # module path -> {(call index, output index): node key}
        self._wanted: dict[str, dict[tuple[int, int], str]] = {}
        for node in self.nodes:
            self._wanted.setdefault(node.name, {})[(node.call_index, node.output_index)] = node.key
        self._softmax: tuple[str, int] | None = graph.extra.get("softmax")
        self._handles: list[Any] = []
        self._closed = False
        # Forward-only capture (see _keep): keys whose activation an in-place op changes
        # later in the pass, the version counters of the uncopied ones this batch, and the
        # storages of parameters and buffers.
        self._copied: set[str] = _COPIED.setdefault(model, set())
        self._versions: dict[str, int] = {}
        self._weights: set[int] = set()
        self._aliased: set[str] = set()
        # The same wording as the TensorFlow backend, so runs of both read alike.
        self.info["score"] = graph.extra.get("score", OUTPUT)
        self.info["target"] = self.target.describe()

    # -- hooks -------------------------------------------------------------------------
    def _attach(self, captured: dict[str, torch.Tensor], scores: list[torch.Tensor]) -> None:
        # Only the hooked paths are looked up: walking ``named_modules()`` every batch was a
        # fifth of a training probe's pass (issue 14).
        modules = {path: _submodule(self.model, path) for path in self._wanted}
        if self._softmax is not None and self._needs_grad:
            modules[self._softmax[0]] = _submodule(self.model, self._softmax[0])
        calls: dict[str, int] = {}
        missing = sorted(path for path, module in modules.items() if module is None)
        if missing:  # a submodule renamed or deleted since the trace
            raise InputMismatchError(
                f"the model no longer has submodules {missing}; trace it again with graph()"
            )
        for path, wanted in self._wanted.items():
            self._handles.append(
                modules[path].register_forward_hook(
                    self._capture_hook(path, wanted, calls, captured)
                )
            )
        if self._softmax is not None and self._needs_grad:
            path, call = self._softmax
            self._handles.append(
                modules[path].register_forward_hook(self._score_hook(call, scores))
            )

    def _capture_hook(
        self,
        path: str,
        wanted: dict[tuple[int, int], str],
        calls: dict[str, int],
        captured: dict[str, torch.Tensor],
    ) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            call = calls.get(path, 0)
            calls[path] = call + 1
            hits = {
                id(leaf): wanted[(call, position)]
                for position, leaf in enumerate(tensor_leaves(output))
                if (call, position) in wanted
            }
            if not hits:
                return None
            if not self.gradients:
                for leaf in tensor_leaves(output):
                    if id(leaf) in hits:
                        self._keep(hits[id(leaf)], leaf, captured)
                return None

            def keep(leaf: torch.Tensor) -> torch.Tensor:
                if id(leaf) not in hits:
                    return leaf
                key = hits[id(leaf)]
                captured[key] = leaf
                if _storage(leaf) in self._weights:
                    self._aliased.add(key)  # copied into NumPy, not viewed (see _keep)
                if key in self._copied:
                    return leaf.clone()  # downstream (in-place) ops get the clone
                self._versions[key] = leaf._version
                return leaf

            return map_tensors(output, keep)

        return hook

    def _keep(self, key: str, leaf: torch.Tensor, captured: dict[str, torch.Tensor]) -> None:
        """Keep a forward-only activation, copying it only where it must be copied.

        A copy is needed where a later in-place op (``ReLU(inplace=True)`` after a batch
        norm) changes the tensor before the batch ends, or where the tensor shares memory
        with a parameter or buffer (an optimizer step may change it before the write).  The
        first kind shows in the tensor's version counter after the forward pass: such keys
        are learnt (``_copied``) and the batch runs again (:meth:`run`).  Copying ~40
        activations of a small ResNet cost as much as its forward pass.
        """
        tensor = leaf.detach()
        if key in self._copied or _storage(tensor) in self._weights:
            captured[key] = tensor.clone()
        else:
            captured[key] = tensor
            self._versions[key] = tensor._version

    @staticmethod
    def _score_hook(call: int, scores: list[torch.Tensor]) -> Any:
        seen = [0]

        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if seen[0] == call:
                scores.append(args[0])
            seen[0] += 1

        return hook

    # -- one batch ---------------------------------------------------------------------
    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        start: int = 0,
    ) -> BatchResult:
        if self._closed:
            raise RuntimeError("this capture session is closed; open a new one")
        device = model_device(self.model)
        tensors = to_tensors(self.graph.inputs, _by_name(self.graph, inputs), device)
        captured: dict[str, torch.Tensor] = {}
        scores: list[torch.Tensor] = []
        self._versions.clear()
        self._aliased.clear()
        self._weights = {_storage(t) for t in (*self.model.parameters(), *self.model.buffers())}
        try:
            with eval_mode(self.model), torch.set_grad_enabled(self._needs_grad):
                self._attach(captured, scores)
                if self._needs_grad:
                    for tensor in tensors:
                        # Frozen models have no parameter that requires grad: make the
                        # inputs the roots, so every activation is in the autograd graph.
                        if tensor.is_floating_point():
                            tensor.requires_grad_(True)
                if self.graph.extra.get("by_keyword"):
                    output = self.model(
                        **dict(zip((s.name for s in self.graph.inputs), tensors, strict=True))
                    )
                else:
                    output = self.model(*tensors)
                remove_all(self._handles)
                changed = {
                    key
                    for key, version in self._versions.items()
                    if captured[key]._version != version
                }
                if changed:  # modified in place after its hook: copy from now on, redo
                    self._copied |= changed
                    return self.run(inputs, classes, labels, start=start)
                return self._result(
                    output, captured, scores, classes, labels, device, tensors, start
                )
        finally:
            remove_all(self._handles)

    def _result(
        self,
        output: Any,
        captured: dict[str, torch.Tensor],
        scores: list[torch.Tensor],
        classes: np.ndarray | None,
        labels: np.ndarray | None,
        device: torch.device,
        tensors: Sequence[torch.Tensor] = (),
        start: int = 0,
    ) -> BatchResult:
        items = output_items(output)
        batch = items[0][1].shape[0]
        self._check_captured(captured, batch)
        gradients: dict[str, np.ndarray] = {}
        classes_out: np.ndarray | None = None
        values: torch.Tensor | None = None
        attributions: dict[str, np.ndarray] = {}
        if self._needs_grad:  # the target is only evaluated when it is differentiated
            score = scores[0] if scores else items[0][1]
            classes_out, values = self._target(
                output, score.reshape(batch, -1), classes, labels, device
            )
            keys = [key for key, t in captured.items() if t.requires_grad]
            sources = [captured[k] for k in keys]
            if self.attributions is not None:  # the input gradient of this very pass
                sources.append(tensors[0])
            found = torch.autograd.grad(values.sum(), sources, allow_unused=True) if sources else ()
            by_key = dict(zip(keys, found, strict=False))
            if self.attributions is not None:
                from ._torch_attrib import input_attributions

                grad = found[-1]
                assert classes_out is not None  # check_attributions refused callables
                attributions = input_attributions(
                    self.attributions,
                    self.model,
                    tensors[0],
                    torch.zeros_like(tensors[0]) if grad is None else grad,
                    torch.as_tensor(classes_out, device=device),
                    start,
                )
            for key, activation in captured.items() if self.gradients else ():
                grad = by_key.get(key)
                # No path from the activation to the target: its gradient is zero.
                gradients[key] = to_numpy(
                    grad if grad is not None else torch.zeros_like(activation)
                )
        return BatchResult(
            outputs={name: to_numpy(t) for name, t in items},
            activations={node.key: self._numpy(node.key, captured) for node in self.nodes},
            gradients=gradients,
            target_classes=classes_out,
            target_values=None if values is None else to_numpy(values),
            attributions=attributions,
        )

    def _numpy(self, key: str, captured: dict[str, torch.Tensor]) -> np.ndarray:
        array = to_numpy(captured[key])
        return array.copy() if key in self._aliased else array  # weights may change later

    def _check_captured(self, captured: dict[str, torch.Tensor], batch: int) -> None:
        for node in self.nodes:
            tensor = captured.get(node.key)
            if tensor is None:
                raise InputMismatchError(
                    f"layer {node.key!r} did not run for this batch (data-dependent control "
                    "flow?); select layers that run for every input"
                )
            if tuple(tensor.shape) != (batch, *node.shape):
                raise InputMismatchError(
                    f"layer {node.key!r} produced shape {tuple(tensor.shape[1:])} per sample "
                    f"but was traced with {node.shape}; keep inputs the size of the first batch"
                )

    def _target(
        self,
        output: Any,
        scores: torch.Tensor,
        classes: np.ndarray | None,
        labels: np.ndarray | None,
        device: torch.device,
    ) -> tuple[np.ndarray | None, torch.Tensor]:
        batch = scores.shape[0]
        target = self.target
        if target.kind == "callable":
            assert target.function is not None
            label_tensor = (
                None if labels is None else torch.as_tensor(np.asarray(labels), device=device)
            )
            values = torch.as_tensor(target.function(output, label_tensor))
            if values.numel() != batch:
                raise TargetError(
                    f"target callable returned shape {tuple(values.shape)} for a batch of "
                    f"{batch}; return one scalar per sample"
                )
            return None, values.reshape(batch)
        if classes is None and target.kind in ("class", "label"):
            classes = target.batch_classes(0, batch, labels)
        if classes is None and target.kind == "classes":
            # Only a per-sample array as long as this very batch can be used without the
            # engine's sample offsets (the engine passes classes= batch by batch).
            if target.classes is None or len(target.classes) != batch:
                raise TargetError(
                    "a per-sample target array must be passed batch by batch as classes=; got "
                    f"{None if target.classes is None else len(target.classes)} classes for a "
                    f"batch of {batch}"
                )
            classes = target.classes
        if classes is None:
            chosen = scores.detach().argmax(dim=1)
        else:
            chosen = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=device).reshape(
                batch
            )
            if int(chosen.min()) < 0 or int(chosen.max()) >= scores.shape[1]:
                raise TargetError(
                    f"target classes range over {int(chosen.min())}..{int(chosen.max())} but the "
                    f"model scores {scores.shape[1]} classes (0..{scores.shape[1] - 1})"
                )
        values = scores.gather(1, chosen[:, None]).squeeze(1)
        return to_numpy(chosen), values

    def close(self) -> None:
        """Remove any hook still attached (normally none: each batch cleans up); safe to
        call twice.  The session cannot run afterwards."""
        remove_all(self._handles)
        self._closed = True


def _by_name(graph: CaptureGraph, inputs: Any) -> Mapping[str, Any]:
    """Accept a mapping by input name, or for convenience one array / a tuple in order."""
    if isinstance(inputs, Mapping):
        return inputs
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        inputs = (inputs,)
    if isinstance(inputs, (tuple, list)) and len(inputs) == len(graph.inputs):
        return {spec.name: value for spec, value in zip(graph.inputs, inputs, strict=True)}
    raise InputMismatchError(
        f"the model takes {len(graph.inputs)} input(s) {[s.name for s in graph.inputs]}; "
        f"got {type(inputs).__name__}"
    )


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """The submodule at ``path`` (``""``: the model itself), or ``None`` if it is gone."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _storage(tensor: torch.Tensor) -> int:
    """Address of the memory a tensor (or the tensor it is a view of) lives in."""
    return int(tensor.untyped_storage().data_ptr())
