"""RSNA Pneumonia datamodule: class selection, seeded disjoint split sizes, box masks, errors, training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomalib_medical.data.rsna_pneumonia import RSNAPneumonia
from anomalib_medical.data.utils.splits import draw, draw_disjoint
from tests.unit.fake_chest_data import check_config, fit_and_test, write_dicom, write_rsna

NORMAL = [f"p{i}" for i in range(8)]
OPACITY = {
    "o0": [(4, 2, 12, 10)],
    "o1": [(0, 0, 8, 6), (20, 10, 40, 30)],
    "o2": [(10, 10, 20, 20)],
    "o3": [(2, 2, 6, 6)],
    "o4": [(30, 20, 38, 28)],
}
OTHER = ["x0", "x1"]


@pytest.fixture
def root(tmp_path):
    return write_rsna(tmp_path / "rsna", NORMAL, OPACITY, OTHER)


def _datamodule(root, **kwargs):
    settings = {
        "train_normal": 3,
        "val_normal": 1,
        "val_abnormal": 1,
        "test_normal": 2,
        "test_abnormal": 2,
        "image_size": (15, 20),
        "num_workers": 0,
    }
    return RSNAPneumonia(root, **{**settings, **kwargs})


def _ids(dataset, label=None):
    samples = dataset.samples
    return set(samples.image_id if label is None else samples[samples.label_index == label].image_id)


def test_split_sizes_classes_and_disjointness(root):
    datamodule = _datamodule(root)
    datamodule.setup()
    train, val, test = datamodule.train_data, datamodule.val_data, datamodule.test_data
    assert len(train) == 3
    assert _ids(train, 1) == set()
    assert (len(_ids(val, 0)), len(_ids(val, 1))) == (1, 1)
    assert (len(_ids(test, 0)), len(_ids(test, 1))) == (2, 2)
    everything = [_ids(train), _ids(val), _ids(test)]
    assert sum(len(ids) for ids in everything) == len(set().union(*everything))
    assert set().union(*everything) - set(NORMAL) - set(OPACITY) == set()  # "No Lung Opacity / Not Normal" unused
    assert _ids(train) | _ids(val, 0) | _ids(test, 0) <= set(NORMAL)
    assert _ids(val, 1) | _ids(test, 1) <= set(OPACITY)


def test_all_remaining_normals_train_when_train_normal_is_none(root):
    datamodule = _datamodule(root, train_normal=None)
    datamodule.setup()
    assert len(datamodule.train_data) == len(NORMAL) - 1 - 2


def test_split_is_seeded(root):
    def test_ids(seed):
        datamodule = _datamodule(root, seed=seed)
        datamodule.setup()
        return tuple(sorted(_ids(datamodule.test_data)))

    assert test_ids(5) == test_ids(5)
    assert len({test_ids(seed) for seed in range(6)}) > 1


def test_masks_from_boxes_after_resizing(root):
    datamodule = _datamodule(root, test_abnormal=5, val_abnormal=0)
    datamodule.setup()
    samples = datamodule.test_data.samples.set_index("image_id")
    mask = np.asarray(Image.open(samples.mask_path["o1"])) > 0
    expected = np.zeros((15, 20), dtype=bool)
    expected[0:3, 0:4] = True  # (x 0, y 0, w 8, h 6) halved
    expected[5:15, 10:20] = True  # (x 20, y 10, w 20, h 20) halved
    np.testing.assert_array_equal(mask, expected)
    assert all(samples.mask_path[key] == "" for key in samples.index if key.startswith("p"))
    assert datamodule.test_data.task == "segmentation"
    item = datamodule.test_data[list(datamodule.test_data.samples.image_id).index("o1")]
    assert item.image.shape == (3, 15, 20)
    np.testing.assert_array_equal(item.gt_mask.numpy().astype(bool), expected)


def test_too_small_pool_names_the_numbers(root):
    with pytest.raises(ValueError, match=r"2 normal test \+ 1 normal validation \+ 6 normal training = 9 .* only 8"):
        _datamodule(root, train_normal=6).setup()
    with pytest.raises(ValueError, match=r"4 lung-opacity test \+ 2 lung-opacity validation = 6 .* only 5"):
        _datamodule(root, test_abnormal=4, val_abnormal=2).setup()


def test_draws_are_disjoint_and_sorted():
    rng = np.random.default_rng(0)
    first, second, rest = draw_disjoint([f"i{k}" for k in range(10)], [("a", 3), ("b", 2), ("c", None)], rng)
    assert (len(first), len(second), len(rest)) == (3, 2, 5)
    assert not set(first) & set(second) and not (set(first) | set(second)) & set(rest)
    assert first == sorted(first)
    assert draw(["b", "a", "c"], None, rng, "x") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="Only the last"):
        draw_disjoint(["a"], [("a", None), ("b", 0)], rng)


def test_missing_csv(root):
    (root / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"stage_2_detailed_class_info\.csv"):
        _datamodule(root).setup()


def test_unknown_column_layout(root):
    path = root / "stage_2_train_labels.csv"
    pd.read_csv(path).rename(columns={"Target": "label"}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"stage_2_train_labels\.csv: unknown column layout .*\['Target'\]"):
        _datamodule(root).setup()


def test_class_contradicting_target(root):
    path = root / "stage_2_detailed_class_info.csv"
    table = pd.read_csv(path)
    table.loc[table.patientId == "o2", "class"] = "Normal"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"'o2': class 'Normal' .* contradicts Target"):
        _datamodule(root).setup()


def test_unknown_class(root):
    path = root / "stage_2_detailed_class_info.csv"
    table = pd.read_csv(path)
    table.loc[table.patientId == "x0", "class"] = "Pneumonia"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"unknown class 'Pneumonia'"):
        _datamodule(root).setup()


def test_target_without_box(root):
    path = root / "stage_2_train_labels.csv"
    table = pd.read_csv(path)
    row = table.index[table.patientId == "p3"][0]
    table.loc[row, "Target"] = 1
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"stage_2_train_labels\.csv, line {row + 2}: Target 1 does not match"):
        _datamodule(root).setup()


def test_image_listed_but_absent(root):
    for patient in NORMAL:
        (root / "stage_2_train_images" / f"{patient}.dcm").unlink()
    with pytest.raises(FileNotFoundError, match=r"p\d\.dcm is listed in .*stage_2_train_labels\.csv"):
        _datamodule(root).setup()


def test_dicom_without_pixel_data(root):
    for patient in NORMAL:
        write_dicom(root / "stage_2_train_images" / f"{patient}.dcm", None)
    with pytest.raises(ValueError, match=r"p\d\.dcm: the DICOM file has no pixel data"):
        _datamodule(root).setup()


def test_fit_and_test(root, tmp_path):
    datamodule = _datamodule(root, image_size=32, train_batch_size=3, eval_batch_size=4)
    results = fit_and_test(datamodule, tmp_path / "results")
    assert 0.0 <= results["image_AUROC"] <= 1.0
    assert 0.0 <= results["pixel_AUROC"] <= 1.0


def test_config_matches_the_defaults():
    check_config("rsna_pneumonia.yaml", RSNAPneumonia)
