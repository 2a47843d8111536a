"""Class names: validated once, stored in the run's attrs, shown wherever a class is.

``tt.capture(..., class_names=[...])``, ``tensortap capture --class-names`` and
``CaptureCallback(class_names=...)`` store them as ``attrs["tensortap"]["class_names"]``;
views name a label or a prediction ``"3 (cat)"`` from them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from tensortap.core.errors import DataError

__all__ = ["check_class_names", "class_label", "parse_class_names", "record_class_names"]


def check_class_names(names: Any, n_classes: int | None) -> list[str] | None:
    """``names`` as a list of strings, checked against the model's number of classes.

    Raises
    ------
    DataError
        Not a sequence of strings, duplicated names, or a length other than the classes
        of the model's first output.
    """
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise DataError(
            f"class_names must be a list of strings, got {type(names).__name__} {names!r:.60}; "
            "pass e.g. class_names=['cat', 'dog']"
        )
    listed = [str(n) for n in names]
    if not listed:
        raise DataError("class_names is empty; pass one name per class or leave it out")
    if len(set(listed)) != len(listed):
        repeated = sorted({n for n in listed if listed.count(n) > 1})
        raise DataError(f"class_names repeats {repeated}; give each class its own name")
    if n_classes is not None and len(listed) != n_classes:
        raise DataError(
            f"got {len(listed)} class_names but the model's output has {n_classes} classes; "
            f"give exactly {n_classes} names, in class-index order"
        )
    return listed


def parse_class_names(text: str) -> list[str]:
    """Names from the command line: a file with one name a line, or ``"cat,dog,..."``."""
    path = Path(os.path.expanduser(text))
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def class_label(value: Any, names: Sequence[str] | None) -> str:
    """``"3 (cat)"`` when ``names`` has class 3, else ``"3"``."""
    try:
        index = int(value)
    except (TypeError, ValueError):
        return str(value)
    if names and 0 <= index < len(names) and index == value:
        return f"{index} ({names[index]})"
    return str(value)


def record_class_names(
    store: Any, names: Sequence[str], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Store ``names`` in an existing run's attrs (a run captured without them, or by Dask
    workers, which take no names); checked against the run's stored output."""
    import zarr

    from tensortap.core.run import open_run
    from tensortap.core.store import layout
    from tensortap.core.store.storage import open_location

    run = open_run(store, storage_options)
    output = run.outputs()
    n_classes = int(output.shape[-1]) if output is not None and output.ndim == 2 else None
    checked = check_class_names(list(names), n_classes) or []
    group = zarr.open_group(open_location(store, storage_options, read_only=False).store, mode="r+")
    attrs = dict(cast("dict[str, Any]", group.attrs.get(layout.ATTRS_KEY) or {}))
    attrs["class_names"] = checked
    group.attrs.update({layout.ATTRS_KEY: attrs})
    return checked
