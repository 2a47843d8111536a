"""TensorFlow / Keras 3 backend: capture graph and capture sessions for any Keras model.

How it works
------------
Nothing is ever rebuilt: no ``keras.Model(inputs, layer.output)`` sub-models, which raise
"Graph disconnected" for nested models and cannot see inside subclassed ones.  Instead
``call`` is wrapped on the selected layer instances *while TensorFlow traces* one
``tf.function`` per input signature (unknown batch size); each wrapper records the tensors
its layer produced and, when gradients are asked for, ``tape.watch``-es them.  The traced
concrete function returns the model outputs, the recorded activations and the gradients
of the per-sample target together; the wrappers are removed (``finally``) as soon as the
trace ends, so between batches — and after any error — the model is exactly as it was.

Keys are the layer path below the root model (``mobilenetv2_1.00_224.block_1_expand``),
``@k`` for the k-th call of a shared layer, ``:i`` for the i-th output of a layer with
several outputs (``lstm:1``).  Bare ``keras.ops`` nodes of Functional models (``x + y``,
``x[:, 0]``) are nodes like layers; an RNN's cell is not (it runs inside the layer's loop),
and ``graph.skipped`` says so.  Dimension names come from what made a tensor
(``_keras_dims``).  See docs/backends.md.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tensortap.backends._keras_batches import loop_over_batches as _loop_over_batches
from tensortap.backends._keras_batches import sample_bytes as _sample_bytes
from tensortap.backends._keras_inputs import (
    input_specs,
    output_names,
    prepare_inputs,
    signature,
    structure_inputs,
)
from tensortap.backends._keras_trace import (
    RecordedTensor,
    Recorder,
    layer_paths,
    walk_layers,
    wrapped_calls,
)
from tensortap.core.backend import Backend, BatchResult, CaptureSession
from tensortap.core.errors import ModelNotBuiltError, TargetError, UnsupportedModelError
from tensortap.core.graph import (
    CaptureGraph,
    CaptureNode,
    SkippedNode,
    TensorSpec,
    default_dims,
    make_key,
)
from tensortap.core.stats import histogram_params, slot_bounds
from tensortap.core.targets import Target

__all__ = ["TensorFlowBackend", "TensorFlowSession"]

LOGITS = "logits (pre-softmax)"
OUTPUT = "model output"

#: Traced graphs and steps outlive one capture: re-tracing a MobileNetV2 costs about a second,
#: more than capturing a batch, and callbacks or notebooks capture the same model again and
#: again.  Entries are keyed by ``id(model)`` and checked through a weak reference (an id can be
#: reused after the model dies); the cache is bounded because a traced step may keep its
#: model alive.  Variables are captured by reference, so steps see updated weights.
_CACHE_SIZE = 16
#: A group of batches run in one call holds at most this many bytes of tensors and batches
#: (:meth:`TensorFlowSession.batches_per_call`): the MLP of benchmarks/bench_small_layers.py
#: runs 128 batches of 32 to a call, its CNN (4.9 MB a batch) six, MobileNetV2 one.  32 MiB:
#: interleaved CNN captures at 8 / 16 / 32 MiB took 1.10 / 0.97 / 0.92 s wall and 1.38 /
#: 1.29 / 1.21 s CPU (medians of 5, load ~2.7); the MLP already reaches the batch cap.
_GROUP_BYTES = 32 << 20
_GROUP_BATCHES = 128
_graph_cache: OrderedDict[int, tuple[weakref.ref[Any], CaptureGraph]] = OrderedDict()
_step_cache: OrderedDict[tuple[Any, ...], tuple[weakref.ref[Any], Any]] = OrderedDict()


def _cached(cache: OrderedDict[Any, tuple[weakref.ref[Any], Any]], key: Any, model: Any) -> Any:
    entry = cache.get(key)
    if entry is None or entry[0]() is not model:
        return None
    cache.move_to_end(key)
    return entry[1]


def _remember(
    cache: OrderedDict[Any, tuple[weakref.ref[Any], Any]], key: Any, model: Any, value: Any
) -> None:
    cache[key] = (weakref.ref(model), value)
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _scores(output: Any) -> tuple[Any, str]:
    """The scores a class target differentiates: the logits feeding a final softmax, if any.

    Gradients of a softmax probability saturate and mix classes, so Grad-CAM and friends use
    the pre-softmax score (Selvaraju et al. 2017, §3).  In the traced graph the softmax is an
    op whose input *is* the logits tensor, so no layer has to be changed to get it.
    """
    tensor = output
    while tensor.op.type == "Identity":
        tensor = tensor.op.inputs[0]
    if tensor.op.type == "Softmax":
        return tensor.op.inputs[0], LOGITS
    return output, OUTPUT


def _flat_scores(scores: Any) -> Any:
    """Scores as ``(sample, class)``; a static class count needs no shape ops in the step."""
    width = scores.shape[1:].num_elements() if scores.shape.rank else None
    if width is not None:
        return tf.reshape(scores, [-1, width])
    return tf.reshape(scores, [tf.shape(scores)[0], -1])


def _picked(scores: Any, classes: Any) -> Any:
    """``scores[i, classes[i]]`` per sample, with a cheap gradient.

    On small layers the step's time is its op count, and ``tf.gather(batch_dims=1)``'s
    gradient is a dozen ops (ranges, packs, an unsorted segment sum); a one-hot select
    and a row sum differentiate into three.  ``tf.where`` (not a product with the one-hot)
    keeps an infinite or NaN score of another class out of the value.  One score per
    sample (a sigmoid unit) is the value itself (its class can only be 0, checked before).
    """
    width = scores.shape[-1]
    if width == 1:
        return tf.reshape(scores, [-1])
    if width is None:
        return tf.gather(scores, classes, batch_dims=1)
    chosen = tf.one_hot(classes, width, on_value=True, off_value=False)
    return tf.reduce_sum(tf.where(chosen, scores, tf.zeros_like(scores)), axis=-1)


def _type_names(layer: Any) -> tuple[str, ...]:
    return tuple(f"{k.__module__}.{k.__qualname__}" for k in type(layer).__mro__)


def _node(record: RecordedTensor) -> CaptureNode:
    shape = tuple(None if s is None else int(s) for s in record.tensor.shape[1:])
    return CaptureNode(
        key=record.key,
        name=record.layer.name,
        layer_type=type(record.layer).__name__,
        path=record.path,
        shape=shape,
        dims=record.dims if len(record.dims) == len(shape) else default_dims(len(shape)),
        dtype=record.tensor.dtype.name,
        call_index=record.call_index,
        output_index=record.output_index,
        type_names=_type_names(record.layer),
    )


class TensorFlowBackend(Backend):
    """Captures Keras 3 models (Sequential, Functional, nested, subclassed) on TensorFlow."""

    name = "tensorflow"
    description = "Keras 3 / TensorFlow models (Sequential, Functional, nested, subclassed)"
    url = "https://keras.io"
    model_modules = ("keras", "tf_keras", "tensorflow")
    channels_last = True
    supports_gradients = True
    supports_attributions = True
    #: Off unless ``TENSORTAP_STEP_STATS=1``: on W1 the XLA statistics cost about as much
    #: CPU as the NumPy path (2.5 vs 2.3-3.0 core-s a batch; the histogram's scatter
    #: dominates) and compiling them takes ~11 s per model and batch shape
    #: (benchmarks/RESULTS.md, W1).
    supports_partial_stats = os.environ.get("TENSORTAP_STEP_STATS", "0") == "1"

    @classmethod
    def accepts(cls, model: Any) -> bool:
        return isinstance(model, keras.layers.Layer)

    # -- graph ---------------------------------------------------------------------------
    def graph(self, model: Any, inputs: Any = None) -> CaptureGraph:
        """Trace ``model`` symbolically (unknown batch size) and list every capturable tensor.

        ``inputs`` is ignored: a built Keras model knows its input shapes.

        Raises
        ------
        UnsupportedModelError
            For anything that is not a Keras layer or model.
        ModelNotBuiltError
            When the model has no known input shape.
        """
        _check_model(model)
        graph: CaptureGraph | None = _cached(_graph_cache, id(model), model)
        if graph is None:
            graph = _trace_graph(model)
            _remember(_graph_cache, id(model), model, graph)
        return graph

    def session(
        self,
        model: Any,
        nodes: Sequence[CaptureNode],
        *,
        gradients: bool = False,
        target: Target | None = None,
        attributions: Any = None,
    ) -> TensorFlowSession:
        return TensorFlowSession(
            model,
            self.graph(model),
            nodes,
            gradients=gradients,
            target=target,
            attributions=attributions,
        )

    # -- explanations (issue 17: core/attribution.py, core/explain.py) -------------------
    def input_gradients(self, model: Any, x: np.ndarray, classes: np.ndarray) -> Any:
        """``(d score[class] / d x, scores[class])`` per sample (one-input models)."""
        from ._keras_explain import input_gradients

        return input_gradients(model, x, classes)

    def scores(self, model: Any, x: np.ndarray) -> np.ndarray:
        """``(sample, class)`` scores, the logits feeding a final softmax if any."""
        from ._keras_explain import scores

        return scores(model, x)

    def ablated_scores(self, model: Any, key: str, x: np.ndarray, channel: int) -> np.ndarray:
        """Scores with channel ``channel`` of layer ``key``'s output zeroed (AblationCAM)."""
        from ._keras_explain import ablated_scores

        return ablated_scores(model, key, x, channel)

    # -- metadata ------------------------------------------------------------------------
    def model_info(self, model: Any) -> dict[str, Any]:
        _check_model(model)
        return {
            "name": model.name,
            "class": type(model).__name__,
            "params": int(model.count_params()),
        }

    def fingerprint(self, model: Any) -> str:
        """SHA-256 over the capture graph (keys, types, shapes) and every weight's bytes."""
        graph = self.graph(model)
        digest = hashlib.sha256(repr((graph.model_class, graph.inputs, graph.outputs)).encode())
        for node in graph:
            digest.update(repr((node.key, node.layer_type, node.shape)).encode())
        for weight in model.weights:
            # ``weight.numpy()``, not ``np.asarray(weight)``: NumPy 2 warns about every
            # ``__array__`` without ``copy=`` (one DeprecationWarning per weight)
            value = np.ascontiguousarray(weight.numpy())
            # by order and shape, not path: a reloaded model's paths lose the model name
            digest.update(repr((value.shape, value.dtype.str)).encode())
            digest.update(value.tobytes())
        return digest.hexdigest()[:16]

    # -- data and files ------------------------------------------------------------------
    def batches(self, data: Any, batch_size: int) -> Iterator[Any] | None:
        """A ``tf.data.Dataset`` as NumPy batches (``x`` or ``(x, y)``); ``None`` otherwise.

        An unbatched dataset (elements without a leading unknown axis) is batched with
        ``batch_size``; a batched one keeps its own batches.
        """
        if not isinstance(data, tf.data.Dataset):
            return None
        first = tf.nest.flatten(data.element_spec)[0]
        batched = first.shape.rank and first.shape[0] is None
        dataset = data if batched else data.batch(batch_size)
        return _numpy_batches(dataset)

    @classmethod
    def can_load(cls, path: str) -> bool:
        text = str(path)
        if text.endswith((".keras", ".h5")):
            return os.path.isfile(text)
        return os.path.isfile(os.path.join(text, "saved_model.pb"))

    def load_model(self, path: str) -> Any:
        """Load a ``.keras``/``.h5`` file, or wrap a SavedModel directory's serving signature.

        A SavedModel has no Keras layers any more, so its capture graph holds one node (the
        ``TFSMLayer``); save a ``.keras`` file to capture inner layers.
        """
        text = str(path)
        if text.endswith((".keras", ".h5")):
            return keras.saving.load_model(text, compile=False)
        layer = keras.layers.TFSMLayer(text, call_endpoint="serving_default")
        loaded = tf.saved_model.load(text)
        _, kwargs = loaded.signatures["serving_default"].structured_input_signature
        inputs = {
            name: keras.Input(shape=spec.shape[1:], dtype=spec.dtype.name, name=name)
            for name, spec in kwargs.items()
        }
        return keras.Model(inputs, layer(inputs), name=os.path.basename(text.rstrip("/")))


def _numpy_batches(dataset: Any) -> Iterator[Any]:
    for element in dataset.as_numpy_iterator():
        if isinstance(element, tuple) and len(element) >= 2:
            yield element[0], element[1]
        elif isinstance(element, tuple):
            yield element[0]
        else:
            yield element


def _host_array(tensor: Any) -> np.ndarray:
    """A read-only NumPy view of a CPU tensor's buffer, without a copy.

    ``EagerTensor.numpy()`` always copies (about half of a batch's time with W1's 855 MB of
    activations); ``memoryview`` is TensorFlow's documented zero-copy route and keeps the
    tensor's buffer alive as long as the array.  Tensors off the CPU, or of dtypes without
    a buffer format, fall back to ``numpy()``.
    """
    try:
        return np.asarray(memoryview(tensor))
    except (TypeError, ValueError, BufferError, NotImplementedError):
        return np.asarray(tensor.numpy())


def _channels_last3(tensor: Any, channel_last: bool | None) -> Any:
    """``tensor`` as (sample, positions, channel), like ``core.stats.to_channels_last``."""
    n = tf.shape(tensor)[0]
    channels = tf.shape(tensor)[-1] if channel_last else 1
    return tf.reshape(tensor, tf.stack([n, -1, channels]))


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise UnsupportedModelError(
            f"{type(model).__module__}.{type(model).__qualname__} is not a Keras 3 model; "
            "the tensorflow backend captures keras.Model / keras.layers.Layer objects"
        )


def _paths_by_id(paths: Mapping[tuple[str, ...], Any]) -> dict[int, tuple[str, ...]]:
    return {id(layer): path for path, layer in paths.items()}


def _unbatched(record: RecordedTensor) -> str | None:
    """Why a recorded tensor cannot be stored per sample, or ``None`` when it can."""
    shape = record.tensor.shape
    if shape.rank is None:
        return "its output has an unknown rank"
    if shape.rank == 0 or shape[0] is not None:
        # traced with an unknown batch size: a per-sample tensor's first axis is unknown
        return f"its output {tuple(shape)} has no batch axis first (reduced over the batch?)"
    return None


def _trace_graph(model: Any) -> CaptureGraph:
    if not model.built:
        raise ModelNotBuiltError(
            f"model {model.name!r} was never built; call the model on a batch (model(x[:1])) "
            "or give it an Input (keras.Input(shape=...)) before capturing"
        )
    specs = input_specs(model)
    paths, below_rnn = walk_layers(model)
    recorder = Recorder(paths=_paths_by_id(paths), layers=paths)
    seen: dict[str, Any] = {}

    def trace(*tensors: Any) -> Any:
        recorder.start()
        recorder.seed(list(tensors), [spec.dims for spec in specs])
        try:
            outputs = model(structure_inputs(model, specs, tensors), training=False)
        finally:
            seen["records"] = recorder.stop()
        flat = tf.nest.flatten(outputs)
        seen["names"] = output_names(model, outputs)
        seen["flat"] = flat
        seen["output_dims"] = [recorder.dims_of(t) for t in flat]
        seen["score"] = _scores(flat[0])[1]
        return flat

    with wrapped_calls(paths, recorder):
        tf.function(trace, autograph=False).get_concrete_function(*signature(specs))
    records: list[RecordedTensor] = seen["records"]
    nodes = tuple(_node(r) for r in records if _unbatched(r) is None)
    outputs = tuple(
        TensorSpec(
            name,
            tuple(t.shape[1:]),
            t.dtype.name,
            dims
            if dims is not None and len(dims) == t.shape.rank - 1
            else default_dims(t.shape.rank - 1),
        )
        for name, t, dims in zip(seen["names"], seen["flat"], seen["output_dims"], strict=True)
    )
    last = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    return CaptureGraph(
        framework="tensorflow",
        model_name=model.name,
        model_class=type(model).__name__,
        nodes=nodes,
        inputs=specs,
        outputs=outputs,
        params=int(model.count_params()),
        extra={"score": seen["score"], "n_classes": last},
        skipped=_skipped(paths, below_rnn, records, recorder.inner),
    )


def _skipped(
    paths: Mapping[tuple[str, ...], Any],
    below_rnn: Sequence[tuple[tuple[str, ...], Any, str]],
    records: Sequence[RecordedTensor],
    inner: Mapping[str, Any],
) -> tuple[SkippedNode, ...]:
    """Every layer or op of the model that gave no capture node, with the reason."""
    skipped = [SkippedNode(make_key(p), type(layer).__name__, why) for p, layer, why in below_rnn]
    for record in records:
        why = _unbatched(record)
        if why is not None:
            skipped.append(SkippedNode(record.key, type(record.layer).__name__, why))
    recorded = {id(r.layer) for r in records}
    for path, layer in paths.items():
        key = make_key(path)
        if id(layer) in recorded:
            continue
        if key in inner:
            why = (
                "called only inside a control-flow body (tf.while_loop / tf.cond), whose "
                "tensors cannot leave it; capture the layer that owns the loop"
            )
        else:
            why = "not called when the model runs (training=False)"
        skipped.append(SkippedNode(key, type(layer).__name__, why))
    return tuple(skipped)


def _stats_layout(node: CaptureNode) -> bool | None:
    """How a node's values group into channels for in-step statistics: ``True`` channel
    last, ``False`` no channel (one channel), ``None`` not reduced in the step (non-float
    dtypes, unknown rank: the NumPy path handles them)."""
    if not tf.as_dtype(node.dtype).is_floating or len(node.dims) != len(node.shape):
        return None
    channel = node.channel_dim
    if channel is None:
        return False
    return True if node.dims[-1] == channel else None


@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _layer_stats(x3: Any, scale: Any, offset: Any, bounds: Any, bins: int) -> tuple[Any, ...]:
    """Per-batch partial statistics of ``x3`` (sample, positions, channel) in one XLA
    kernel; the arrays of :data:`tensortap.core.stats.PARTIAL_KEYS`.

    XLA fuses the element-wise work into a few passes over the activation (the NumPy path
    makes about ten); sums accumulate in float64 (cast inside the fusion, never
    materialised).  The bin slot follows :func:`tensortap.core.stats.histogram_params`
    exactly (a float32 multiply-add guess corrected against ``bounds``,
    :func:`tensortap.core.stats.slot_bounds`); non-finite values go to an extra slot that
    is dropped.
    """
    x = tf.cast(x3, tf.float32)
    finite = tf.math.is_finite(x)
    clean = tf.where(finite, x, tf.zeros_like(x))
    count = tf.reduce_sum(tf.cast(finite, tf.int32), axis=1)
    wide = tf.cast(clean, tf.float64)  # fused by XLA: no float64 copy is materialised
    total = tf.reduce_sum(wide, axis=1)
    squares = tf.reduce_sum(wide * wide, axis=1)
    low = tf.reduce_min(tf.where(finite, x, tf.fill(tf.shape(x), np.float32(np.inf))), axis=1)
    high = tf.reduce_max(tf.where(finite, x, tf.fill(tf.shape(x), np.float32(-np.inf))), axis=1)
    zeros = tf.reduce_sum(tf.cast(tf.equal(x, 0.0), tf.int32), axis=1)
    # a guess within one slot of the truth, corrected by exact comparisons with the bounds
    scale, offset, bounds = (tf.cast(v, tf.float32) for v in (scale, offset, bounds))
    guess = tf.clip_by_value(x * scale + offset, 0.0, float(bins + 1))
    slot = tf.cast(guess, tf.int32)
    slot -= tf.cast(x < tf.gather(bounds, slot), tf.int32)
    slot += tf.cast(x >= tf.gather(bounds, slot + 1), tf.int32)
    slot = tf.where(finite, slot, bins + 2)
    ones = tf.ones_like(slot)
    histogram = tf.math.unsorted_segment_sum(
        tf.reshape(ones, [-1]), tf.reshape(slot, [-1]), bins + 3
    )[: bins + 2]
    return count, total, squares, low, high, zeros, histogram


_PARTIAL_NAMES = ("count", "sum", "sumsq", "min", "max", "zeros", "histogram")


class TensorFlowSession(CaptureSession):
    """Captures fixed nodes of one Keras model, one traced step per input signature.

    The layers are wrapped only while a step is traced (first batch of each signature);
    :meth:`close` drops the traced steps.  ``info["score"]`` says whether class targets
    used the pre-softmax logits or the model output.
    """

    def __init__(
        self,
        model: Any,
        graph: CaptureGraph,
        nodes: Sequence[CaptureNode],
        *,
        gradients: bool = False,
        target: Target | None = None,
        attributions: Any = None,
    ) -> None:
        super().__init__()
        self._model: Any = model
        #: ``AttributionSpec`` of input attributions traced into the step (_keras_attrib.py)
        self._attributions = attributions
        self._graph = graph
        self._keys = [node.key for node in nodes]
        unknown = [key for key in self._keys if key not in graph]
        if unknown:
            graph.select(unknown)  # raises LayerNotFoundError with suggestions
        wanted = {node.path for node in nodes}
        self._layers = {p: layer for p, layer in layer_paths(model).items() if p in wanted}
        self._gradients = gradients
        self._target = target or Target("predicted")
        self._steps: dict[Any, Any] = {}
        self._closed = False
        self._nodes = {node.key: node for node in nodes}
        # set by set_histogram_edges: the keys reduced in the step, their bin counts, and
        # (scale, offset) per key as the step's last input
        self._stat_keys: tuple[str, ...] = ()
        self._stat_bins: tuple[int, ...] = ()
        self._stat_params: np.ndarray | None = None
        self.info = {"score": graph.extra.get("score", OUTPUT), "target": self._target.describe()}

    def set_histogram_edges(self, edges: Mapping[str, np.ndarray]) -> None:
        """Reduce statistics in the compiled step from now on (``partial_stats``)."""
        keys = tuple(
            k for k in self._keys if k in edges and _stats_layout(self._nodes[k]) is not None
        )
        self._stat_keys = keys
        self._stat_bins = tuple(len(edges[k]) - 1 for k in keys)
        # one row per key: scale, offset, then the slot bounds (padded to the longest)
        width = 2 + max((b + 3 for b in self._stat_bins), default=0)
        self._stat_params = np.full((len(keys), width), np.inf)
        for row, key in zip(self._stat_params, keys, strict=True):
            bounds = slot_bounds(edges[key])
            row[:2] = histogram_params(np.asarray(edges[key]))
            row[2 : 2 + bounds.size] = bounds

    # -- running -------------------------------------------------------------------------
    def batches_per_call(self, batch_size: int) -> int:
        """Compute batches :meth:`run_batches` runs in one compiled call.

        Small layers (issue 12): a compiled call costs about a millisecond of Python and
        TensorFlow dispatch whatever the batch, as much as the MLP's whole forward and
        backward pass, so batches whose tensors stay small run many to a call, in an
        in-graph loop.  Large batches (MobileNetV2's 855 MB) gain nothing and would pay one
        more copy of every tensor, so they run one to a call; so do steps that take more
        than one batch's inputs (input attributions, in-step statistics).
        """
        if self._attributions is not None or self._stat_keys:
            return 1
        per_sample = _sample_bytes(
            [self._nodes[key] for key in self._keys], self._graph.outputs, self._gradients
        )
        if per_sample is None:
            return 1
        fitting = _GROUP_BYTES // max(1, per_sample * batch_size)
        return int(max(1, min(_GROUP_BATCHES, fitting)))

    def run_batches(
        self,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        batch_size: int,
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> BatchResult:
        """Run consecutive batches of ``batch_size`` samples in one compiled call.

        The model sees each batch alone, exactly as :meth:`run` would (an in-graph loop
        calls the single-batch step on each slice), so every value is bit-identical to
        running the batches one by one; ``inputs`` hold a whole number of batches, or one
        shorter batch.
        """
        if self._closed:
            raise RuntimeError("this capture session is closed; open a new one")
        if self._attributions is not None or self._stat_keys:
            return super().run_batches(inputs, batch_size, classes=classes, labels=labels)
        arrays = prepare_inputs(self._graph.inputs, inputs)
        n = arrays[0].shape[0]
        if n > batch_size and n % batch_size:
            raise ValueError(f"{n} samples are not whole batches of {batch_size}")
        mode, label_spec, extra = self._mode(n, classes, labels)
        step = self._grouped_step(mode, label_spec)
        size = tf.constant(min(n, batch_size), dtype=tf.int32)
        return self._batch_result(step(size, *(tf.constant(a) for a in arrays), *extra))

    def _mode(
        self, n: int, classes: np.ndarray | None, labels: np.ndarray | None
    ) -> tuple[str, Any, list[Any]]:
        """The step's mode, the labels' spec (callable targets) and the step's extra inputs."""
        mode, label_spec, extra = "forward", None, []
        if self._gradients or self._attributions is not None:
            if self._target.kind == "callable":
                mode = "callable"
                if labels is not None:
                    labels = np.asarray(labels)
                    label_spec = tf.TensorSpec((None, *labels.shape[1:]), tf.as_dtype(labels.dtype))
                    extra.append(tf.constant(labels))
            else:
                classes = self._classes(n, classes, labels)
                mode = "predicted" if classes is None else "classes"
                if classes is not None:
                    extra.append(tf.constant(classes, dtype=tf.int64))
        return mode, label_spec, extra

    def run(
        self,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        classes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        start: int = 0,
    ) -> BatchResult:
        if self._closed:
            raise RuntimeError("this capture session is closed; open a new one")
        arrays = prepare_inputs(self._graph.inputs, inputs)
        n = arrays[0].shape[0]
        mode, label_spec, extra = self._mode(n, classes, labels)
        args: list[Any] = [*(tf.constant(a) for a in arrays), *extra]
        spec = self._attributions
        if spec is not None and spec.needs_noise:
            args.append(tf.constant(spec.noise(start, arrays[0])))
        if self._stat_keys:
            args.append(tf.constant(self._stat_params))
        return self._batch_result(self._step(mode, label_spec)(*args))

    def _batch_result(self, result: Mapping[str, Any]) -> BatchResult:
        """A step's tensors as NumPy arrays (zero-copy views where possible)."""
        outputs = {
            spec.name: _host_array(value)
            for spec, value in zip(self._graph.outputs, result["outputs"], strict=True)
        }
        activations = {
            k: _host_array(v) for k, v in zip(self._keys, result["activations"], strict=True)
        }
        gradients = (
            {k: _host_array(v) for k, v in zip(self._keys, result["gradients"], strict=True)}
            if "gradients" in result
            else {}
        )
        target_classes = result.get("classes")
        predictions = result.get("predictions")
        target_values = result.get("values")
        partial_stats = (
            {
                key: dict(zip(_PARTIAL_NAMES, (_host_array(v) for v in values), strict=True))
                for key, values in zip(self._stat_keys, result["stats"], strict=True)
            }
            if "stats" in result
            else None
        )
        return BatchResult(
            outputs=outputs,
            activations=activations,
            gradients=gradients,
            target_classes=None if target_classes is None else _host_array(target_classes),
            target_values=None if target_values is None else _host_array(target_values),
            partial_stats=partial_stats,
            predictions=None if predictions is None else _host_array(predictions),
            attributions={k: _host_array(v) for k, v in result.get("attributions", {}).items()},
        )

    def _classes(
        self, n: int, classes: np.ndarray | None, labels: np.ndarray | None
    ) -> np.ndarray | None:
        """Per-sample classes for a class-like target, checked against the model's classes."""
        target = self._target
        if classes is None and target.kind == "classes":
            if target.classes is None or len(target.classes) != n:
                raise TargetError(
                    "a per-sample target array must be passed batch by batch as classes=; "
                    f"got {None if target.classes is None else len(target.classes)} classes "
                    f"for a batch of {n}"
                )
            classes = target.classes
        elif classes is None and target.kind in ("class", "label"):
            classes = target.batch_classes(0, n, labels)
        if classes is None:
            return None
        classes = np.asarray(classes).reshape(-1).astype(np.int64)
        if classes.shape != (n,):
            raise TargetError(f"got {classes.shape[0]} target classes for a batch of {n} samples")
        n_classes = self._graph.extra.get("n_classes")
        if (
            n_classes is not None
            and classes.size
            and (classes.min() < 0 or classes.max() >= n_classes)
        ):
            raise TargetError(
                f"target classes range over {classes.min()}..{classes.max()} but the model's "
                f"first output has {n_classes} classes (0..{n_classes - 1})"
            )
        return classes

    def _step(self, mode: str, label_spec: Any) -> Any:
        cache_key = (
            id(self._model),
            tuple(self._keys),
            mode,
            None if label_spec is None else (tuple(label_spec.shape), label_spec.dtype),
            self._target.function if mode == "callable" else None,
            self._stat_keys,
            self._stat_bins,
            self._attributions,
        )
        if cache_key not in self._steps:
            step = _cached(_step_cache, cache_key, self._model)
            if step is None:
                step = self._trace_step(mode, label_spec)
                _remember(_step_cache, cache_key, self._model, step)
            self._steps[cache_key] = step
        return self._steps[cache_key]

    def _grouped_step(self, mode: str, label_spec: Any) -> Any:
        """The loop over batches around :meth:`_step` (cached like it)."""
        single = self._step(mode, label_spec)
        cache_key = ("batches", single)
        if cache_key not in self._steps:
            step = _cached(_step_cache, cache_key, self._model)
            if step is None:
                step = _loop_over_batches(single)
                _remember(_step_cache, cache_key, self._model, step)
            self._steps[cache_key] = step
        return self._steps[cache_key]

    def _trace_step(self, mode: str, label_spec: Any) -> Any:
        model, graph, keys = self._model, self._graph, self._keys
        recorder = Recorder(paths=_paths_by_id(self._layers), watch_keys=frozenset(keys))
        target = self._target
        n_inputs = len(graph.inputs)
        stat_keys, stat_bins = self._stat_keys, self._stat_bins
        layouts = [_stats_layout(self._nodes[key]) for key in stat_keys]
        first = graph.outputs[0].shape if graph.outputs else ()
        classify = len(first) == 1 and bool(first[0]) and first[0] > 1  # as core.blocks
        spec, gradients = self._attributions, self._gradients
        noisy = spec is not None and spec.needs_noise

        def scores_of(rows: Any) -> Any:  # the scores the target differentiates
            found, _ = _scores(
                tf.nest.flatten(
                    model(structure_inputs(model, graph.inputs, [rows]), training=False)
                )[0]
            )
            return tf.reshape(found, [tf.shape(found)[0], -1])

        def step(*args: Any) -> dict[str, Any]:
            if stat_keys:
                args, params = args[:-1], args[-1]
            if noisy:
                args, noise = args[:-1], args[-1]
            tensors, extra = args[:n_inputs], args[n_inputs:]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                if spec is not None:
                    tape.watch(tensors[0])  # the input gradient of this very pass
                recorder.start(tape if mode != "forward" else None)
                try:
                    outputs = model(structure_inputs(model, graph.inputs, tensors), training=False)
                finally:
                    records = {r.key: r.tensor for r in recorder.stop()}
                missing = [key for key in keys if key not in records]
                if missing:
                    raise RuntimeError(f"layers {missing} did not run in this trace")
                flat = tf.nest.flatten(outputs)
                result: dict[str, Any] = {
                    "outputs": flat,
                    "activations": [records[key] for key in keys],
                }
                if classify:
                    # the argmax a "predicted" target uses, of the same scores (logits)
                    result["predictions"] = tf.argmax(_scores(flat[0])[0], axis=-1)
                if mode == "callable":
                    labels = extra[0] if extra else None
                    assert target.function is not None
                    values = tf.reshape(target.function(outputs, labels), [-1])
                elif mode != "forward":
                    scores, _ = _scores(flat[0])
                    scores = _flat_scores(scores)
                    classes = (
                        result["predictions"]
                        if mode == "predicted" and classify
                        else tf.argmax(scores, axis=-1)
                        if mode == "predicted"
                        else extra[0]
                    )
                    values = _picked(scores, classes)
                    result["classes"] = classes
                if mode != "forward":
                    # samples are independent, so d(sum)/d(activation) is per-sample
                    total = tf.reduce_sum(values)  # inside the tape: it must be recorded
            if mode != "forward":
                result["values"] = values
                sources = list(result["activations"]) if gradients else []
                found = tape.gradient(
                    total,
                    sources + ([tensors[0]] if spec is not None else []),
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                if gradients:
                    result["gradients"] = found[: len(sources)]
                if spec is not None:
                    from ._keras_attrib import input_attributions

                    result["attributions"] = input_attributions(
                        spec,
                        scores_of,
                        tensors[0],
                        found[-1],
                        result["classes"],
                        noise if noisy else None,
                    )
            if stat_keys:
                result["stats"] = [
                    _layer_stats(
                        _channels_last3(records[key], channel_last),
                        params[i, 0],
                        params[i, 1],
                        params[i, 2 : bins + 5],
                        bins,
                    )
                    for i, (key, channel_last, bins) in enumerate(
                        zip(stat_keys, layouts, stat_bins, strict=True)
                    )
                ]
            return result

        specs = signature(graph.inputs)
        if mode == "classes":
            specs.append(tf.TensorSpec((None,), tf.int64, name="classes"))
        if label_spec is not None:
            specs.append(label_spec)
        if noisy:
            assert spec is not None
            one = specs[0]
            specs.append(tf.TensorSpec((spec.n_samples, *one.shape), one.dtype, name="noise"))
        if stat_keys:
            width = 2 + max(b + 3 for b in stat_bins)
            specs.append(tf.TensorSpec((len(stat_keys), width), tf.float64, name="histogram"))
        with wrapped_calls(self._layers, recorder):
            return tf.function(step, autograph=False).get_concrete_function(*specs)

    def close(self) -> None:
        """Drop the traced steps and the model reference; safe to call twice.

        The layer wrappers already left when each trace ended (``wrapped_calls``'s
        ``finally``); nothing else was attached to the model.
        """
        self._steps.clear()
        self._closed = True
        self._model = None
