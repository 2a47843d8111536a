"""The app's view state and its URL form: what a shared or bookmarked link restores.

``?run=exp/a.zarr&tab=cam&layer=conv2&sample=5&channel=2&method=layercam&class=3``: every
key is optional, and a value the page cannot honour (a layer the run lacks, a sample past
its end) is dropped with a notice, never an error page.  The run id itself is validated by
:class:`~tensortap.viz.catalog.RunCatalog`, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["URL_KEYS", "ViewState"]

#: Query keys, in the order they are written into the URL.
URL_KEYS = (
    "run",
    "tab",
    "step",
    "layer",
    "sample",
    "channel",
    "method",
    "class",
    "compare",
    "filter",
)
_INTEGER_KEYS = ("step", "sample", "channel", "class")
#: Longest value read from the URL: ids and layer keys are short; anything longer is junk.
_MAX_VALUE_CHARS = 512


@dataclass(frozen=True, slots=True)
class ViewState:
    """One view of the app, as a link carries it.

    Attributes
    ----------
    run
        Run id in the catalog (``exp/a.zarr``).
    tab
        Tab slug: ``feature-maps``, ``samples``, ``distributions``, ``cam``, ``compare``,
        ``training``.
    step
        Training step shown (training runs only).
    layer
        Layer key.
    sample, channel
        Positions (committed sample, channel of the layer).
    method
        CAM method.
    class_
        Class of the CAM grid (``class`` in the URL); ``None`` for every class.
    compare
        Run id compared with.
    filter
        Sample filter of the gallery (``all``, ``correct``, ``misclassified``…).
    """

    run: str | None = None
    tab: str | None = None
    step: int | None = None
    layer: str | None = None
    sample: int | None = None
    channel: int | None = None
    method: str | None = None
    class_: int | None = None
    compare: str | None = None
    filter: str | None = None

    @classmethod
    def from_query(cls, arguments: Mapping[str, Any]) -> tuple[ViewState, list[str]]:
        """Parse query arguments (``pn.state.session_args`` or a plain ``dict``).

        Values may be ``str``, ``bytes`` or lists of either (Tornado gives lists of bytes).

        Returns
        -------
        ViewState, list of str
            The state, and one line per value that was dropped and why.
        """
        values: dict[str, Any] = {}
        problems: list[str] = []
        for key in URL_KEYS:
            raw = arguments.get(key)
            if isinstance(raw, (list, tuple)):
                raw = raw[0] if raw else None
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            if raw is None:
                continue
            text = str(raw)
            if len(text) > _MAX_VALUE_CHARS:
                problems.append(f"URL value of {key!r} is longer than {_MAX_VALUE_CHARS} chars")
                continue
            if key in _INTEGER_KEYS:
                try:
                    number = int(text)
                except ValueError:
                    problems.append(
                        f"URL value {key}={text!r} is not a whole number; it was ignored"
                    )
                    continue
                if number < 0:
                    problems.append(f"URL value {key}={number} is negative; it was ignored")
                    continue
                values[key] = number
            else:
                values[key] = text
        if "class" in values:
            values["class_"] = values.pop("class")
        return cls(**values), problems

    def to_query(self) -> dict[str, str]:
        """The URL's query arguments, without the unset ones."""
        out: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out[field.name.rstrip("_")] = str(value)
        return {key: out[key] for key in URL_KEYS if key in out}

    def with_(self, **changes: Any) -> ViewState:
        """A copy with ``changes`` (``class_=`` for the class)."""
        return replace(self, **changes)
