"""The ``capture``, ``info`` and ``graph`` commands' work (cli.py holds only the options)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tensortap.core.errors import UnsupportedModelError

__all__ = ["backend_name_for_file", "capture_command", "graph_command", "info_text", "load_model"]


def backend_name_for_file(path: str) -> str:
    """The backend that loads a model file: ``.keras``/``.h5``/SavedModel -> tensorflow,
    ``.pt``/``.pth`` -> torch."""
    p = Path(path)
    if p.suffix in (".keras", ".h5") or (p.is_dir() and (p / "saved_model.pb").is_file()):
        return "tensorflow"
    if p.suffix in (".pt", ".pth"):
        return "torch"
    raise UnsupportedModelError(
        f"cannot load a model from {path!r}: use a .keras file or a SavedModel folder"
    )


def load_model(path: str) -> tuple[Any, Any]:
    """``(backend, model)`` for a model file."""
    from tensortap.core.registry import get_backend

    if not os.path.exists(path):
        raise UnsupportedModelError(
            f"model {path!r} does not exist; give a .keras file or a SavedModel folder"
        )
    backend = get_backend(backend_name_for_file(path))
    try:
        return backend, backend.load_model(path)
    except Exception as err:  # a framework's loading error: show one line
        raise UnsupportedModelError(
            f"cannot load model {path!r}: {str(err).splitlines()[0] if str(err) else err!r}"
        ) from err


def capture_command(
    model_path: str,
    data_path: str,
    output: str,
    *,
    layers: tuple[str, ...],
    gradients: bool,
    target: str,
    batch_size: int,
    dtype: str | None,
    resume: bool,
    overwrite: bool,
    image_size: tuple[int, int] | None,
    progress: bool,
    workers: int | None = None,
) -> str:
    """Run a capture (on ``workers`` local Dask processes when given); returns the summary."""
    from tensortap.core.engine import capture
    from tensortap.datafiles import load_data

    data = load_data(data_path, image_size)
    options = {
        "layers": list(layers) or "*",
        "gradients": gradients,
        "target": target,
        "batch_size": batch_size,
        "dtype": dtype,
        "resume": resume,
        "overwrite": overwrite,
        "progress": progress,
    }
    if workers:
        return _capture_on_workers(model_path, data_path, data, output, workers, **options)
    backend, model = load_model(model_path)
    run = capture(model, data.as_capture_data(), store=output, backend=backend, **options)
    return f"{run.status}: {run.samples} samples, {len(run.layers)} layers -> {run.path}"


def model_from_file(path: str) -> Any:
    """The model in ``path`` (the factory each Dask worker calls for ``--workers``)."""
    return load_model(path)[1]


def _capture_on_workers(
    model_path: str, data_path: str, data: Any, output: str, workers: int, **options: Any
) -> str:
    import functools

    from distributed import Client, LocalCluster

    from tensortap.core.distributed import capture_distributed

    load_model(model_path)  # fail here, in one line, before starting any worker
    # A .npy file is opened by path on each worker; other data travel range by range.
    captured = (
        (data_path if data.y is None else (data_path, data.y))
        if str(data_path).endswith(".npy")
        else data.as_capture_data()
    )
    factory = functools.partial(model_from_file, os.path.abspath(model_path))
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        run = capture_distributed(factory, captured, output, client=client, **options)
    return f"{run.status}: {run.samples} samples, {len(run.layers)} layers -> {run.path}"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


def info_text(path: str) -> str:
    """The ``tensortap info`` report."""
    from tensortap.core.run import open_run

    run = open_run(path)
    a = run.attrs
    stored = run.stored_bytes()
    logical = run.logical_bytes()
    total = "?" if run.total is None else str(run.total)
    model = a.get("model") or {}
    lines = [
        f"run:        {run.path}",
        f"status:     {run.status}",
        f"samples:    {run.samples} committed / {total}",
        f"model:      {model.get('name')} ({model.get('class')}, {a.get('framework')}, "
        f"{model.get('params', 0):,} params)",
        f"target:     {a.get('target')}  gradients: {'yes' if a.get('gradients') else 'no'}",
        f"storage:    dtype {a.get('dtype') or 'as computed'}, codec {a.get('codec')}, "
        f"batch {a.get('batch_size')}",
        f"size:       {_size(stored)} on disk, {_size(logical)} uncompressed"
        + (f" (ratio {logical / stored:.2f}x)" if stored else ""),
        "",
    ]
    rows = [("layer", "type", "shape", "dtype")]
    for key in run.layers:
        if run.samples:
            act = run.activation(key)
            shape = (
                "(" + ", ".join(f"{d}={n}" for d, n in zip(act.dims, act.shape, strict=True)) + ")"
            )
            rows.append((key, str(run.node(key).get("layer_type")), shape, str(act.dtype)))
        else:
            rows.append((key, "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return "\n".join(lines)


def graph_command(model_path: str) -> str:
    """The capture graph of a model file, as a table."""
    backend, model = load_model(model_path)
    return str(backend.graph(model))
