"""Squid and SimSID on anomalib's own datamodules (``Folder``, ``MVTecAD``, ``BMAD``) in their on-disk layouts."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from anomalib.data import BMAD, Folder, MVTecAD
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from PIL import Image

from anomalib_medical.models import SimSID, Squid
from tests.unit.test_squid import TINY as SQUID_TINY

SIZE = 24
TINY = SQUID_TINY | {"image_size": SIZE, "score_type": "residual", "visualizer": False}
MODELS: dict[str, Callable[[], AnomalibModule]] = {
    "Squid": lambda: Squid(**TINY),
    "SimSID": lambda: SimSID(**TINY, discriminator_channels=(4, 8, 16)),
}


def _radiograph(rng: np.random.Generator, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
    """A grey 'anatomy' (two dark lungs on a bright body) and, if abnormal, a bright square with its mask."""
    image = np.full((SIZE, SIZE), 180, dtype=np.float64)
    image[4:20, 3:10] = image[4:20, 14:21] = 60
    image += rng.normal(0, 8, image.shape)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    if abnormal:
        y, x = rng.integers(2, SIZE - 8, size=2)
        image[y : y + 6, x : x + 6] = 255
        mask[y : y + 6, x : x + 6] = 255
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write(folder: Path, name: str, pixels: np.ndarray, mode: str = "RGB") -> None:
    """Save a grey array as an RGB image (``mode="L"`` for a mask)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(folder / name)


def _images(count: int, abnormal: bool, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(f"{index:03d}.png", *_radiograph(rng, abnormal)) for index in range(count)]


def _folder(root: Path) -> AnomalibDataModule:
    for name, image, _ in _images(16, abnormal=False, seed=0):
        _write(root / "good", name, image)
    for name, image, mask in _images(6, abnormal=True, seed=1):
        _write(root / "bad", name, image)
        _write(root / "masks", name.replace(".png", "_mask.png"), mask, "L")
    return Folder(
        name="toy",
        root=root,
        normal_dir="good",
        abnormal_dir="bad",
        mask_dir="masks",
        train_batch_size=8,
        eval_batch_size=8,
        num_workers=0,
        seed=0,
    )


def _mvtec(root: Path) -> AnomalibDataModule:
    category = root / "chest"
    for name, image, _ in _images(16, abnormal=False, seed=0):
        _write(category / "train" / "good", name, image)
    for name, image, _ in _images(4, abnormal=False, seed=2):
        _write(category / "test" / "good", name, image)
    for name, image, mask in _images(4, abnormal=True, seed=1):
        _write(category / "test" / "opacity", name, image)
        _write(category / "ground_truth" / "opacity", name.replace(".png", "_mask.png"), mask, "L")
    return MVTecAD(root=root, category="chest", train_batch_size=8, eval_batch_size=8, num_workers=0, seed=0)


def _bmad(root: Path) -> AnomalibDataModule:
    category = root / "Chest"
    for name, image, _ in _images(16, abnormal=False, seed=0):
        _write(category / "train" / "good", name, image)
    for split, seed in (("valid", 3), ("test", 5)):
        for name, image, mask in _images(3, abnormal=False, seed=seed):
            _write(category / split / "good" / "img", name, image)
            _write(category / split / "good" / "label", name, mask, "L")
        for name, image, mask in _images(3, abnormal=True, seed=seed + 1):
            _write(category / split / "Ungood" / "img", name, image)
            _write(category / split / "Ungood" / "label", name, mask, "L")
    return BMAD(root=root, category="Chest", train_batch_size=8, eval_batch_size=8, num_workers=0, seed=0)


DATAMODULES: dict[str, Callable[[Path], AnomalibDataModule]] = {"Folder": _folder, "MVTecAD": _mvtec, "BMAD": _bmad}


@pytest.mark.slow
@pytest.mark.parametrize("data_name", list(DATAMODULES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_model_trains_and_tests_on_an_anomalib_datamodule(model_name: str, data_name: str, tmp_path: Path) -> None:
    datamodule = DATAMODULES[data_name](tmp_path / "data")
    model = MODELS[model_name]()
    engine = Engine(
        max_epochs=1,
        logger=False,
        default_root_dir=tmp_path / "results",
        enable_progress_bar=False,
        accelerator="cpu",
        devices=1,
    )
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
    # masks in each layout reach the model's anomaly map: both image and pixel metrics are reported
    assert 0.0 <= metrics["image_AUROC"] <= 1.0
    assert 0.0 <= metrics["pixel_AUROC"] <= 1.0
    (batch, *_) = engine.predict(model, dataloaders=datamodule.test_dataloader())
    assert batch.anomaly_map.shape[-2:] == batch.image.shape[-2:]
    assert np.isfinite(batch.pred_score.numpy()).all()
