"""The stock ``anomalib`` command sees our classes; the start-up hook costs nothing to plain Python."""

from __future__ import annotations

import json
import re
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, assert_succeeded, console_script, run_command

PYTHON = sys.executable
WHEEL_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "anomalib_medical_autoload.pth")
PROBE = (
    "import json, sys; "
    "print(json.dumps({'heavy': sorted(m for m in sys.modules if m.split('.')[0] in {'anomalib', 'torch', "
    "'anomalib_medical', 'typing', 'importlib.abc'}), "
    "'finders': [type(f).__name__ for f in sys.meta_path]}))"
)


def _probe(env: dict[str, str] | None = None, code: str = PROBE) -> dict:
    process = run_command([PYTHON, "-c", code], env=env)
    assert_succeeded(process)
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_hook_is_installed_at_start_up_and_imports_nothing_heavy() -> None:
    state = _probe()
    assert "_AutoloadFinder" in state["finders"]
    assert state["heavy"] == []


def test_hook_adds_no_measurable_start_up_time() -> None:
    timings = []
    for _ in range(5):  # the best of five: a loaded machine stretches single runs
        process = run_command([PYTHON, "-X", "importtime", "-c", "pass"])
        assert_succeeded(process)
        lines = [line for line in process.stderr.splitlines() if line.rstrip().endswith("anomalib_medical_autoload")]
        assert lines, f"the hook was not imported at start-up:\n{process.stderr}"
        timings.append(int(lines[0].split("|")[1]))
    assert min(timings) < 5_000, f"the start-up hook took {timings} us (with what it imports)"


def test_hook_can_be_switched_off_and_the_package_imports_no_engine_or_cli() -> None:
    """With the hook off, ``anomalib.models`` leaves our package out; importing it then loads no engine or CLI.

    One process checks both (each ``anomalib`` import costs seconds of the suite).
    """
    state = _probe(env={"ANOMALIB_MEDICAL_AUTOLOAD": "0"})
    assert "_AutoloadFinder" not in state["finders"]
    code = (
        "import sys, anomalib.models; "
        "print('anomalib_medical' in sys.modules); "
        "import anomalib_medical; "
        "print(sorted(m for m in sys.modules if m.startswith(('anomalib.engine', 'anomalib.cli'))))"
    )
    process = run_command([PYTHON, "-c", code], env={"ANOMALIB_MEDICAL_AUTOLOAD": "0"})
    assert_succeeded(process)
    plugin_loaded, engine_or_cli = process.stdout.strip().splitlines()[-2:]
    assert plugin_loaded == "False"
    assert engine_or_cli == "[]"


def test_importing_anomalib_models_loads_the_plugin_once_and_removes_the_hook() -> None:
    code = (
        "import sys, anomalib.models; "
        "print('anomalib_medical' in sys.modules, any(type(f).__name__ == '_AutoloadFinder' for f in sys.meta_path))"
    )
    process = run_command([PYTHON, "-c", code])
    assert_succeeded(process)
    assert process.stdout.strip().splitlines()[-1] == "True False"


def test_public_api() -> None:
    import anomalib_medical

    assert isinstance(anomalib_medical.__version__, str)
    assert anomalib_medical.__version__.count(".") >= 2
    for name in anomalib_medical.__all__:
        assert hasattr(anomalib_medical, name), name
    assert {"DigitAnatomy", "ChestXray", "COVIDx"} <= set(anomalib_medical.__all__)


def test_class_names_do_not_clash_with_anomalib() -> None:
    import anomalib.data
    import anomalib.models

    import anomalib_medical

    ours = set(anomalib_medical.data.__all__) | set(anomalib_medical.models.__all__)
    assert ours, "the package exports no classes"
    # our classes are set on anomalib's packages (``registration``): only anomalib's own objects count
    theirs = {
        name
        for package in (anomalib.data, anomalib.models)
        for name in dir(package)
        if getattr(package, name) is not getattr(anomalib_medical, name, None)
    }
    assert not ours & theirs, f"names shared with anomalib: {sorted(ours & theirs)}"
    for name in ours:
        module = getattr(anomalib_medical, name).__module__
        assert "._" not in module, f"{name} lives in a private module path {module}"


@pytest.mark.parametrize(
    ("script", "env"),
    [("anomalib", {}), ("anomalib-medical", {"ANOMALIB_MEDICAL_AUTOLOAD": "0"})],
    ids=["stock-command-with-hook", "own-command-without-hook"],
)
def test_console_scripts_resolve_short_names_and_show_our_docstrings(script: str, env: dict[str, str]) -> None:
    process = run_command([console_script(script), "train", "--data.help", "DigitAnatomy"], env=env)
    assert_succeeded(process)
    assert re.search(r"Help for --data.help=anomalib_medical(\.data)?\.DigitAnatomy", process.stdout)
    assert "--data.cell_size" in process.stdout
    assert "3x3 grids of the digits" in process.stdout


def test_without_the_hook_the_stock_command_does_not_know_our_classes() -> None:
    """Guards the test above: it must be the hook that makes the short name resolvable."""
    process = run_command(
        [console_script("anomalib"), "train", "--data.help", "DigitAnatomy"],
        env={"ANOMALIB_MEDICAL_AUTOLOAD": "0"},
    )
    assert process.returncode != 0


def _site_packages(venv: Path) -> Path:
    return Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}),
    )


def test_wheel_install_registers_with_the_stock_command(tmp_path: Path) -> None:
    """``pip install .`` (a built wheel, not the editable install) puts the hook at the site-packages root.

    The fresh virtualenv borrows the test environment's dependencies through a path-only ``.pth`` line
    (``.pth`` files of that borrowed directory are not processed, so the editable install's hook stays out).
    """
    venv = tmp_path / "venv"
    assert_succeeded(run_command([PYTHON, "-m", "venv", venv]))
    python = venv / "bin" / "python"
    borrowed = Path(sysconfig.get_path("purelib"))
    (_site_packages(venv) / "zz_borrowed_dependencies.pth").write_text(f"{borrowed}\n")
    source = tmp_path / "source"
    # Only the wheel's build inputs: other tests, running in parallel, write and delete files elsewhere in the checkout.
    source.mkdir()
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in WHEEL_INPUTS:
        shutil.copy2(REPO_ROOT / name, source / name)
    install = run_command(
        [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", source],
    )
    assert_succeeded(install)
    site = _site_packages(venv)
    assert (site / "anomalib_medical_autoload.pth").is_file()
    assert (site / "anomalib_medical" / "__init__.py").is_file()
    where = run_command([python, "-c", "import anomalib_medical; print(anomalib_medical.__file__)"])
    assert_succeeded(where)
    assert str(site) in where.stdout
    cli = "from anomalib.cli.cli import main; import sys; sys.argv[0] = 'anomalib'; main()"
    process = run_command([python, "-c", cli, "train", "--data.help", "DigitAnatomy"])
    assert_succeeded(process)
    assert "--data.cell_size" in process.stdout
