"""``tensortap verify``: check every committed chunk of a run; ``--repair`` uncommits damage."""

from __future__ import annotations

import sys

import click

__all__ = ["verify", "verify_text"]


def verify_text(path: str, *, repair: bool, progress: bool) -> tuple[str, bool]:
    """The ``tensortap verify`` report and whether the run was sound."""
    from tensortap.core.verify import verify as verify_run

    report = verify_run(path, repair=repair, progress=progress)
    if report.ok:
        return (
            f"ok: {report.path}: {report.chunks} chunks checked, {report.committed} committed "
            "samples, no damage",
            True,
        )
    lines = [
        f"damaged: {report.path}: {len(report.problems)} problems in {report.chunks} chunks "
        "checked",
        report.table(),
    ]
    if report.repaired:
        blocks = ", ".join(map(str, report.repaired))
        lines.append(
            f"repaired: blocks {blocks} marked uncommitted; run `tensortap capture ... -o "
            f"{report.path} --resume` with the same model and data to recompute them"
        )
    elif repair and not report.unrepairable:
        explained = sorted(
            {p.array.split("/")[1] for p in report.problems if p.array.startswith("explanations/")}
        )
        if explained:
            lines.append(
                f"repaired: damaged explanations deleted ({', '.join(explained)}); compute "
                "them again with `tensortap explain`"
            )
        if len(explained) < len({p.array for p in report.problems}):
            lines.append("repaired: damaged statistics summaries removed (readers recompute them)")
    if report.unrepairable:
        lines.append(
            f"not repairable: {len(report.unrepairable)} problems no block accounts for; "
            "capture the run again with --overwrite"
        )
    elif not repair:
        lines.append(f"fix: `tensortap verify {report.path} --repair`, then capture with --resume")
    return "\n".join(lines), False


@click.command()
@click.argument("run", type=click.Path())
@click.option(
    "--repair",
    is_flag=True,
    help="Mark blocks with a damaged chunk uncommitted, so `capture --resume` recomputes them.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def verify(run: str, repair: bool, no_progress: bool) -> None:
    """Read every committed chunk of RUN and check it (exit 0: sound, 1: damaged)."""
    text, ok = verify_text(run, repair=repair, progress=not no_progress)
    click.echo(text)
    if not ok:
        sys.exit(1)
