"""Our datamodules through the stock ``anomalib`` command: configs parse, fit and test run end to end."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, assert_succeeded, console_script, parse_recipe, run_command
from tests.unit import test_rsna_pneumonia as rsna
from tests.unit import test_vindr_cxr as vindr
from tests.unit.fake_chest_data import chexpert_tree, write_rsna
from tests.unit.test_chest_xray import jpeg_bytes

DATA_CONFIGS = sorted((REPO_ROOT / "configs" / "data").glob("*.yaml"))
RECIPES = sorted((REPO_ROOT / "configs").glob("*.yaml"))
PADIM_OFFLINE = ["--model", "Padim", "--model.pre_trained", "false", "--model.backbone", "resnet18"]


def train_padim(data_arguments: list[object], tmp_path: Path) -> str:
    """Run ``anomalib train --model Padim`` (offline, one epoch) with ``data_arguments``; return its stdout."""
    process = run_command(
        [
            console_script("anomalib"),
            "train",
            *PADIM_OFFLINE,
            *data_arguments,
            "--trainer.max_epochs",
            "1",
            "--default_root_dir",
            tmp_path / "results",
        ],
        cwd=tmp_path,
    )
    assert_succeeded(process)
    assert list((tmp_path / "results").rglob("*.ckpt")), "no checkpoint written"
    return process.stdout


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


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])
def test_recipe_is_parsed_by_the_cli_into_our_model_and_datamodule(recipe: Path) -> None:
    """Every ``configs/<model>_<data>.yaml`` names one of our models and datamodules and parses as written."""
    import yaml
    from anomalib.engine import Engine

    cli = parse_recipe(recipe)
    assert isinstance(cli.engine, Engine)
    model_package = type(cli.model).__module__.split(".")
    assert model_package[:2] == ["anomalib_medical", "models"], model_package
    assert recipe.stem.startswith(model_package[2] + "_"), (recipe.stem, model_package)
    assert type(cli.datamodule).__module__.startswith("anomalib_medical.data."), type(cli.datamodule)
    written = yaml.safe_load(recipe.read_text())
    for part in ("model", "data"):
        parsed = cli.config["train"][part]["init_args"]
        for key, value in written[part]["init_args"].items():
            assert_written_value_parsed(value, parsed[key], (part, key))


def assert_written_value_parsed(written: object, parsed: object, where: tuple[str, ...]) -> None:
    """``parsed`` holds ``written``: equal values, and for a nested ``class_path`` block every written key."""
    if isinstance(written, dict):
        parsed = parsed.as_dict() if hasattr(parsed, "as_dict") else parsed
        assert isinstance(parsed, dict), where
        for key, value in written.items():
            assert_written_value_parsed(value, parsed.get(key), (*where, key))
    elif isinstance(written, list):
        assert isinstance(parsed, list | tuple) and len(parsed) == len(written), where
        for index, (value, got) in enumerate(zip(written, parsed, strict=True)):
            assert_written_value_parsed(value, got, (*where, str(index)))
    else:
        assert parsed == written, where


def test_stock_command_trains_a_built_in_model_on_digit_anatomy_with_pixel_metrics(tmp_path: Path) -> None:
    config = REPO_ROOT / "configs" / "data" / "digit_anatomy.yaml"
    sizes = ["--data.cell_size", "16", "--data.samples_per_type", "4", "--data.train_size", "32"]
    stdout = train_padim(["--data", config, "--data.root", tmp_path / "data", *sizes], tmp_path)
    assert 0.0 <= metric(stdout, "image_AUROC") <= 1.0
    assert 0.0 <= metric(stdout, "pixel_AUROC") <= 1.0


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
    settings = ["--data.expected_counts", "null", "--data.val_normal", "2", "--data.val_abnormal", "2"]
    loading = ["--data.num_workers", "0", "--data.train_batch_size", "4"]
    stdout = train_padim(["--data", "ChestXray", "--data.root", root, *settings, *loading], tmp_path)
    assert 0.0 <= metric(stdout, "image_AUROC") <= 1.0


def _chexpert_arguments(tmp_path: Path) -> list[object]:
    root = chexpert_tree(tmp_path / "CheXpert-v1.0-small", normal=8, abnormal=4)
    return ["--data.root", root, "--data.train_normal", "4", "--data.test_normal", "2", "--data.test_abnormal", "2"]


def _vindr_arguments(tmp_path: Path) -> list[object]:
    root = vindr._tree(tmp_path / "vindr")
    split_file = vindr._split_file(tmp_path / "ddad.json")
    digest = hashlib.sha256(split_file.read_bytes()).hexdigest()
    sizes = ["--data.val_normal", "1", "--data.val_abnormal", "1"]
    return ["--data.root", root, "--data.split_file", split_file, "--data.split_sha256", digest, *sizes]


def _rsna_arguments(tmp_path: Path) -> list[object]:
    root = write_rsna(tmp_path / "rsna", rsna.NORMAL, rsna.OPACITY, rsna.OTHER)
    sizes = {"train_normal": 3, "val_normal": 1, "val_abnormal": 1, "test_normal": 2, "test_abnormal": 2}
    return ["--data.root", root, *[item for key, value in sizes.items() for item in (f"--data.{key}", str(value))]]


@pytest.mark.parametrize(
    ("name", "arguments", "has_masks"),
    [
        ("CheXpert", _chexpert_arguments, False),
        ("VinDrCXR", _vindr_arguments, True),
        ("RSNAPneumonia", _rsna_arguments, True),
    ],
)
def test_stock_command_trains_on_a_tiny_published_layout(
    name: str, arguments: Callable[[Path], list[object]], has_masks: bool, tmp_path: Path
) -> None:
    """``anomalib train --model Padim --data <CheXpert|VinDrCXR|RSNAPneumonia>`` on each provider's own file layout."""
    loading = ["--data.image_size", "32", "--data.num_workers", "0"]
    batches = ["--data.train_batch_size", "3", "--data.eval_batch_size", "4"]
    stdout = train_padim(["--data", name, *arguments(tmp_path), *loading, *batches], tmp_path)
    assert 0.0 <= metric(stdout, "image_AUROC") <= 1.0
    if has_masks:  # box-derived masks give pixel metrics
        assert 0.0 <= metric(stdout, "pixel_AUROC") <= 1.0


@pytest.mark.parametrize("name", ["DigitAnatomy", "anomalib_medical.data.DigitAnatomy", "ChestXray"])
def test_short_names_and_full_class_paths_are_resolved(name: str) -> None:
    from anomalib.cli import AnomalibCLI

    cli = AnomalibCLI(["train", *PADIM_OFFLINE, "--data", name, "--data.root", "unused"], run=False)
    assert type(cli.datamodule).__name__ == name.rsplit(".", 1)[-1]
