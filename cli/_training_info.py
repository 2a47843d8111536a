"""``tensortap info`` for a training run (issue 14): its steps, policy, trigger and layers."""

from __future__ import annotations

from typing import Any

__all__ = ["training_info_text"]


def training_info_text(run: Any) -> str:
    """The ``tensortap info`` report of a :class:`~tensortap.core.training_run.TrainingRun`."""
    a = run.attrs
    model = a.get("model") or {}
    steps = run.step_values
    span = f"{steps[0]}..{steps[-1]}" if len(steps) else "none yet"
    trigger = run.trigger
    lines = [
        f"run:        {run.path} (training run)",
        f"status:     {run.status}",
        f"steps:      {len(steps)} committed ({span}), {len(run.tensor_steps)} with tensors",
        f"probe:      {run.samples} samples",
        f"model:      {model.get('name')} ({model.get('class')}, {a.get('framework')}, "
        f"{model.get('params', 0):,} params)",
        f"policy:     {a.get('policy')}",
        "trigger:    "
        + (
            "none"
            if trigger is None
            else f"non-finite at step {trigger['step']} in {trigger['layer']} ({trigger['where']})"
        ),
        f"size:       {run.stored_bytes() / 1e6:.1f} MB on disk",
        "",
    ]
    rows = [("layer", "type", "dims")]
    for key in run.layers:
        node = run.node(key)
        rows.append((key, str(node.get("layer_type")), "(" + ", ".join(node.get("dims", [])) + ")"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
    return "\n".join(lines)
