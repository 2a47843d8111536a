"""Names, paths and encodings of the run store, schema 2 (docs/design.md §4, docs/store-format.md).

One place for every name a reader or writer uses, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tensortap.core.errors import OptionError

if TYPE_CHECKING:
    from zarr.abc.codec import BytesBytesCodec

__all__ = [
    "ATTRS_KEY",
    "COMMIT",
    "DEFAULT_CODEC",
    "SCHEMA",
    "Codec",
    "compressors_for",
    "input_path",
    "layer_path",
    "output_path",
    "run_stats_path",
    "stats_path",
]

#: Schema version written in ``attrs["tensortap"]["schema"]``.
SCHEMA = 2
#: Schemas this version reads: 1 kept a ``stats`` group per layer (see :data:`RUN_STATS`).
READABLE_SCHEMAS = (1, 2)
#: Root attribute holding tensortap's metadata block.
ATTRS_KEY = "tensortap"

# Root arrays.
SAMPLE = "sample"
LABEL = "label"
PREDICTION = "prediction"
#: The class each sample's gradients differentiate (class-like targets, gradients=True).
TARGET_CLASS = "target_class"
#: The dimension of several targets' gradients (``gradient(sample, target, ...)``).
TARGET_DIM = "target"
#: The commit record: samples committed per block, one chunk per block (see commit.py).
COMMIT = "committed"
#: CRC-32C of each block's model inputs as fed, checked by a resume (issue 20).
INPUT_DIGEST = "input_digest"

# Groups.
INPUTS = "inputs"
OUTPUTS = "outputs"
LAYERS = "layers"
#: Input attributions computed by the capture step (``capture(attributions=...)``).
ATTRIBUTIONS = "attributions"
STATS = "stats"

# Arrays of a layer group.
ACTIVATION = "activation"
GRADIENT = "gradient"

#: Schema 2: the root group holding every layer's statistics along flat axes
#: (core/store/run_stats.py); schema 1 had a ``stats`` group in each layer's group.
RUN_STATS = "stats"

# Arrays of the statistics group (schema 2: ``/stats``; schema 1: each layer's ``stats``).
BIN_EDGES = "bin_edges"
BLOCK_MOMENTS = "block_moments"
BLOCK_HISTOGRAM = "block_histogram"
SAMPLE_MEAN = "sample_mean"
SAMPLE_MAX = "sample_max"
# Written when a capture ends: the committed block partials merged into one (a cache; the
# attr ``committed`` says how many committed samples it covers, readers check it).
SUMMARY_MOMENTS = "summary_moments"
SUMMARY_HISTOGRAM = "summary_histogram"

# Dimension names that are not layer dims.
BLOCK_DIM = "block"
MOMENT_DIM = "moment"
SLOT_DIM = "histogram_slot"
BIN_EDGE_DIM = "bin_edge"
CHANNEL_DIM = "channel"
#: Schema 2's flat axes of the statistics group: every layer's channels, histogram slots
#: and bin edges one after the other.
STAT_CHANNEL_DIM = "stat_channel"
STAT_SLOT_DIM = "stat_slot"
STAT_EDGE_DIM = "stat_bin_edge"


def layer_path(key: str) -> str:
    """Group path of a capture node."""
    return f"{LAYERS}/{key}"


def run_stats_path(name: str) -> str:
    """Array path in the statistics group (schema 2)."""
    return f"{RUN_STATS}/{name}"


def stats_path(key: str) -> str:
    """Group path of a layer's statistics in a schema 1 run."""
    return f"{LAYERS}/{key}/{STATS}"


def input_path(name: str) -> str:
    """Array path of a stored model input."""
    return f"{INPUTS}/{name}"


def output_path(name: str) -> str:
    """Array path of a stored model output."""
    return f"{OUTPUTS}/{name}"


def attribution_path(method: str) -> str:
    """Array path of an input attribution computed at capture."""
    return f"{ATTRIBUTIONS}/{method}"


@dataclass(frozen=True, slots=True)
class Codec:
    """A named compression setting for activation and gradient arrays.

    ``name`` is one of ``"none"`` (uncompressed, the default — see docs/store-format.md
    for the measurement), ``"lz4"`` (Blosc LZ4 with byte shuffle), ``"zstd"`` (Zstandard,
    ``level``) or ``"blosc-zstd"``.
    """

    name: str = "lz4"
    level: int = 1

    def describe(self) -> str:
        """Short text for the run's attrs."""
        return self.name if self.name == "none" else f"{self.name}:{self.level}"


#: The default codec for activations and gradients (measured: docs/store-format.md).
DEFAULT_CODEC = Codec("none", 1)

_CODEC_NAMES = ("lz4", "zstd", "blosc-zstd", "none")


def parse_codec(codec: Codec | str | None) -> Codec:
    """A :class:`Codec` from ``None`` (default), a name, or ``"name:level"``."""
    if codec is None or codec == "default":
        return DEFAULT_CODEC
    if isinstance(codec, Codec):
        return codec
    name, _, level = str(codec).partition(":")
    if name not in _CODEC_NAMES or (level and not level.isdigit()):
        raise OptionError(
            f"unknown codec {codec!r}; use one of {list(_CODEC_NAMES)}, optionally with ':<level>'"
        )
    return Codec(name, int(level) if level else DEFAULT_CODEC.level)


def compressors_for(codec: Codec, itemsize: int) -> tuple[BytesBytesCodec, ...] | None:
    """The ``compressors=`` argument of ``zarr.create_array`` for a codec."""
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    if codec.name == "none":
        return None
    if codec.name == "zstd":
        return (ZstdCodec(level=codec.level),)
    cname: Literal["lz4", "zstd"] = "lz4" if codec.name == "lz4" else "zstd"
    return (
        BloscCodec(
            cname=cname, clevel=codec.level, shuffle=BloscShuffle.shuffle, typesize=itemsize
        ),
    )
