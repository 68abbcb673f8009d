"""``anomalib predict`` on DICOMs and 16-bit PNGs through RadiographPredictDataset: full-depth pixels and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from anomalib.engine import Engine
from torch.utils.data import DataLoader

from anomalib_medical.data import DigitAnatomy, RadiographPredictDataset, read_image_tensor
from anomalib_medical.models import Squid
from tests.conftest import REPO_ROOT, assert_succeeded, console_script, run_command
from tests.unit.fake_chest_data import write_dicom
from tests.unit.test_full_depth_reading import save_16bit

pytestmark = pytest.mark.slow


RECIPE = REPO_ROOT / "configs" / "squid_digit_anatomy.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Squid, Path]:
    """The README's main-job model (its recipe's arguments) trained on 32 small images, and its checkpoint."""
    root = tmp_path_factory.mktemp("predict")
    datamodule = DigitAnatomy(
        root=root / "digits", cell_size=12, samples_per_type=4, train_size=32, train_batch_size=8, eval_batch_size=10
    )
    torch.manual_seed(0)
    model = Squid(**yaml.safe_load(RECIPE.read_text())["model"]["init_args"], visualizer=False)
    engine = Engine(max_epochs=1, logger=False, default_root_dir=root / "results", enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    checkpoint = root / "squid.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    return model, checkpoint


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Two 12-bit DICOMs and two dark 16-bit PNGs (values far below 255/65535 of full scale)."""
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(1)
    for index in range(2):
        write_dicom(folder / f"scan{index}.dcm", rng.integers(0, 4096, (40, 40)).astype(np.uint16))
        save_16bit(folder / f"dark{index}.png", rng.integers(0, 2000, (40, 40)).astype(np.uint16))
    return folder


def test_predict_scores_full_depth_images(trained, scans):
    model, _ = trained
    dataset = RadiographPredictDataset(scans)
    engine = Engine(logger=False, enable_progress_bar=False, default_root_dir=scans.parent / "predict_results")
    predictions = engine.predict(model, dataloaders=DataLoader(dataset, batch_size=4, collate_fn=dataset.collate_fn))
    batch = predictions[0]
    assert sorted(Path(path).name for path in batch.image_path) == ["dark0.png", "dark1.png", "scan0.dcm", "scan1.dcm"]
    images = torch.stack([read_image_tensor(path) for path in batch.image_path])
    assert 0 < images[:2].max() < 2000 / 65535 + 1e-6  # the dark PNGs stay dark (anomalib's reader: all white)
    resized = model.pre_processor.transform(images)
    torch.testing.assert_close(batch.image, resized)  # the model saw the full-depth pixels
    model.eval()
    with torch.no_grad():
        expected = model(resized)
    # the engine predicts in channels-last on the CPU (Squid's setup): the same values up to float rounding
    torch.testing.assert_close(batch.pred_score, expected.pred_score, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(batch.anomaly_map, expected.anomaly_map.squeeze(1), rtol=1e-3, atol=1e-5)
    assert torch.isfinite(batch.pred_score).all()


def test_readme_predict_command_reads_a_folder_of_dicoms_and_16_bit_pngs(trained, scans, tmp_path):
    """The README's command: the training recipe as ``--config``, our predict dataset as ``--data``.

    (One file instead of a folder is covered by the dataset's unit test.)
    """
    _, checkpoint = trained
    results = tmp_path / "results"
    process = run_command(
        [
            console_script("anomalib"),
            "predict",
            "--config",
            RECIPE,
            "--ckpt_path",
            checkpoint,
            "--data",
            "RadiographPredictDataset",
            "--data.path",
            scans,
            "--default_root_dir",
            results,
            "--trainer.logger",
            "false",
        ],
        cwd=tmp_path,
    )
    assert_succeeded(process)
    written = sorted(path.name for path in results.rglob("*.png"))
    assert written == ["dark0.png", "dark1.png", "scan0.dcm.png", "scan1.dcm.png"], process.stdout[-2000:]
