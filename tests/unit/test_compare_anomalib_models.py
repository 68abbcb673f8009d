"""``benchmarks/compare_anomalib_models.py`` at tiny size, and its ``anomalib benchmark`` config."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from anomalib import models as anomalib_models
from anomalib.models import get_model
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

from tests.unit.test_squid import TINY as SQUID_TINY

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
compare_models = importlib.import_module("compare_anomalib_models")

CONFIG = REPO / "benchmarks" / "anomalib_benchmark" / "compare_digit_anatomy.yaml"
SQUID = {key: SQUID_TINY[key] for key in ("image_size", "levels", "base_channels", "memory_slots")} | {
    "decoder_memory_slots": SQUID_TINY["decoder_memory_slots"]
}
PADIM = {"layers": ["layer1", "layer2"]}


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_data(root: Path, train_size: int = 16) -> dict:
    return {"root": root, "cell_size": 8, "samples_per_type": 3, "train_size": train_size, "eval_batch_size": 8}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_comparison_writes_the_table_and_the_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    overrides = {"Squid": SQUID, "Padim": PADIM}
    data = tiny_data(tmp_path / "digits")
    table = compare_models.compare(["Padim", "Squid"], 3, out, tmp_path / "work", data, 32, overrides=overrides)
    written = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert tuple(written.columns) == compare_models.COLUMNS
    assert written["model"].tolist() == ["Padim", "Squid"]
    assert written["error"].tolist() == ["", ""], written["error"].tolist()
    assert written["family"].tolist() == ["anomalib", "ours"]
    assert written["backbone_weights"].tolist() == ["random (no download here)", "n/a (no backbone)"]
    assert written["input_size"].tolist() == ["32x32", f"{SQUID['image_size']}x{SQUID['image_size']}"]
    assert written.loc[0, "settings"] == "layers=['layer1', 'layer2']"
    assert f"image_size={SQUID['image_size']}" in written.loc[1, "settings"]
    metrics = ["image_AUROC", "pixel_AUROC", "image_F1", *(f"AUROC_{kind}" for kind in compare_models.ANOMALY_TYPES)]
    values = table[metrics].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert ((values >= 0) & (values <= 1)).all()
    assert table.loc[0, "epochs"] == 1  # PaDiM: one pass over the training images
    assert (table["epochs"] > 0).all()
    assert (table["train_seconds"] > 0).all()
    assert (table["budget_seconds"] == 3).all()
    pictures = [out / name for name in ("auroc.png", "anomaly_types.png", "roc_curves.png", "example_maps.png")]
    assert all(path.stat().st_size > 1000 for path in pictures)
    assert sum(path.stat().st_size for path in pictures) < 1_500_000
    markdown = compare_models.markdown_table(table)
    assert "| **Squid** |" in markdown
    assert f"{table.loc[0, 'image_AUROC']:.3f}" in markdown


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_training_stops_at_the_budget_and_thresholds_follow_the_final_weights(tmp_path: Path) -> None:
    data = tiny_data(tmp_path / "digits", train_size=512)
    entry = compare_models.our_entry("Squid", data, 0, **SQUID)
    reference = compare_models.digit_anatomy(data)
    reference.prepare_data()
    reference.setup()
    masks, labels, types = compare_models.native_masks_and_types(reference)
    examples = compare_models.example_indices(types)
    assert [types[index] for index in examples] == ["normal", *compare_models.ANOMALY_TYPES]
    outcome = compare_models.train_and_score(entry, 1, tmp_path / "work", masks, types, examples)
    # the recipe's 10 epochs of 32 batches take far longer than 1 s: stopped by max_time, before the
    # recipe's only validation (epoch 10), so the script validated the final weights itself
    assert 0 < outcome.row["epochs"] < 10
    assert outcome.row["train_seconds"] < 30
    assert torch.isfinite(entry.model.post_processor.image_threshold)
    assert torch.isfinite(entry.model.post_processor.pixel_threshold)
    assert np.array_equal(outcome.labels, labels)
    assert outcome.maps.shape == (len(examples), *masks.shape[-2:])


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_scores_are_the_models_raw_scores(tmp_path: Path) -> None:
    data = tiny_data(tmp_path / "digits")
    entry = compare_models.builtin_entry("Padim", data, 32, False, tmp_path / "dtd", 0, **PADIM)
    reference = compare_models.digit_anatomy(data)
    reference.prepare_data()
    reference.setup()
    masks, _, types = compare_models.native_masks_and_types(reference)
    outcome = compare_models.train_and_score(entry, 3, tmp_path / "work", masks, types, [0])
    model = entry.model.eval()
    with torch.no_grad():
        raw = [
            model.model(model.pre_processor.transform(batch.image)).pred_score for batch in reference.test_dataloader()
        ]
    np.testing.assert_allclose(outcome.scores, torch.cat(raw).numpy().reshape(-1), rtol=1e-5)
    assert outcome.scores.max() > 1  # PaDiM's Mahalanobis distances, not anomalib's normalised [0, 1] scores


def test_random_backbone_weights_reach_models_without_a_pretrained_argument() -> None:
    assert "pre_trained" not in inspect.signature(anomalib_models.Stfpm).parameters
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        with compare_models.random_backbone_weights():  # offline, ImageNet weights would fail to download
            model = anomalib_models.Stfpm(layers=["layer1"], visualizer=False)
        teachers.append(next(model.model.teacher_model.parameters()).detach())
    assert not torch.equal(*teachers)  # random initialisations, not one set of downloaded weights


def test_set_gives_one_model_constructor_arguments() -> None:
    args = compare_models.parse_args(
        ["--set", "Patchcore.coreset_sampling_ratio=0.01", "--set", "Padim.layers=[layer1]"]
    )
    assert args.overrides == {"Patchcore": {"coreset_sampling_ratio": 0.01}, "Padim": {"layers": ["layer1"]}}
    with pytest.raises(SystemExit):
        compare_models.parse_args(["--set", "coreset_sampling_ratio=0.01"])


def test_unknown_model_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown model\(s\) \['Nope'\]"):
        compare_models.compare(["Padim", "Nope"], 1, tmp_path, tmp_path, tiny_data(tmp_path))


def test_benchmark_config_runs_the_scripts_models_with_our_recipes() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = list(get_iterator_from_grid_dict(config["benchmark"]))
    assert [job["model"]["class_path"] for job in jobs] == list(compare_models.DEFAULT_MODELS)
    data = {job["data"]["class_path"] for job in jobs}
    assert data == {"DigitAnatomy"}
    data_args = jobs[0]["data"]["init_args"]
    defaults = compare_models.parse_args([])
    assert (data_args["cell_size"], data_args["samples_per_type"]) == (defaults.cell_size, defaults.samples_per_type)
    for job in jobs:
        name, init_args = job["model"]["class_path"], job["model"].get("init_args", {})
        if name in compare_models.OURS:
            recipe = yaml.safe_load(compare_models.OURS[name].read_text())["model"]["init_args"]
            assert init_args == recipe, name
        else:
            parameters = inspect.signature(getattr(anomalib_models, name)).parameters
            assert init_args.get("pre_trained", False) is False, name
            assert ("pre_trained" in init_args) == ("pre_trained" in parameters), name


def test_benchmark_config_builds_our_models() -> None:
    """Our models take their init_args as anomalib's benchmark passes them (OmegaConf containers)."""
    config = yaml.safe_load(CONFIG.read_text())
    for job in get_iterator_from_grid_dict(config["benchmark"]):
        if job["model"]["class_path"] in compare_models.OURS:
            model = get_model(job["model"])
            assert type(model).__name__ == job["model"]["class_path"]
            assert model.hparams["image_size"] in (36, 48, [48, 48]), model.hparams["image_size"]
