"""``tensortap info`` and ``tensortap graph``: describe a run, or the capture graph of a model file."""

from __future__ import annotations

from typing import Any

import click

from tensortap.cli._tensorflow import import_tensorflow_quietly

__all__ = ["MODEL_FORMATS", "graph", "graph_command", "info", "info_text"]


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
    if hasattr(run, "step_values"):  # a training run (issue 14)
        from tensortap.cli._training_info import training_info_text

        return training_info_text(run)
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
    if run.samples:
        lines += unit_lines(run)
    return "\n".join(lines)


def _indices(units: list[int], shown: int = 24) -> str:
    text = ", ".join(str(u) for u in units[:shown])
    return f"[{text}{', ...' if len(units) > shown else ''}]"


def unit_lines(run: Any) -> list[str]:
    """``dead units`` lines of the report: each layer's dead and saturated units by index."""
    from tensortap.core.unit_health import unit_health

    lines = ["", "dead units (never > 0) and saturated units, by index:"]
    found = False
    for row in unit_health(run):
        parts = []
        if row["dead"]:
            parts.append(f"{row['dead']} of {row['channels']} dead {_indices(row['dead_units'])}")
        if row["saturated"]:
            parts.append(f"{row['saturated']} saturated {_indices(row['saturated_units'])}")
        if parts:
            found = True
            inherit = "  (inherited from its input)" if row["derived"] else ""
            lines.append(f"  {row['layer']}: {'; '.join(parts)}{inherit}")
    if not found:
        lines.append("  none")
    return lines


#: What ``tensortap graph`` and ``capture`` load, for help texts and errors.
MODEL_FORMATS = (
    "a Keras .keras/.h5 file, a TensorFlow SavedModel folder, or a PyTorch .pt/.pth file "
    "holding a whole nn.Module (torch.save(model, path))"
)


def _example_batch(input_shape: str | None, example: str | None) -> Any:
    """The example batch a PyTorch graph is traced from: zeros of ``--input-shape``
    (per sample, e.g. ``3,32,32``) or the first samples of ``--example`` (a data file)."""
    import numpy as np

    from tensortap.core.errors import DataError

    if example is not None:
        from tensortap.cli.datafiles import load_data

        # .npy inputs are memory-mapped (read-only): copy the two samples traced
        return np.array(load_data(example, None).x[:2])
    assert input_shape is not None
    try:
        shape = tuple(int(n) for n in input_shape.replace("x", ",").split(",") if n.strip())
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise DataError(
            f"--input-shape {input_shape!r} is not a per-sample shape; give positive whole "
            "numbers, e.g. --input-shape 3,32,32 for one image of 3 channels, 32×32"
        )
    return np.zeros((2, *shape), dtype=np.float32)


def graph_command(
    model_path: str, input_shape: str | None = None, example: str | None = None
) -> str:
    """The capture graph of a model file, as a table.

    A PyTorch model has no graph until it runs: it is traced from ``input_shape`` zeros or
    the ``example`` data file.
    """
    import warnings

    from tensortap.cli.capture import load_model
    from tensortap.core.errors import UnsupportedModelError

    with warnings.catch_warnings():  # torch.load's "only load files you trust": said below
        warnings.simplefilter("ignore", UserWarning)
        backend, model = load_model(model_path)
    if backend.name != "torch":
        return str(backend.graph(model))
    if input_shape is None and example is None:
        raise UnsupportedModelError(
            f"{model_path!r} is a PyTorch model, whose graph is traced from an example batch: "
            "add --input-shape C,H,W (e.g. 3,32,32) or --example FILE (.npy/.npz/image folder)"
        )
    return str(backend.graph(model, _example_batch(input_shape, example)))


@click.command()
@click.argument("run", type=click.Path())
def info(run: str) -> None:
    """Summarise RUN: status, samples, layers, shapes, dtypes, size and compression."""
    click.echo(info_text(run))


@click.command(
    help="Print MODEL's capture graph: every key you can select with --layers. MODEL is "
    + MODEL_FORMATS
    + "; a PyTorch model is traced from --input-shape or --example. PyTorch files are "
    "unpickled: load only files you trust."
)
@click.argument("model", type=click.Path())
@click.option(
    "--input-shape",
    default=None,
    help="PyTorch: the shape of one sample, e.g. 3,32,32 (traced with zeros).",
)
@click.option(
    "--example",
    default=None,
    type=click.Path(),
    help="PyTorch: a data file whose first samples are traced (.npy, .npz, image folder).",
)
def graph(model: str, input_shape: str | None, example: str | None) -> None:
    import_tensorflow_quietly()
    click.echo(graph_command(model, input_shape, example))
