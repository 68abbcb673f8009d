"""`anomalib benchmark` finds our models and datamodules; the `grid` collision and the epoch count are solved."""

from __future__ import annotations

import logging
import types
import warnings

import anomalib.data
import anomalib.models
import pandas as pd
import pytest
import yaml
from anomalib.models import Padim
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

import anomalib_medical.models
from anomalib_medical.data import DigitAnatomy
from anomalib_medical.models import SimSID, Squid
from anomalib_medical.registration import _register, register_with_anomalib
from tests.conftest import REPO_ROOT, assert_succeeded, console_script, run_command
from tests.unit.test_simsid import TINY as SIMSID_TINY
from tests.unit.test_squid import TINY as SQUID_TINY

CONFIG = REPO_ROOT / "benchmarks" / "anomalib_benchmark" / "squid_digit_anatomy.yaml"
RECIPE = REPO_ROOT / "configs" / "squid_digit_anatomy.yaml"
README = REPO_ROOT / "README.md"


def test_our_classes_are_attributes_of_anomalib_packages() -> None:
    assert anomalib.models.Squid is Squid
    assert anomalib.data.DigitAnatomy is DigitAnatomy
    assert anomalib.models.Padim is Padim  # anomalib's own names untouched
    names = register_with_anomalib()  # idempotent
    assert set(names["anomalib.models"]) == {
        "SimSID",
        "Squid",
        "SyntheticTaskLocaliser",
        "SyntheticTaskLocaliserEnsemble",
    }
    assert "DigitAnatomy" in names["anomalib.data"]
    assert "read_image_tensor" not in names["anomalib.data"]  # only datamodules


def test_a_taken_name_is_never_replaced(caplog: pytest.LogCaptureFixture) -> None:
    target = types.ModuleType("anomalib.models")
    target.Squid = taken = object()
    with caplog.at_level(logging.WARNING):
        names = _register(target, anomalib_medical.models, anomalib.models.AnomalibModule)
    assert target.Squid is taken
    assert "Squid" not in names
    assert "SimSID" in names
    assert "anomalib.models.Squid already exists" in caplog.text


@pytest.mark.parametrize(("model_class", "tiny"), [(Squid, SQUID_TINY), (SimSID, SIMSID_TINY)])
def test_patches_per_side_replaces_grid(model_class: type, tiny: dict) -> None:
    settings = {key: value for key, value in tiny.items() if key != "patches_per_side"} | {"visualizer": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = model_class(**settings, patches_per_side=3)
    with pytest.warns(FutureWarning, match="`grid` is deprecated, use `patches_per_side`"):
        old = model_class(**settings, grid=3)
    assert new.model.generator.grid == old.model.generator.grid == 3
    # anomalib's grid search leaves the new key alone and would have replaced ``init_args`` for the old one
    container = {"model": {"init_args": {"patches_per_side": 3}}}
    assert list(get_iterator_from_grid_dict(container)) == [container]
    assert list(get_iterator_from_grid_dict({"model": {"init_args": {"grid": 3}}})) == [{"model": {"init_args": 3}}]


def test_benchmark_config_is_the_cpu_recipe() -> None:
    """The benchmark's model, data and the epochs its header sets are those of configs/squid_digit_anatomy.yaml."""
    benchmark = yaml.safe_load(CONFIG.read_text())["benchmark"]
    recipe = yaml.safe_load(RECIPE.read_text())
    assert benchmark["model"]["init_args"] == recipe["model"]["init_args"]
    recipe_data = recipe["data"]["init_args"]
    for key, value in benchmark["data"]["init_args"].items():
        if key != "root":
            assert recipe_data[key] == value, key
    trainer = recipe["trainer"]
    defaults = f"PL_TRAINER_MAX_EPOCHS={trainer['max_epochs']} PL_TRAINER_CHECK_VAL_EVERY_N_EPOCH="
    defaults += str(trainer["check_val_every_n_epoch"])
    assert defaults in CONFIG.read_text()
    assert defaults in README.read_text()


@pytest.mark.slow
def test_anomalib_benchmark_runs_our_config(tmp_path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    benchmark = config["benchmark"]
    assert benchmark["model"]["class_path"] == "Squid"
    assert benchmark["data"]["class_path"] == "DigitAnatomy"
    benchmark["seed"] = {"grid": [0]}
    benchmark["model"]["init_args"] |= {
        key: SQUID_TINY[key]
        for key in ("image_size", "levels", "base_channels", "memory_slots", "decoder_memory_slots")
    } | {"patches_per_side": 3, "skip_ops": ["none", "none"], "decoder_memory": ["none", "none"]}
    benchmark["data"]["init_args"] |= {
        "root": str(tmp_path / "digits"),
        "cell_size": 8,
        "samples_per_type": 4,
        "train_size": 32,
        "train_batch_size": 8,
    }
    path = tmp_path / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config))
    # Lightning's environment defaults: without them the run trains for 1,000 epochs
    env = {"PL_TRAINER_MAX_EPOCHS": "1", "PL_TRAINER_LIMIT_TRAIN_BATCHES": "2", "PL_TRAINER_ENABLE_PROGRESS_BAR": "0"}
    process = run_command([console_script("anomalib"), "benchmark", "--config", path], cwd=tmp_path, env=env)
    assert_succeeded(process)
    log = (tmp_path / "runs" / "pipeline.log").read_text()
    assert "error" not in log.lower(), log[-4000:]
    results = list((tmp_path / "runs" / "benchmark").glob("*/results.csv"))
    assert len(results) == 1, f"no results.csv under {tmp_path / 'runs'}:\n{process.stdout[-3000:]}"
    table = pd.read_csv(results[0])
    assert len(table) == 1
    assert table.loc[0, "model.class_path"] == "Squid"
    assert table.loc[0, "model.init_args.patches_per_side"] == 3
    assert 0 <= table.loc[0, "image_AUROC"] <= 1
    assert 0 <= table.loc[0, "pixel_AUROC"] <= 1
