"""Where each layer's statistics lie in the run's one statistics group (schema 2).

Schema 1 gave every layer a ``stats`` group of five arrays, so a block wrote four small
statistics objects per layer (W1's 52 layers: 208 a block, 8,957 files for 1,024 samples).
Schema 2 stores every layer's statistics in the root group ``stats``, along one flat
``stat_channel`` axis (and flat histogram slots and bin edges): a block writes four
statistics objects whatever the number of layers.  The group's attrs give each layer's span
on each flat axis; :class:`StatsIndex` reads them (docs/store-format.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["StatsIndex"]


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + int(size))
    return offsets


@dataclass(frozen=True, slots=True)
class StatsIndex:
    """Each layer's span along the flat statistics axes.

    Attributes
    ----------
    layers : tuple of str
        Layer keys, in the order their spans follow each other.
    channels, slots, edges : tuple of int
        Offsets (``len(layers) + 1``) along ``stat_channel``, ``stat_slot`` and
        ``stat_bin_edge``: layer *i* spans ``[offsets[i], offsets[i + 1])``.
    """

    layers: tuple[str, ...]
    channels: tuple[int, ...]
    slots: tuple[int, ...]
    edges: tuple[int, ...]

    @classmethod
    def from_sizes(
        cls, layers: Sequence[str], channels: Sequence[int], edges: Sequence[int]
    ) -> StatsIndex:
        """The index of layers with ``channels`` channels and ``edges`` bin edges each
        (a histogram has ``edges + 2`` slots: the bins, underflow, overflow, zeros)."""
        return cls(
            tuple(layers),
            tuple(_offsets(channels)),
            tuple(_offsets([e + 2 for e in edges])),
            tuple(_offsets(edges)),
        )

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StatsIndex:
        """The index stored in the statistics group's attrs (see :meth:`attrs`)."""
        return cls(
            tuple(attrs["layers"]),
            tuple(int(v) for v in attrs["channel_offsets"]),
            tuple(int(v) for v in attrs["slot_offsets"]),
            tuple(int(v) for v in attrs["edge_offsets"]),
        )

    def attrs(self) -> dict[str, Any]:
        """The attrs that store this index."""
        return {
            "layers": list(self.layers),
            "channel_offsets": list(self.channels),
            "slot_offsets": list(self.slots),
            "edge_offsets": list(self.edges),
        }

    def _span(self, offsets: tuple[int, ...], key: str) -> slice:
        i = self.layers.index(key)
        return slice(offsets[i], offsets[i + 1])

    def channel_span(self, key: str) -> slice:
        """The layer's channels on ``stat_channel``."""
        return self._span(self.channels, key)

    def slot_span(self, key: str) -> slice:
        """The layer's histogram slots on ``stat_slot``."""
        return self._span(self.slots, key)

    def edge_span(self, key: str) -> slice:
        """The layer's bin edges on ``stat_bin_edge``."""
        return self._span(self.edges, key)
