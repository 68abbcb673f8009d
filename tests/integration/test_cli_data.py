"""Our datamodules through the stock ``anomalib`` command: configs parse, fit and test run end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, assert_succeeded, console_script, run_command
from tests.unit.test_chest_xray import jpeg_bytes

DATA_CONFIGS = sorted((REPO_ROOT / "configs" / "data").glob("*.yaml"))
PADIM_OFFLINE = ["--model", "Padim", "--model.pre_trained", "false", "--model.backbone", "resnet18"]


def metric(stdout: str, name: str) -> float:
    """Read a metric from the table anomalib prints after testing."""
    match = re.search(rf"{name}\s*[│|]\s*([0-9.]+)", stdout)
    assert match, f"{name} is not in the output:\n{stdout[-4000:]}"
    return float(match.group(1))


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=[path.stem for path in DATA_CONFIGS])
def test_data_config_is_parsed_by_the_cli(config: Path) -> None:
    from anomalib.cli import AnomalibCLI

    cli = AnomalibCLI(["train", *PADIM_OFFLINE, "--data", str(config)], run=False)
    data = cli.config["train"]["data"]
    assert data["class_path"].startswith("anomalib_medical.data."), data["class_path"]
    assert type(cli.datamodule).__module__.startswith("anomalib_medical.data")


def test_stock_command_trains_a_built_in_model_on_digit_anatomy_with_pixel_metrics(tmp_path: Path) -> None:
    process = run_command(
        [
            console_script("anomalib"),
            "train",
            *PADIM_OFFLINE,
            "--data",
            REPO_ROOT / "configs" / "data" / "digit_anatomy.yaml",
            "--data.root",
            tmp_path / "data",
            "--data.cell_size",
            "16",
            "--data.samples_per_type",
            "4",
            "--data.train_size",
            "32",
            "--trainer.max_epochs",
            "1",
            "--default_root_dir",
            tmp_path / "results",
        ],
        cwd=tmp_path,
    )
    assert_succeeded(process)
    assert 0.0 <= metric(process.stdout, "image_AUROC") <= 1.0
    assert 0.0 <= metric(process.stdout, "pixel_AUROC") <= 1.0
    assert list((tmp_path / "results").rglob("*.ckpt")), "no checkpoint written"


def test_stock_command_runs_fit_and_test_on_a_chest_xray_tree(tmp_path: Path) -> None:
    root = tmp_path / "chest"
    counts = {"train": {"NORMAL": 12, "PNEUMONIA": 4}, "test": {"NORMAL": 4, "PNEUMONIA": 4}}
    for split, classes in counts.items():
        for class_name, count in classes.items():
            folder = root / "chest_xray" / split / class_name
            folder.mkdir(parents=True)
            for index in range(count):
                value = 60 + 10 * index + (80 if class_name == "PNEUMONIA" else 0)
                (folder / f"{class_name.lower()}-{index}.jpeg").write_bytes(jpeg_bytes(value, (24, 20)))
    process = run_command(
        [
            console_script("anomalib"),
            "train",
            *PADIM_OFFLINE,
            "--data",
            "ChestXray",
            "--data.root",
            root,
            "--data.expected_counts",
            "null",
            "--data.val_normal",
            "2",
            "--data.val_abnormal",
            "2",
            "--data.num_workers",
            "0",
            "--data.train_batch_size",
            "4",
            "--trainer.max_epochs",
            "1",
            "--default_root_dir",
            tmp_path / "results",
        ],
        cwd=tmp_path,
    )
    assert_succeeded(process)
    assert 0.0 <= metric(process.stdout, "image_AUROC") <= 1.0


@pytest.mark.parametrize("name", ["DigitAnatomy", "anomalib_medical.data.DigitAnatomy", "ChestXray"])
def test_short_names_and_full_class_paths_are_resolved(name: str) -> None:
    from anomalib.cli import AnomalibCLI

    cli = AnomalibCLI(["train", *PADIM_OFFLINE, "--data", name, "--data.root", "unused"], run=False)
    assert type(cli.datamodule).__name__ == name.rsplit(".", 1)[-1]
