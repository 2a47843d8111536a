"""The backend interface: what a framework adapter must provide.

A backend is a small stateless class (the xarray ``BackendEntrypoint`` pattern) with
class-level metadata and capability flags.  It turns a model into a :class:`CaptureGraph`
and opens a :class:`CaptureSession` that runs batches.  Everything a session attaches to a
model (wrapped calls, hooks) is attached in ``__enter__`` or lazily, and removed in
``close()``, which ``__exit__`` calls from a ``finally`` — also when a batch raises.

Writing a new backend: subclass :class:`Backend`, implement the abstract methods, register
it under the ``tensortap.backends`` entry-point group, and run the conformance suite in
:mod:`tensortap.core.testing` against it (docs/backends.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from tensortap.core.graph import CaptureGraph, CaptureNode
from tensortap.core.targets import Target

__all__ = ["Backend", "BatchResult", "CaptureSession", "model_type_modules"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch yields, all as NumPy arrays with the batch axis first.

    Attributes
    ----------
    outputs : dict of str to ndarray
        Model outputs by output name (:attr:`CaptureGraph.outputs` order).
    activations : dict of str to ndarray
        Activations of the selected nodes, by node key.
    gradients : dict of str to ndarray
        Gradients of the per-sample target with respect to each activation (empty when
        gradients were not asked for).
    target_classes : ndarray or None
        The class whose score was differentiated, per sample (``None`` for callables).
    target_values : ndarray or None
        The per-sample scalar that was differentiated.
    partial_stats : dict of str to dict, or None
        Optional per-batch statistics the backend computed in its compiled step from the
        full-precision activations, by node key (backends with ``supports_partial_stats``,
        once given histogram edges by :meth:`CaptureSession.set_histogram_edges`).  Each
        holds the arrays of :data:`tensortap.core.stats.PARTIAL_KEYS`, see
        :func:`tensortap.core.stats.block_stats_from_partials`; a key left out (or ``None``)
        gets its statistics from the activations in NumPy.
    predictions : ndarray or None
        Top-1 class per sample, from the very scores a ``"predicted"`` target
        differentiates (the pre-softmax logits when the model ends in a softmax).  ``None``
        lets the engine take the argmax of the first output instead, which can disagree:
        a float32 softmax of near-zero logits (random weights) rounds every class to the
        same probability, and the argmax of a tie is class 0.
    attributions : dict of str to ndarray
        Input attributions by method (``capture(attributions=...)``), each with the input's
        shape, computed in the same step with the same target (backends with
        ``supports_attributions``); empty when none were asked for.
    """

    outputs: dict[str, np.ndarray]
    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray] = field(default_factory=dict)
    target_classes: np.ndarray | None = None
    target_values: np.ndarray | None = None
    partial_stats: dict[str, dict[str, np.ndarray]] | None = None
    predictions: np.ndarray | None = None
    attributions: dict[str, np.ndarray] = field(default_factory=dict)


class CaptureSession(ABC):
    """Runs batches through one model for a fixed set of nodes; a context manager.

    Subclasses implement :meth:`run` and :meth:`close`; ``close`` must restore the model
    exactly (no wrapper, hook or attribute left behind) and be safe to call twice.
    """

    #: Free-form facts the run stores in its attrs (e.g. which score the target used).
    info: dict[str, Any]

    def __init__(self) -> None:
        self.info = {}

    @abstractmethod
    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> BatchResult:
        """Run one batch.

        Parameters
        ----------
        inputs : mapping of str to ndarray
            One array per model input, by :attr:`CaptureGraph.inputs` name.
        classes : ndarray of int, optional
            Per-sample target classes (from :meth:`Target.batch_classes`); ``None`` lets the
            session use the predicted class, or the callable target.
        labels : ndarray, optional
            The batch's labels, passed to a callable target.
        """

    def batches_per_call(self, batch_size: int) -> int:
        """How many compute batches of ``batch_size`` samples :meth:`run_batches` should be
        given at once.  More than one pays a session's fixed cost per call (dispatch,
        conversions) once per group of batches; the default, one, runs batch by batch."""
        return 1

    def run_batches(
        self,
        inputs: Mapping[str, np.ndarray],
        batch_size: int,
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> BatchResult:
        """Run consecutive batches of ``batch_size`` samples; the model sees one at a time.

        ``inputs`` hold a whole number of batches, or one batch shorter than
        ``batch_size``; ``classes`` and ``labels`` cover all their samples.  The result
        equals the batches' :meth:`run` results joined in sample order.  This default
        calls :meth:`run` on each batch; sessions that can run a group in one compiled
        call override it (and :meth:`batches_per_call`).
        """
        from tensortap.core.block_parts import join_results

        n = len(next(iter(inputs.values())))
        results = []
        for i in range(0, n, batch_size):
            rows = slice(i, i + batch_size)
            results.append(
                self.run(
                    {name: value[rows] for name, value in inputs.items()},
                    classes=None if classes is None else classes[rows],
                    labels=None if labels is None else labels[rows],
                )
            )
        return results[0] if len(results) == 1 else join_results(results)

    def set_histogram_edges(self, edges: Mapping[str, np.ndarray]) -> None:
        """Histogram edges per node key, for backends that compute statistics in their
        compiled step (``Backend.supports_partial_stats``); later batches then carry
        :attr:`BatchResult.partial_stats`.  The default ignores them."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Detach everything attached to the model."""

    def __enter__(self) -> CaptureSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Backend(ABC):
    """Adapter between one framework and the framework-free capture engine.

    Class attributes
    ----------------
    name : str
        Registry name (``"tensorflow"``, ``"torch"``).
    description : str
        One line for ``tensortap backends`` and error messages.
    model_modules : tuple of str
        Top-level module names whose classes this backend captures; :meth:`accepts`
        checks a model's class hierarchy against them without importing the framework.
    channels_last : bool
        Layout of image-like activations (decides default dimension names).
    supports_gradients : bool
        Capability flag: whether sessions can return gradients.
    needs_example_inputs : bool
        Capability flag: the model has no static input shape (PyTorch), so the first call
        of :meth:`graph` must receive an example batch as ``graph(model, inputs=...)``;
        the engine passes the data's first samples.
    supports_partial_stats : bool
        Capability flag: sessions compute per-batch statistics in their compiled step once
        given histogram edges (:meth:`CaptureSession.set_histogram_edges`), so the run
        writer need not make another pass over the activations in NumPy.
    supports_attributions : bool
        Capability flag: :meth:`session` accepts ``attributions=`` (an
        :class:`~tensortap.core.capture_attributions.AttributionSpec`) and its ``run``
        accepts ``start=`` (the batch's first global sample, which seeds SmoothGrad) and
        returns :attr:`BatchResult.attributions`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    url: ClassVar[str] = ""
    model_modules: ClassVar[tuple[str, ...]] = ()
    channels_last: ClassVar[bool] = True
    supports_gradients: ClassVar[bool] = True
    needs_example_inputs: ClassVar[bool] = False
    supports_partial_stats: ClassVar[bool] = False
    supports_attributions: ClassVar[bool] = False

    @classmethod
    def accepts(cls, model: Any) -> bool:
        """Whether ``model`` looks like one of this framework's models."""
        return bool(set(model_type_modules(model)) & set(cls.model_modules))

    @abstractmethod
    def graph(self, model: Any, inputs: Any = None) -> CaptureGraph:
        """The model's capture graph (may run the model symbolically once).

        Parameters
        ----------
        model : object
            The framework's model.
        inputs : array, list, tuple or dict, optional
            An example batch.  Required on the first call by backends whose models have
            no static input shape (``needs_example_inputs``); the others ignore it.
        """

    @abstractmethod
    def session(
        self,
        model: Any,
        nodes: Sequence[CaptureNode],
        *,
        gradients: bool = False,
        target: Target | None = None,
    ) -> CaptureSession:
        """Open a session that captures ``nodes`` (and their gradients) batch by batch."""

    def model_info(self, model: Any) -> dict[str, Any]:
        """``{"name", "class", "params"}`` for the run's attrs."""
        graph = self.graph(model)
        return {"name": graph.model_name, "class": graph.model_class, "params": graph.params}

    def fingerprint(self, model: Any) -> str:
        """A digest of the model's architecture and weights; resume refuses a different one."""
        import hashlib

        graph = self.graph(model)
        digest = hashlib.sha256(repr((graph.model_class, graph.keys)).encode())
        for node in graph:
            digest.update(repr((node.key, node.shape)).encode())
        return digest.hexdigest()[:16]

    def batches(self, data: Any, batch_size: int) -> Iterator[Any] | None:
        """Framework-native data (``tf.data.Dataset``, ``DataLoader``) as an iterator of
        batches of NumPy arrays (``x`` or ``(x, y)``), or ``None`` if not recognised."""
        return None

    @classmethod
    def can_load(cls, path: str) -> bool:
        """Whether :meth:`load_model` understands the file or folder at ``path``."""
        return False

    def load_model(self, path: str) -> Any:
        """Load a saved model (for the command line)."""
        raise NotImplementedError(f"the {self.name} backend cannot load model files")


def model_type_modules(model: Any) -> Iterable[str]:
    """Top-level module names of every class in ``type(model).__mro__``."""
    for klass in type(model).__mro__:
        yield klass.__module__.split(".")[0]
