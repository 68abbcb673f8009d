"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from anomalib.cli import AnomalibCLI

    from anomalib_medical.data import DigitAnatomy

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per xdist worker: two workers of two threads each on two cores run several times slower."""
    del config
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def console_script(name: str) -> Path:
    """Path of a console script installed next to the running interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        msg = (
            f"console script {name!r} not found next to {sys.executable}: is the package installed (pip install -e .)?"
        )
        raise FileNotFoundError(msg)
    return path


def run_command(
    args: list[str | Path],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a small-thread environment and return its completed process (output captured)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_succeeded(process: subprocess.CompletedProcess[str]) -> None:
    """Fail with the command's output when it returned a non-zero exit status."""
    assert process.returncode == 0, (
        f"command failed ({process.returncode}): {process.args}\n--- stdout ---\n{process.stdout[-6000:]}"
        f"\n--- stderr ---\n{process.stderr[-6000:]}"
    )


@functools.cache
def parse_recipe(recipe: Path, *arguments: str, subcommand: str = "train") -> AnomalibCLI:
    """``anomalib <subcommand> --config <recipe> <arguments>`` parsed and instantiated once per test process."""
    from anomalib.cli import AnomalibCLI

    return AnomalibCLI([subcommand, "--config", str(recipe), *arguments], run=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the repository (always present in CI; absent in a user's clone)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent (a user's clone): the test needs the project's shared data folder")
    return SHARED_DIR


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory: pytest.TempPathFactory) -> DigitAnatomy:
    """A DigitAnatomy datamodule of 24 px images: 32 training images, 4 test images per type."""
    from anomalib_medical.data import DigitAnatomy

    return DigitAnatomy(
        root=tmp_path_factory.mktemp("digits"),
        cell_size=8,
        samples_per_type=4,
        train_size=32,
        train_batch_size=8,
        eval_batch_size=10,
    )
