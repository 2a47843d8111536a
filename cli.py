"""The ``tensortap`` command line (``python -m tensortap``).

Every command has ``--help``.  Bad input ends with one line on stderr, ``error: ...``,
and exit status 2 — never a traceback (``TensortapError`` and ``click.UsageError``).
Commands stay thin: they parse options and call the library.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import click

from tensortap.core.errors import TensortapError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow (and probe its devices) with stderr muted, when it is installed.

    Its C++ runtime prints oneDNN and CUDA notices through absl *before* logging is set
    up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; they would bury the one line a
    command prints.  An import error still raises (and prints) after stderr is back.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe prints its own notice
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Group(click.Group):
    """Turns tensortap's own errors into one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TensortapError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tensortap")
def main() -> None:
    """Capture, store and look at what every layer of a neural network computes."""


@main.command()
def demo() -> None:
    """Train a small CNN on scikit-learn's digits, capture it, and summarise every layer."""
    from tensortap.demo import run_demo

    _import_tensorflow_quietly()
    run_demo()


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. Loopback by default: other machines cannot connect.",
)
@click.option("--port", default=5006, show_default=True, type=click.IntRange(0, 65535))
@click.option("--show/--no-show", default=False, help="Open a browser tab.", show_default=True)
def serve(path: str, address: str, port: int, show: bool) -> None:
    """Serve an interactive app over PATH: one run, or a folder searched for runs.

    Only runs under PATH can be opened, whatever the URL asks for.  Live mode follows a
    capture that is still writing.  Stop with Ctrl-C.
    """
    from tensortap.viz.server import serve as serve_runs

    # A missing PATH or one without runs raises RunNotFoundError: one line, exit 2.
    serve_runs(path, address=address, port=port, show=show)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("-o", "--output", required=True, help="Run folder or s3:// URL to write.")
@click.option("--layers", "layers", multiple=True, help="Glob, key or re:regex; repeatable.")
@click.option("--gradients", is_flag=True, help="Also capture gradients of the target.")
@click.option(
    "--target", default="predicted", show_default=True, help="predicted, label, or a class index."
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--dtype", default=None, help="Storage dtype of activations, e.g. float16.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run.")
@click.option(
    "--image-size",
    nargs=2,
    type=int,
    default=None,
    metavar="H W",
    help="Resize images of a DATA folder.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
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
    dtype: str | None,
    resume: bool,
    overwrite: bool,
    image_size: tuple[int, int] | None,
    no_progress: bool,
    workers: int | None,
) -> None:
    """Capture MODEL (.keras or SavedModel) on DATA (.npy, .npz or image folder) into a run."""
    from tensortap.cli_capture import capture_command

    _import_tensorflow_quietly()
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
        )
    )


@main.command()
@click.argument("run", type=click.Path())
def info(run: str) -> None:
    """Summarise RUN: status, samples, layers, shapes, dtypes, size and compression."""
    from tensortap.cli_capture import info_text

    click.echo(info_text(run))


@main.command()
@click.argument("model", type=click.Path())
def graph(model: str) -> None:
    """Print MODEL's capture graph: every key you can select with --layers."""
    from tensortap.cli_capture import graph_command

    _import_tensorflow_quietly()
    click.echo(graph_command(model))


@main.command()
@click.argument("run", type=click.Path())
@click.option(
    "--view",
    required=True,
    type=click.Choice(["heatmap", "distribution", "cam", "layers"]),
    help="heatmap: feature maps; distribution: a layer's histogram (all layers "
    "without --layer); cam: CAM over the input; layers: every layer's "
    "distribution and dead units.",
)
@click.option(
    "--layer", default=None, help="Layer key (default: first spatial layer; last for cam)."
)
@click.option("--sample", default=0, show_default=True, type=int, help="Sample position.")
@click.option("--channel", default=None, type=int, help="One channel for --view heatmap.")
@click.option(
    "--method",
    default="gradcam",
    show_default=True,
    help="CAM method: gradcam, gradcam++, layercam, hirescam, xgradcam.",
)
@click.option("--width", default=None, type=click.IntRange(min=16), help="PNG width in pixels.")
@click.option("-o", "--output", required=True, help="OUT.png or OUT.html (self-contained).")
def export(
    run: str,
    view: str,
    layer: str | None,
    sample: int,
    channel: int | None,
    method: str,
    width: int | None,
    output: str,
) -> None:
    """Write one view of RUN to a PNG or a self-contained HTML file."""
    from tensortap.cli_export import export_command

    path = export_command(
        run, view, output, layer=layer, sample=sample, channel=channel, method=method, width=width
    )
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
