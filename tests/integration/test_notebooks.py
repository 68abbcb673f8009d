"""Every tutorial notebook runs top to bottom with small settings (``NOTEBOOK_SMALL=1``)."""

import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import Squid
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# One line per notebook: its file name and the time it may take with small settings (seconds).
NOTEBOOKS = {
    "01_squid_digit_anatomy.ipynb": 900,
    "03_synthetic_tasks.ipynb": 300,
    "04_brain_mri_3d.ipynb": 300,
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


def _call_keywords(source: str, callee: str) -> dict[str, object]:
    """Literal keyword arguments of the first call to ``callee`` in ``source`` (names left out)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == callee:
            literals = {}
            for keyword in node.keywords:
                try:
                    literals[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:  # a notebook variable (EPOCHS, DATA_ROOT, ...)
                    continue
            return literals
    msg = f"no call to {callee}"
    raise AssertionError(msg)


def test_squid_notebook_uses_the_cpu_recipe() -> None:
    """The Squid notebook claims to train the CPU recipe: its literal arguments must be the recipe's."""
    notebook = nbformat.read(NOTEBOOK_DIR / "01_squid_digit_anatomy.ipynb", as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    recipe = yaml.safe_load((REPO_ROOT / "configs" / "squid_digit_anatomy.yaml").read_text())
    for cls, section in ((Squid, "model"), (DigitAnatomy, "data")):
        callee = cls.__name__
        arguments = _call_keywords(source, callee)
        expected = recipe[section]["init_args"]
        for name, value in arguments.items():
            assert name in expected, f"{callee}({name}=...) is not set by the recipe"
            assert value == expected[name], f"{callee}({name}={value!r}) but the recipe has {expected[name]!r}"
        defaults = {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()}
        left_to_default = {name: value for name, value in expected.items() if name not in arguments}
        for name, value in left_to_default.items():
            if name not in {"root", "scheduler_t_max"}:  # set from notebook variables
                default = list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name]
                assert default == value, f"{callee} misses {name}={value!r} (its default is {default!r})"
    epochs = re.search(r"^EPOCHS = 1 if SMALL else (\d+)$", source, re.MULTILINE)
    assert epochs, "EPOCHS assignment not found"
    assert int(epochs.group(1)) == recipe["trainer"]["max_epochs"]
