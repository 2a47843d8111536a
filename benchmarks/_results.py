"""One place that edits ``benchmarks/RESULTS.md``: each benchmark owns one ``## `` section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(title: str, section: str, results: Path = RESULTS) -> None:
    """Replace the section that starts with ``title`` (or append it), leaving the others alone.

    Parameters
    ----------
    title : str
        The section's heading line, e.g. ``"## Views"``.
    section : str
        The whole section, heading included.
    results : Path
        The file to edit.
    """
    text = results.read_text() if results.exists() else "# Benchmark results\n\n"
    start = text.find(title)
    if start >= 0:
        end = text.find("\n## ", start + len(title))
        rest = "" if end < 0 else "\n" + text[end + 1 :]  # keep the blank line before it
        text = text[:start] + section.rstrip("\n") + "\n" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text)
