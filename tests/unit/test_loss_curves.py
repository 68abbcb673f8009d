"""``benchmarks/loss_curves.py`` at tiny size: the CSVLogger columns it plots and the picture."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.unit.test_compare_anomalib_models import SQUID

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
loss_curves = importlib.import_module("loss_curves")


@pytest.mark.slow
def test_loss_curves_of_a_tiny_squid_run(tmp_path: Path) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics, batches = loss_curves.train_with_csv_logger(
            REPO / "configs" / "squid_digit_anatomy.yaml",
            tmp_path / "work",
            epochs=2,
            train_size=32,
            log_every=1,
            data_root=tmp_path / "digits",
            **SQUID,
        )
    finally:
        torch.set_num_threads(previous)
    assert batches == 2  # 32 images in the recipe's batches of 16
    picture = tmp_path / "curves.png"
    curves = loss_curves.plot_loss_curves(metrics, batches, picture, "tiny")
    assert picture.stat().st_size > 5000
    assert curves["step"].tolist() == list(range(2 * batches))  # one row a training batch
    for name in loss_curves.LOSSES:
        assert curves[f"{name}_step"].notna().all(), name
    assert (curves["generator_reconstruction_step"] > 0).all()


def test_a_missing_loss_is_named(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0], "step": [0], "discriminator_loss_step": [0.1]}).to_csv(metrics, index=False)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['generator_teacher_step'"):
        loss_curves.plot_loss_curves(metrics, 1, tmp_path / "curves.png", "x")
