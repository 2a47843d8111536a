"""``tensortap capture``: a model file and a data file into a run, in one process or on Dask workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from tensortap.cli._tensorflow import import_tensorflow_quietly
from tensortap.core.errors import UnsupportedModelError

__all__ = ["backend_name_for_file", "capture", "capture_command", "load_model"]


def backend_name_for_file(path: str) -> str:
    """The backend that loads a model file: ``.keras``/``.h5``/SavedModel -> tensorflow,
    ``.pt``/``.pth`` -> torch."""
    p = Path(path)
    if p.suffix in (".keras", ".h5") or (p.is_dir() and (p / "saved_model.pb").is_file()):
        return "tensorflow"
    if p.suffix in (".pt", ".pth"):
        return "torch"
    raise UnsupportedModelError(
        f"cannot load a model from {path!r}: use a .keras/.h5 file, a SavedModel folder, or a .pt/.pth file of a torch.save(d) nn.Module"
    )


def load_model(path: str) -> tuple[Any, Any]:
    """``(backend, model)`` for a model file."""
    from tensortap.core.registry import get_backend

    if not os.path.exists(path):
        raise UnsupportedModelError(
            f"model {path!r} does not exist; give a .keras/.h5 file, a SavedModel folder or a PyTorch .pt/.pth file"
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
    class_names: str | None = None,
    block_size: int | None = None,
    chunk_bytes: int | None = None,
    strict: bool = False,
    attributions: str | None = None,
    attribution_options: dict[str, Any] | None = None,
) -> str:
    """Run a capture (on ``workers`` local Dask processes when given); returns the summary."""
    from tensortap.cli.datafiles import load_data
    from tensortap.core.class_names import parse_class_names, record_class_names
    from tensortap.core.engine import capture
    from tensortap.core.validation import check_storage_dtype

    check_storage_dtype(dtype)  # before loading anything, also for --workers
    data = load_data(data_path, image_size)
    options = {
        "layers": list(layers) or "*",
        "gradients": gradients,
        # "predicted,label" or "label,3": several targets, each one stored (--gradients).
        "target": [t.strip() for t in target.split(",")] if "," in target else target,
        "batch_size": batch_size,
        "dtype": dtype,
        "resume": resume,
        "overwrite": overwrite,
        "progress": progress,
        "block_size": block_size,
        "chunk_bytes": chunk_bytes,
    }
    names = parse_class_names(class_names) if class_names else None
    if strict:
        options["strict"] = True
    if attributions:  # with --workers too: each worker computes its blocks' attributions
        options["attributions"] = attributions
        options["attribution_options"] = attribution_options or {}
    if workers:
        summary = _capture_on_workers(model_path, data_path, data, output, workers, **options)
        if names:
            record_class_names(output, names)
        return summary
    backend, model = load_model(model_path)
    run = capture(
        model, data.as_capture_data(), store=output, backend=backend, class_names=names, **options
    )
    return f"{run.status}: {run.samples} samples, {len(run.layers)} layers -> {run.path}"


def model_from_file(path: str) -> Any:
    """The model in ``path`` (the factory each Dask worker calls for ``--workers``)."""
    return load_model(path)[1]


def _capture_on_workers(
    model_path: str, data_path: str, data: Any, output: str, workers: int, **options: Any
) -> str:
    import functools
    import logging

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
    # A failed range is re-raised here as the one error line; the workers' own logging of
    # it ("Compute Failed" and its traceback) would add lines to stderr.
    quiet = logging.CRITICAL
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=quiet
        ) as cluster,
        Client(cluster) as client,
    ):
        run = capture_distributed(factory, captured, output, client=client, **options)
    return f"{run.status}: {run.samples} samples, {len(run.layers)} layers -> {run.path}"


@click.command()
@click.argument("model", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("-o", "--output", required=True, help="Run folder or s3:// URL to write.")
@click.option("--layers", "layers", multiple=True, help="Glob, key or re:regex; repeatable.")
@click.option("--gradients", is_flag=True, help="Also capture gradients of the target.")
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    help="predicted, label, a class index, topK, or several comma-separated "
    "(predicted,label): one gradient per target.",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--block-size",
    default=None,
    type=click.IntRange(min=1),
    help="Samples per storage block (chunk and commit), a multiple of --batch-size "
    "[default: sized by bytes].",
)
@click.option(
    "--chunk-bytes",
    default=None,
    type=click.IntRange(min=1),
    help="Target bytes of the median array's chunk when sizing blocks [default: 67108864].",
)
@click.option(
    "--dtype", default=None, help="Storage dtype of activations: float16, float32 or float64."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run.")
@click.option(
    "--image-size",
    nargs=2,
    type=click.IntRange(min=1),
    default=None,
    metavar="H W",
    help="Resize images of a DATA folder.",
)
@click.option(
    "--class-names",
    default=None,
    metavar="NAMES",
    help="Class names in index order: 'cat,dog,...' or a text file with one name a line.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--strict", is_flag=True, help="Refuse data holding NaN or infinite values.")
@click.option(
    "--attributions",
    default=None,
    metavar="METHODS",
    help="Input attributions computed in the capture step, comma-separated: saliency, "
    "gradient_x_input, smoothgrad, integrated_gradients (or gxi, sg, ig); with --workers, "
    "each worker computes those of its blocks (the same values as one process).",
)
@click.option(
    "--sg-samples",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="SmoothGrad's noisy copies.",
)
@click.option(
    "--sg-sigma",
    default=0.15,
    show_default=True,
    type=float,
    help="SmoothGrad's noise std, in input units.",
)
@click.option(
    "--ig-steps",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Integrated Gradients' path points.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="SmoothGrad's noise seed.")
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Capture with N Dask worker processes (a local cluster).",
)
def capture(
    model: str,
    data: str,
    output: str,
    layers: tuple[str, ...],
    gradients: bool,
    target: str,
    batch_size: int,
    block_size: int | None,
    chunk_bytes: int | None,
    dtype: str | None,
    resume: bool,
    overwrite: bool,
    image_size: tuple[int, int] | None,
    class_names: str | None,
    no_progress: bool,
    strict: bool,
    attributions: str | None,
    sg_samples: int,
    sg_sigma: float,
    ig_steps: int,
    seed: int,
    workers: int | None,
) -> None:
    """Capture MODEL (.keras/.h5, SavedModel folder, or .pt/.pth of a whole nn.Module) on
    DATA (.npy, .npz or image folder) into a run."""
    import_tensorflow_quietly()
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; choose one")
    click.echo(
        capture_command(
            model,
            data,
            output,
            layers=layers,
            gradients=gradients,
            target=target,
            batch_size=batch_size,
            dtype=dtype,
            resume=resume,
            overwrite=overwrite,
            image_size=tuple(image_size) if image_size else None,
            progress=not no_progress,
            workers=workers,
            class_names=class_names,
            block_size=block_size,
            chunk_bytes=chunk_bytes,
            strict=strict,
            attributions=attributions,
            attribution_options={
                "n_samples": sg_samples,
                "sigma": sg_sigma,
                "steps": ig_steps,
                "seed": seed,
            },
        )
    )
