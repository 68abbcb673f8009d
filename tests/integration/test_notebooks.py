"""Every tutorial notebook runs top to bottom with small settings (``NOTEBOOK_SMALL=1``)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# One line per notebook: its file name and the time it may take with small settings (seconds).
NOTEBOOKS = {
    "01_squid_digit_anatomy.ipynb": 900,
    "03_synthetic_tasks.ipynb": 300,
}


@pytest.mark.parametrize(("name", "timeout"), NOTEBOOKS.items(), ids=list(NOTEBOOKS))
def test_notebook_runs(name: str, timeout: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("NOTEBOOK_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("NOTEBOOK_WORK_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
