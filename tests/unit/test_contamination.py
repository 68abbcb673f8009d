"""Training on contaminated data: unlabelled abnormal images mixed into the training split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import Split

from anomalib_medical.data import ChestXray, DigitAnatomy
from anomalib_medical.data.digit_anatomy import _STREAMS, ANOMALY_TYPES
from tests.conftest import REPO_ROOT
from tests.unit.test_chest_xray import make_tree

CELL = 8


def digit_datamodule(root: Path, **kwargs: object) -> DigitAnatomy:
    options = {"cell_size": CELL, "samples_per_type": 3, "train_size": 40, "train_batch_size": 8, "eval_batch_size": 5}
    datamodule = DigitAnatomy(root=root, **{**options, **kwargs})
    datamodule.setup()
    return datamodule


def train_types(batches: list) -> list[str]:
    return [Path(path).parent.name for batch in batches for path in batch.image_path]


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory: pytest.TempPathFactory) -> DigitAnatomy:
    return digit_datamodule(tmp_path_factory.mktemp("contaminated"), train_abnormal_fraction=0.3)


# ------------------------------------------------------------------------------------------- DigitAnatomy


def test_every_epoch_has_the_requested_fraction_of_each_type(contaminated: DigitAnatomy) -> None:
    epochs = [list(contaminated.train_dataloader()) for _ in range(3)]
    for batches in epochs:
        types = Counter(train_types(batches))
        assert sum(types.values()) == 40
        assert types["normal"] == 28  # 30 % of 40 abnormal
        assert {name: types[name] for name in ANOMALY_TYPES} == dict.fromkeys(ANOMALY_TYPES, 3)
        for batch in batches:  # the model is told nothing
            assert not batch.gt_label.any()
            assert not batch.gt_mask.any()
    first, second = (torch.cat([batch.image for batch in batches]) for batches in epochs[:2])
    assert not torch.equal(first, second)
    assert train_types(epochs[0]) != train_types(epochs[1])  # contaminated positions change per epoch
    assert Counter(contaminated.train_data.anomaly_types) == Counter(train_types(epochs[0]))
    assert contaminated.train_data.samples["contaminant"].sum() == 12


def test_contaminants_carry_the_recorded_anomaly(contaminated: DigitAnatomy) -> None:
    dataset = contaminated.train_data
    generator = dataset.generator
    for key in range(80):
        anomaly_type = dataset.anomaly_type_of(key)
        grey = (dataset[key].image[0].numpy() * 255).round().astype(np.uint8)
        rng = np.random.default_rng([dataset.seed, _STREAMS[Split.TRAIN], key])
        normal = generator.render(generator.normal_layout(rng))
        if anomaly_type == "normal":
            assert np.array_equal(grey, normal)
            continue
        rng = np.random.default_rng([dataset.seed, _STREAMS[Split.TRAIN], key])
        sample = generator.sample(anomaly_type, rng)
        assert np.array_equal(grey, generator.render(sample.layout))
        cells = [generator.cell_slices(cell) for cell in range(9)]
        changed = {cell for cell, where in enumerate(cells) if not np.array_equal(grey[where], normal[where])}
        assert changed and changed <= set(sample.cells)


def test_uncontaminated_stream_is_unchanged(tmp_path: Path, contaminated: DigitAnatomy) -> None:
    clean = digit_datamodule(tmp_path / "clean")
    clean_images = torch.cat([batch.image for batch in clean.train_dataloader()])
    dirty = digit_datamodule(tmp_path / "dirty", train_abnormal_fraction=0.3)
    dirty_batches = list(dirty.train_dataloader())
    dirty_images = torch.cat([batch.image for batch in dirty_batches])
    normal = torch.tensor([name == "normal" for name in train_types(dirty_batches)])
    assert torch.equal(clean_images[normal], dirty_images[normal])  # normal keys render the same image
    assert not torch.equal(clean_images[~normal], dirty_images[~normal])
    assert set(clean.train_data.anomaly_types) == {"normal"}


def test_training_images_never_appear_in_validation_or_test(contaminated: DigitAnatomy) -> None:
    evaluation = {
        dataset[index].image.numpy().tobytes()
        for dataset in (contaminated.val_data, contaminated.test_data)
        for index in range(len(dataset))
    }
    training = {image.numpy().tobytes() for batch in contaminated.train_dataloader() for image in batch.image}
    assert len(training) == 40
    assert not training & evaluation
    for split_data in (contaminated.val_data, contaminated.test_data):
        assert split_data.root == contaminated.dataset_dir  # val/test folders do not depend on contamination


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_digit_fraction_must_be_a_proper_fraction(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match="train_abnormal_fraction"):
        DigitAnatomy(root=tmp_path, train_abnormal_fraction=fraction)


# ----------------------------------------------------------------------------------------------- ChestXray

COUNTS = {"train": {"NORMAL": 30, "PNEUMONIA": 20}, "test": {"NORMAL": 3, "PNEUMONIA": 4}}


@pytest.fixture(scope="module")
def chest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chest")
    make_tree(root / "chest_xray", COUNTS)
    return root


def chest_datamodule(root: Path, **kwargs: object) -> ChestXray:
    options = {"val_normal": 6, "val_abnormal": 5, "expected_counts": COUNTS, "num_workers": 0, "download": False}
    datamodule = ChestXray(root=root, **{**options, **kwargs})  # type: ignore[arg-type]
    datamodule.setup()
    return datamodule


def test_chest_training_split_has_the_requested_fraction_without_overlap(chest_root: Path) -> None:
    datamodule = chest_datamodule(chest_root, train_abnormal_fraction=0.2)
    train, val, test = datamodule.train_data.samples, datamodule.val_data.samples, datamodule.test_data.samples
    contaminants = train[train.contaminant]
    assert len(train) == 30  # 24 normal + 6 pneumonia: 20 %
    assert len(contaminants) == 6
    assert len(contaminants) / len(train) == pytest.approx(0.2)
    assert all("/train/PNEUMONIA/" in path for path in contaminants.image_path)
    assert all("/train/NORMAL/" in path for path in train[~train.contaminant].image_path)
    assert set(train.label_index) == {0}  # unlabelled: the model is told they are normal
    assert not val.contaminant.any() and not test.contaminant.any()
    assert set(train.image_path).isdisjoint(val.image_path)
    assert set(train.image_path).isdisjoint(test.image_path)
    assert (len(val), len(test)) == (11, 7)  # validation and test are unchanged
    clean = chest_datamodule(chest_root)
    assert set(clean.val_data.samples.image_path) == set(val.image_path)
    assert set(clean.train_data.samples.image_path) < set(train.image_path)
    assert not clean.train_data.samples.contaminant.any()
    again = chest_datamodule(chest_root, train_abnormal_fraction=0.2)
    assert set(again.train_data.samples.image_path) == set(train.image_path)
    other = chest_datamodule(chest_root, train_abnormal_fraction=0.2, seed=3)
    assert set(other.train_data.samples.image_path) != set(train.image_path)


def test_chest_fraction_needs_enough_pneumonia_images(chest_root: Path) -> None:
    with pytest.raises(ValueError, match="needs 16 pneumonia training images"):
        chest_datamodule(chest_root, train_abnormal_fraction=0.4)  # 16 wanted, 15 left after validation
    with pytest.raises(ValueError, match="train_abnormal_fraction"):
        ChestXray(root=chest_root, train_abnormal_fraction=1.0)


def test_chest_config_has_the_contamination_key(chest_root: Path) -> None:
    datamodule = AnomalibDataModule.from_config(
        REPO_ROOT / "configs" / "data" / "chest_xray.yaml",
        **{
            "data.root": str(chest_root),
            "data.num_workers": 0,
            "data.expected_counts": COUNTS,
            "data.val_normal": 6,
            "data.val_abnormal": 5,
            "data.train_abnormal_fraction": 0.2,
        },
    )
    datamodule.setup()
    assert datamodule.train_data.samples.contaminant.sum() == 6
