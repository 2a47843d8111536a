"""docs/notebook.ipynb runs in a real Jupyter kernel (nbclient) and its outputs hold
rendered plots, not the text HoloViews shows when no notebook extension was loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

NOTEBOOK = Path(__file__).parents[1] / "docs" / "notebook.ipynb"
#: The MIME type HoloViews gives a plot rendered for the notebook (Bokeh back end).
PLOT_MIME = "application/vnd.holoviews_exec.v0+json"


def test_the_docs_notebook_renders_its_views_as_plots(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    view_cells = [c for c in notebook.cells if c.cell_type == "code" and "viz." in c.source]
    view_cells = [c for c in view_cells if c.source.strip().startswith("viz.")]
    assert len(view_cells) >= 4
    for cell in view_cells:
        data = [o.get("data", {}) for o in cell.outputs if o.output_type == "execute_result"]
        assert data, f"no result for {cell.source!r}"
        # Without the notebook extension a view has only its text/plain repr (":NdLayout").
        assert PLOT_MIME in data[0], f"{cell.source!r} rendered as text: {list(data[0])}"
        assert "bokeh" in data[0].get("text/html", "").lower()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "runs" / "notebook.zarr").is_dir()
