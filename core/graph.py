"""The capture graph: what a backend can capture in a model, framework-free.

A :class:`CaptureGraph` is the uniform view every backend produces: an ordered tuple of
:class:`CaptureNode` (one per layer call and output), plus the model's inputs and outputs
as :class:`TensorSpec`.  Selections, the run store and the views only ever see this.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tensortap.core.errors import DimsError, LayerNotFoundError

__all__ = [
    "CaptureGraph",
    "CaptureNode",
    "SkippedNode",
    "TensorSpec",
    "channel_dim",
    "default_dims",
    "make_key",
    "override_dims",
]

#: Dimension names by per-sample rank, for channels-last frameworks (Keras).
_CHANNELS_LAST_DIMS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("unit",),
    2: ("time", "feature"),
    3: ("height", "width", "channel"),
    4: ("depth", "height", "width", "channel"),
}
#: Dimension names by per-sample rank, for channels-first frameworks (PyTorch).
_CHANNELS_FIRST_DIMS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("unit",),
    2: ("time", "feature"),
    3: ("channel", "height", "width"),
    4: ("channel", "depth", "height", "width"),
}
#: Dimension names that play the role of "channel" for statistics, in order of preference.
CHANNEL_DIM_NAMES = ("channel", "unit", "feature")


def default_dims(rank: int, *, channels_last: bool = True) -> tuple[str, ...]:
    """Dimension names for a per-sample tensor of ``rank`` dimensions.

    Parameters
    ----------
    rank : int
        Number of dimensions, the batch axis excluded.
    channels_last : bool
        ``True`` for NHWC frameworks (Keras), ``False`` for NCHW (PyTorch).

    Returns
    -------
    tuple of str
        e.g. ``("height", "width", "channel")``; ranks above 4 get ``dim_0, dim_1, ...``.
    """
    table = _CHANNELS_LAST_DIMS if channels_last else _CHANNELS_FIRST_DIMS
    return table.get(rank, tuple(f"dim_{i}" for i in range(rank)))


def channel_dim(dims: tuple[str, ...]) -> str | None:
    """The dimension statistics are grouped by (``channel``, ``unit`` or ``feature``), if any."""
    for name in CHANNEL_DIM_NAMES:
        if name in dims:
            return name
    return None


def make_key(path: tuple[str, ...], call_index: int = 0, output_index: int | None = None) -> str:
    """The canonical node key: layer path joined by dots, ``@k`` for the k-th call, ``:i`` for output i.

    >>> make_key(("mobilenetv2", "block_1_expand"))
    'mobilenetv2.block_1_expand'
    >>> make_key(("shared_dense",), call_index=1)
    'shared_dense@1'
    >>> make_key(("lstm",), output_index=1)
    'lstm:1'
    """
    key = ".".join(path)
    if call_index:
        key += f"@{call_index}"
    if output_index:
        key += f":{output_index}"
    return key


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, per-sample shape, dtype and dimension names of a model input or output.

    ``shape`` excludes the batch axis; unknown sizes are ``None``.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    dims: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.dims):
            raise ValueError(f"{self.name}: shape {self.shape} and dims {self.dims} differ in rank")


@dataclass(frozen=True, slots=True)
class CaptureNode:
    """One capturable tensor: one output of one call of one layer.

    Attributes
    ----------
    key : str
        Unique, stable key (see :func:`make_key`); the run store's group name.
    name : str
        The layer's own name in its framework.
    layer_type : str
        Class name of the layer (``"Conv2D"``).
    path : tuple of str
        Names from the outermost model down to the layer.
    call_index : int
        Which call of a layer used more than once (0 for the first).
    output_index : int
        Which output of a layer with several outputs (0 for the first).
    shape : tuple of int or None
        Per-sample output shape (batch axis excluded).
    dims : tuple of str
        Dimension names of ``shape``.
    dtype : str
        NumPy dtype name of the output.
    type_names : tuple of str
        ``module.qualname`` of every class in the layer's MRO, so a selection by layer
        class works without importing the framework here.
    """

    key: str
    name: str
    layer_type: str
    path: tuple[str, ...]
    shape: tuple[int | None, ...]
    dims: tuple[str, ...]
    dtype: str = "float32"
    call_index: int = 0
    output_index: int = 0
    type_names: tuple[str, ...] = field(default=(), repr=False)

    @property
    def channel_dim(self) -> str | None:
        """Name of the channel-like dimension statistics are grouped by, if any."""
        return channel_dim(self.dims)

    @property
    def is_spatial(self) -> bool:
        """``True`` when the output has ``height`` and ``width`` (a CAM can be computed)."""
        return "height" in self.dims and "width" in self.dims


@dataclass(frozen=True, slots=True)
class SkippedNode:
    """A layer or operation of the model that is no capture node, and why.

    ``print(graph)`` lists them below the nodes, so a user sees what ``layers="*"`` left out
    (an RNN's cell running inside the layer's time loop, an output without a batch axis).
    """

    key: str
    layer_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class CaptureGraph:
    """Ordered capture nodes of one model, with its inputs and outputs.

    Iterating yields nodes in model (execution) order; ``graph[key]`` finds one.
    ``print(graph)`` shows a table of keys, layer types, shapes and dims.
    """

    framework: str
    model_name: str
    model_class: str
    nodes: tuple[CaptureNode, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    skipped: tuple[SkippedNode, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for node in self.nodes:
            if node.key in seen:
                raise ValueError(f"duplicate capture key {node.key!r}")
            seen.add(node.key)

    def __iter__(self) -> Iterator[CaptureNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, key: object) -> bool:
        return any(node.key == key for node in self.nodes)

    def __getitem__(self, key: str) -> CaptureNode:
        for node in self.nodes:
            if node.key == key:
                return node
        from tensortap.core.selection import select_nodes

        found: tuple[CaptureNode, ...] = select_nodes(self, [key])  # raises, with suggestions
        return found[0]

    @property
    def keys(self) -> tuple[str, ...]:
        """Node keys in model order."""
        return tuple(node.key for node in self.nodes)

    def select(self, layers: Any = "*") -> tuple[CaptureNode, ...]:
        """Nodes chosen by a selection; see :func:`tensortap.core.selection.select_nodes`."""
        from tensortap.core.selection import select_nodes

        nodes: tuple[CaptureNode, ...] = select_nodes(self, layers)
        return nodes

    def table(self) -> str:
        """The graph as a fixed-width text table."""
        rows = [("key", "type", "shape", "dims")]
        for node in self.nodes:
            shape = "(" + ", ".join("?" if s is None else str(s) for s in node.shape) + ")"
            rows.append((node.key, node.layer_type, shape, ", ".join(node.dims)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}"
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        inputs = ", ".join(f"{s.name}{tuple(s.shape)}" for s in self.inputs)
        outputs = ", ".join(f"{s.name}{tuple(s.shape)}" for s in self.outputs)
        header = (
            f"{self.model_class} {self.model_name!r} ({self.framework}, {self.params:,} params)\n"
            f"inputs: {inputs}\noutputs: {outputs}\n"
        )
        text = header + "\n".join(lines)
        if self.skipped:
            text += "\nnot capturable:\n" + "\n".join(
                f"  {s.key} ({s.layer_type}): {s.reason}" for s in self.skipped
            )
        return text

    def __str__(self) -> str:
        return self.table()


def override_dims(
    nodes: Sequence[CaptureNode], dims: Mapping[str, Sequence[str]] | None
) -> tuple[CaptureNode, ...]:
    """``nodes`` with the dimension names of some keys replaced by the user's.

    A backend names dimensions from what a layer is; where it cannot know (a custom layer
    whose ``(a, b, c)`` output is really an image), ``dims={"key": ("height", "width",
    "channel")}`` says so, and CAMs and views then treat the layer as spatial.

    Parameters
    ----------
    nodes : sequence of CaptureNode
        The selected nodes.
    dims : mapping of str to sequence of str, optional
        New dimension names by node key, one per per-sample axis, all different.

    Returns
    -------
    tuple of CaptureNode

    Raises
    ------
    LayerNotFoundError
        A key that is not among ``nodes``.
    DimsError
        Names whose count differs from the node's rank, or repeated names.
    """
    if not dims:
        return tuple(nodes)
    keys = {node.key for node in nodes}
    unknown = sorted(set(dims) - keys)
    if unknown:
        raise LayerNotFoundError(
            f"dims= names {unknown}, which are not captured layers; use keys of the "
            f"selected layers ({', '.join(sorted(keys)[:8])}{', ...' if len(keys) > 8 else ''})"
        )
    result = []
    for node in nodes:
        if node.key not in dims:
            result.append(node)
            continue
        names = tuple(str(name) for name in dims[node.key])
        if len(names) != len(node.shape) or len(set(names)) != len(names):
            raise DimsError(
                f"dims={{{node.key!r}: {names}}} does not fit the layer's per-sample shape "
                f"{node.shape}; give {len(node.shape)} different names, e.g. "
                f"{default_dims(len(node.shape))}"
            )
        result.append(replace(node, dims=names))
    return tuple(result)
