"""The repository stands alone: its docs link only files it holds (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "build", "runs", "node_modules", "__pycache__"}
TEXT = {".md", ".py", ".toml", ".txt", ".cfg", ".ipynb", ""}
# A Markdown link or image target: [text](target) — not URLs, not in-page anchors.
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _files() -> list[Path]:
    return [
        p
        for p in ROOT.rglob("*")
        if p.is_file()
        and not SKIP.intersection(p.relative_to(ROOT).parts)
        and not any(part.endswith(".egg-info") for part in p.parts)
        and p.suffix in TEXT
    ]


def test_nothing_refers_to_files_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|\bDESIGN\.md")
    offences = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _files()
        if p.name != "test_repository.py"
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not offences, offences


def test_markdown_links_resolve() -> None:
    documents = [p for p in _files() if p.suffix == ".md"]
    assert ROOT / "README.md" in documents and ROOT / "docs" / "design.md" in documents
    broken = [
        f"{doc.relative_to(ROOT)} -> {target}"
        for doc in documents
        for target in LINK.findall(doc.read_text())
        if "://" not in target
        and not target.startswith("mailto:")
        and not (doc.parent / target).exists()
    ]
    assert not broken, broken


def test_readme_links_the_design_notes() -> None:
    assert "(docs/design.md)" in (ROOT / "README.md").read_text()


def test_every_package_folder_is_installed() -> None:
    """pyproject lists packages by hand (the repository root is ``tensortap``): a folder
    missing from the list is absent from a non-editable install (viz.app once was)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(("tensortap", *init.parent.relative_to(ROOT).parts))
        for init in ROOT.rglob("__init__.py")
        if not SKIP.intersection(init.relative_to(ROOT).parts)
        and init.relative_to(ROOT).parts[0] not in ("tests", "benchmarks")
    }
    assert found == listed, (sorted(found - listed), sorted(listed - found))
