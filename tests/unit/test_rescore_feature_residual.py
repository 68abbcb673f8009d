"""`benchmarks/rescore_feature_residual.py`: a trained checkpoint re-scored with a feature bank."""

import importlib.util
from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from torch.nn import functional as F

from anomalib_medical.models import Squid
from tests.unit.test_squid import TINY

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("rescore", REPO / "benchmarks" / "rescore_feature_residual.py")
rescore = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rescore)

CONFIG = {"model": {"class_path": "anomalib_medical.models.Squid"}}


@pytest.fixture(scope="module")
def checkpoint(tiny_digits, tmp_path_factory) -> Path:
    """A Squid trained one epoch on the tiny DigitAnatomy set, with the memory-queue feature residual."""
    root = tmp_path_factory.mktemp("rescore")
    torch.manual_seed(0)
    model = Squid(**TINY, score_type="residual", anomaly_map_type="feature", score_stats_images=6, visualizer=False)
    engine = Engine(
        max_epochs=1, logger=False, default_root_dir=root, enable_progress_bar=False, accelerator="cpu", devices=1
    )
    engine.fit(model, datamodule=tiny_digits)
    path = root / "squid.ckpt"
    engine.trainer.save_checkpoint(path)
    return path


def test_as_trained_column_is_the_checkpoint_and_the_bank_holds_the_last_images(checkpoint, tiny_digits):
    row = rescore.rescore(checkpoint, CONFIG, tiny_digits, bank_images=16)
    assert set(row) == set(rescore.COLUMNS)
    assert all(0.0 <= value <= 1.0 for value in row.values())

    trained = Squid.load_from_checkpoint(checkpoint, visualizer=False)
    assert rescore.evaluate(trained, tiny_digits.test_dataloader()) == (row["test as trained"], row["pixel as trained"])

    banked = Squid.load_from_checkpoint(
        checkpoint, strict=False, visualizer=False, feature_residual="bank", feature_bank_images=16
    )
    images = rescore.training_images(trained, tiny_digits)
    assert len(images) == 32
    rescore.fill_bank(banked, images)
    with torch.no_grad():
        expected = banked.model.generator.bottleneck_features(images[-16:])
    torch.testing.assert_close(banked.model.feature_bank.slots, F.normalize(expected, dim=-1).transpose(0, 1))
    assert rescore.evaluate(banked, tiny_digits.test_dataloader()) == (row["test bank"], row["pixel bank"])
    table = rescore.table({"run": row}).splitlines()
    assert table[2].startswith("| run | ")
    assert table[3].startswith("| min / median / max (1) | ")


def test_a_bank_too_large_for_the_training_set_is_refused(checkpoint, tiny_digits):
    with pytest.raises(ValueError, match="lower --bank-images"):
        rescore.rescore(checkpoint, CONFIG, tiny_digits, bank_images=30)
