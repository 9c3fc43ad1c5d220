"""The exploration notebook: stored without outputs, paired with its script, and it runs.

The notebook is executed top to bottom in a real Jupyter kernel (nbclient
+ ipykernel) on the session's small curated run (``THRESHER_RUN_DIR``); on
the full sample corpus it runs the same way after ``make demo``.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.curated_run import curated_run

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def test_notebook_is_stored_without_outputs_and_paired() -> None:
    stored = nbformat.read(NOTEBOOKS / "explore.ipynb", as_version=4)
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert stored.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    script = jupytext.read(NOTEBOOKS / "explore.py")
    assert [(c.cell_type, c.source) for c in script.cells] == [
        (c.cell_type, c.source) for c in stored.cells
    ], "explore.py and explore.ipynb differ: run `jupytext --sync notebooks/explore.py`"


def test_notebook_runs_on_a_curated_run(
    tmp_path_factory: pytest.TempPathFactory,
    small_corpus: Path,
    prefect_server: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = curated_run(tmp_path_factory, small_corpus)

    def files() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}

    before = files()
    monkeypatch.setenv("THRESHER_RUN_DIR", str(run_dir))
    notebook = nbformat.read(NOTEBOOKS / "explore.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # the kernel runs this interpreter (jupyter_client maps "python" to it)

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "scored documents, scores: word_count, alpha_fraction, minhash_length" in text
    assert "quantile_band" in text and "jaccard" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # score distributions, and what each selector keeps
    assert files() == before  # trying selectors wrote nothing
