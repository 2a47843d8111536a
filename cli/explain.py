"""``tensortap explain``: explanations that need the model, stored into a run.

ScoreCAM, AblationCAM, occlusion and the input attributions run the model on the run's
stored inputs; the results go into the run, where ``tensortap export --view cam --method``
shows them.  ``--faithfulness`` then scores methods by deletion / insertion AUC.
"""

from __future__ import annotations

from typing import Any

import click

from tensortap.core.attribution import ATTRIBUTION_METHODS
from tensortap.core.cam import CAM_METHODS
from tensortap.core.explain import MODEL_METHODS

__all__ = ["explain", "explain_command"]


def explain_command(
    model_path: str,
    run_path: str,
    methods: tuple[str, ...],
    layer: str | None = None,
    target: str = "predicted",
    steps: int = 32,
    samples: int = 16,
    faithfulness: tuple[str, ...] = (),
) -> list[str]:
    """Compute ``methods`` for the run at ``run_path`` with the model; lines to print."""
    from tensortap.cli.capture import load_model
    from tensortap.core.explain import explain as explain_run
    from tensortap.core.faithfulness import faithfulness as score_methods
    from tensortap.core.run import open_run

    run = open_run(run_path)  # fail on a bad run before loading a model
    backend, model = load_model(model_path)
    chosen: Any = int(target) if target.lstrip("-").isdigit() else target
    lines = []
    for method in methods:
        result = explain_run(
            model, run, method, layer, target=chosen, steps=steps, n_samples=samples,
            backend=backend, progress=True,
        )  # fmt: skip
        lines.append(f"stored {method} ({', '.join(map(str, result.shape))})")
    if faithfulness:
        scores = score_methods(
            model, run, list(faithfulness), layer, target=chosen, backend=backend
        )
        for method in faithfulness:
            one = scores.sel(method=method)
            lines.append(
                f"{method}: deletion AUC {float(one['deletion_auc'].mean()):.3f}, "
                f"insertion AUC {float(one['insertion_auc'].mean()):.3f}"
            )
    return lines


@click.command()
@click.argument("model", type=click.Path())
@click.argument("run", type=click.Path())
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice((*MODEL_METHODS, *ATTRIBUTION_METHODS)),
    help="Explanation to compute and store (repeatable).",
)
@click.option("--layer", default=None, help="Spatial layer for scorecam / ablationcam.")
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    help="predicted, label, or a class index.",
)
@click.option(
    "--steps", default=32, show_default=True, type=click.IntRange(min=1), help="IG path points."
)
@click.option(
    "--samples",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="SmoothGrad copies.",
)
@click.option(
    "--faithfulness",
    multiple=True,
    type=click.Choice((*CAM_METHODS, *MODEL_METHODS, *ATTRIBUTION_METHODS)),
    help="Score this method by deletion / insertion AUC (repeatable; stored ones only).",
)
def explain(
    model: str,
    run: str,
    methods: tuple[str, ...],
    layer: str | None,
    target: str,
    steps: int,
    samples: int,
    faithfulness: tuple[str, ...],
) -> None:
    """Explain RUN's samples with MODEL (ScoreCAM, occlusion, Integrated Gradients...)."""
    if not methods and not faithfulness:
        raise click.UsageError("give at least one --method or --faithfulness")
    for line in explain_command(model, run, methods, layer, target, steps, samples, faithfulness):
        click.echo(line)
