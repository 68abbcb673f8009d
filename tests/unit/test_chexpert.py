"""CheXpert datamodule: label rules, view filters, split sizes and disjointness, errors, training."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from anomalib_medical.data.chexpert import CheXpert, chexpert_labels
from anomalib_medical.data.utils.splits import replaced_count
from tests.unit.fake_chest_data import check_config, chexpert_row, chexpert_tree, fit_and_test, write_chexpert


@pytest.fixture
def root(tmp_path):
    return chexpert_tree(tmp_path / "CheXpert-v1.0-small", normal=8, abnormal=4)


def _datamodule(root, **kwargs):
    settings = {"train_normal": 4, "test_normal": 2, "test_abnormal": 2, "image_size": 16, "num_workers": 0}
    return CheXpert(root, **{**settings, **kwargs})


def _patients(keys):
    return {key.split("/")[1] for key in keys}


def _ids(dataset, label=None):
    samples = dataset.samples
    if label is not None:
        samples = samples[samples.label_index == label]
    return set(samples.image_id)


def test_label_rules():
    table = pd.DataFrame(
        [
            chexpert_row(1, no_finding=1),
            chexpert_row(2, no_finding=1, Support_Devices=1),
            chexpert_row(3, Cardiomegaly=1, Edema=0),
            chexpert_row(4, Pneumonia=-1, Edema=0),
            chexpert_row(5, Fracture=1, Atelectasis=-1),
            chexpert_row(6, Support_Devices=1),
            chexpert_row(7, Lung_Opacity=0),
        ]
    )
    assert chexpert_labels(table, "ignore").tolist() == [0, 0, 1, -1, 1, -1, -1]
    assert chexpert_labels(table, "normal").tolist() == [0, 0, 1, 0, 1, -1, -1]
    assert chexpert_labels(table, "abnormal").tolist() == [0, 0, 1, 1, 1, -1, -1]


def test_every_squid_finding_makes_an_image_abnormal():
    findings = [
        "Enlarged_Cardiomediastinum", "Cardiomegaly", "Lung_Lesion", "Lung_Opacity", "Edema", "Consolidation",
        "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural_Effusion", "Pleural_Other", "Fracture",
    ]  # fmt: skip
    table = pd.DataFrame([chexpert_row(i, **{finding: 1}) for i, finding in enumerate(findings)])
    assert chexpert_labels(table).tolist() == [1] * 12


def test_invalid_label_value_is_reported_with_its_line():
    table = pd.DataFrame([chexpert_row(1, no_finding=1), chexpert_row(2, Edema=2)])
    with pytest.raises(ValueError, match=r"line 3: 'Edema' is '2(\.0)?'"):
        chexpert_labels(table)


def test_split_sizes_labels_and_disjointness(root):
    datamodule = _datamodule(root)
    datamodule.setup()
    train, val, test = datamodule.train_data, datamodule.val_data, datamodule.test_data
    assert len(train) == 4
    assert _ids(train, 1) == set()
    assert len(_ids(test, 0)) == 2
    assert len(_ids(test, 1)) == 2
    assert len(_ids(val, 0)) == 2  # valid.csv: 2 normal + 2 abnormal frontal (+1 lateral, filtered out)
    assert len(_ids(val, 1)) == 2
    assert all(key.startswith("valid/") for key in _ids(val))
    assert all(key.startswith("train/") for key in _ids(train) | _ids(test))
    assert not _ids(train) & _ids(test)
    assert not _patients(_ids(train)) & _patients(_ids(test))
    assert set(train.samples.split) == {"train"}
    assert set(test.samples.split) == {"test"}


def test_items_are_three_channel_images_without_masks(root):
    datamodule = _datamodule(root, image_size=(12, 16))
    datamodule.setup()
    item = datamodule.test_data[0]
    assert item.image.shape == (3, 12, 16)
    assert item.image.dtype == torch.float32
    assert 0.0 <= item.image.min() <= item.image.max() <= 1.0
    assert torch.equal(item.image[0], item.image[1])
    assert item.gt_mask is None
    assert datamodule.test_data.task == "classification"


def test_split_is_seeded(root):
    def split(seed):
        datamodule = _datamodule(root, seed=seed)
        datamodule.setup()
        return _ids(datamodule.train_data), _ids(datamodule.test_data)

    assert split(3) == split(3)
    assert len({tuple(sorted(split(seed)[1])) for seed in range(6)}) > 1


def test_view_filters_and_uncertain_rule_change_the_pools(root):
    def pools(**kwargs):
        datamodule = _datamodule(root, train_normal=None, test_normal=0, test_abnormal=0, **kwargs)
        datamodule.setup()
        return _ids(datamodule.train_data)

    frontal = pools(pa_only=False)
    assert any("patient00014" in key for key in frontal)  # the AP image
    assert not any("lateral" in key for key in frontal)
    assert len(frontal) == 9
    pa = pools()  # the default: PA views only, as the SQUID authors' `*_256_pa` folders
    assert pa == {key for key in frontal if "patient00014" not in key}
    every_view = pools(frontal_only=False, pa_only=False)
    assert every_view - frontal == {"train/patient00013/study1/view1_lateral"}
    with_uncertain = pools(uncertain="normal")
    assert with_uncertain - pa == {"train/patient00015/study1/view1_frontal"}


def test_uncertain_as_abnormal_adds_to_the_abnormal_pool(root):
    _datamodule(root, test_abnormal=6, uncertain="abnormal").setup()  # 4 + positive-and-uncertain + uncertain-only
    with pytest.raises(ValueError, match=r"Requested 6 abnormal test images .* only 5 are available"):
        _datamodule(root, test_abnormal=6).setup()


def test_too_small_pool_is_an_error_naming_the_numbers(root):
    with pytest.raises(ValueError, match=r"Requested 9 normal training images .* only 6 are available"):
        _datamodule(root, train_normal=9).setup()
    with pytest.raises(ValueError, match=r"Requested 9 normal training images .* only 7 are available"):
        _datamodule(root, train_normal=9, pa_only=False).setup()  # the AP normal image joins the pool


@pytest.mark.parametrize(("fraction", "count"), [(0.2, 1), (0.4, 3)])
def test_contamination_adds_unlabelled_abnormal_training_images(root, fraction, count):
    clean = _datamodule(root)
    clean.setup()
    datamodule = _datamodule(root, train_abnormal_fraction=fraction)
    datamodule.setup()
    train = datamodule.train_data.samples
    contaminants = set(train.image_id[train.contaminant])
    assert len(contaminants) == count  # round(f * 4 / (1 - f))
    assert len(train) == 4 + count
    assert set(train.label_index) == {0}  # the model is told nothing
    table = pd.read_csv(root / "train.csv")
    keys = table.Path.str.removeprefix("CheXpert-v1.0-small/").str.removesuffix(".jpg")
    csv_labels = pd.Series(chexpert_labels(table).to_numpy(), index=keys)
    assert set(csv_labels[sorted(contaminants)]) == {1}  # abnormal in train.csv
    assert all(key.startswith("train/") for key in contaminants)  # never from valid.csv
    test_ids = _ids(datamodule.test_data)
    assert not contaminants & test_ids
    assert not _patients(contaminants) & _patients(test_ids)
    assert _ids(datamodule.train_data) - contaminants == _ids(clean.train_data)
    for split in ("val_data", "test_data"):
        samples = getattr(datamodule, split).samples
        assert not samples.contaminant.any()
        assert samples[["image_id", "label_index"]].equals(getattr(clean, split).samples[["image_id", "label_index"]])
    assert not clean.train_data.samples.contaminant.any()


@pytest.mark.parametrize(("fraction", "replaced"), [(0.25, 1), (0.5, 2)])
def test_contamination_by_replacement_keeps_the_split_size(root, fraction, replaced):
    clean = _datamodule(root)
    clean.setup()
    datamodule = _datamodule(root, train_abnormal_fraction=fraction, contamination="replace")
    datamodule.setup()
    train = datamodule.train_data.samples
    contaminants = set(train.image_id[train.contaminant])
    assert len(train) == 4  # the size of the clean split: ceil(f * 4) normal images replaced
    assert len(contaminants) == replaced
    assert set(train.label_index) == {0}
    normals = _ids(datamodule.train_data) - contaminants
    assert len(normals) == 4 - replaced
    assert normals < _ids(clean.train_data)
    assert not contaminants & _ids(clean.train_data)
    assert not _patients(contaminants) & _patients(_ids(datamodule.test_data))
    for split in ("val_data", "test_data"):
        samples = getattr(datamodule, split).samples[["image_id", "label_index"]]
        assert samples.equals(getattr(clean, split).samples[["image_id", "label_index"]])


def test_replacement_count_is_the_simsid_authors_rule():
    assert replaced_count(0.1, 4999) == 500  # the authors: int(4999 * 0.9) = 4,499 normal + 500 abnormal
    assert replaced_count(0.3, 10) == 3
    assert replaced_count(0.0, 4999) == 0
    with pytest.raises(ValueError, match=r"train_abnormal_fraction must be in \[0, 1\)"):
        replaced_count(1.0, 10)


def test_unknown_contamination_rule(root):
    with pytest.raises(ValueError, match=r"contamination must be 'add' or 'replace', got 'swap'"):
        _datamodule(root, contamination="swap")


def test_contaminants_are_not_from_test_patients(tmp_path):
    rows = [chexpert_row(patient, no_finding=1) for patient in range(1, 7)]
    rows += [chexpert_row(patient, study, Edema=1) for patient in range(11, 14) for study in (1, 2)]
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small", rows, rows[:1] + rows[-1:])
    settings = {"train_normal": 4, "test_normal": 1, "test_abnormal": 1, "image_size": 8, "num_workers": 0}
    datamodule = CheXpert(root, train_abnormal_fraction=0.5, **settings)  # 4: every image of the 2 other patients
    datamodule.setup()
    train = datamodule.train_data.samples
    test_patients = _patients(_ids(datamodule.test_data))
    assert len(test_patients) == 2
    assert len(_patients(train.image_id[train.contaminant])) == 2
    assert not _patients(train.image_id[train.contaminant]) & test_patients
    with pytest.raises(ValueError, match=r"Requested 5 abnormal training images .* only 4 are available"):
        CheXpert(root, train_abnormal_fraction=0.55, **settings).setup()  # the test patient's other image is out


def test_too_small_contamination_pool_is_an_error_naming_the_numbers(root):
    with pytest.raises(
        ValueError,
        match=r"Requested 4 abnormal training images for train_abnormal_fraction=0\.5 .* only 3 are available",
    ):
        _datamodule(root, train_abnormal_fraction=0.5).setup()  # 5 abnormal PA images, 2 of them in the test split


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_contamination_fraction_must_be_in_0_1(root, fraction):
    with pytest.raises(ValueError, match=rf"train_abnormal_fraction must be in \[0, 1\), got {fraction}\."):
        _datamodule(root, train_abnormal_fraction=fraction)


def test_missing_label_file(tmp_path):
    root = chexpert_tree(tmp_path / "CheXpert-v1.0-small", normal=4, abnormal=2)
    (root / "valid.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"CheXpert valid\.csv not found: .*valid\.csv"):
        _datamodule(root, train_normal=1, test_normal=1, test_abnormal=1).setup()


def test_unknown_column_layout(root):
    table = pd.read_csv(root / "train.csv").rename(columns={"No Finding": "NoFinding"})
    table.to_csv(root / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"train\.csv: unknown column layout .*missing \['No Finding'\]"):
        _datamodule(root).setup()


def test_image_listed_but_absent(root):
    missing = root / "train/patient00001/study1/view1_frontal.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"patient00001/study1/view1_frontal\.jpg is listed in .*train\.csv"):
        _datamodule(root, train_normal=None, test_normal=0, test_abnormal=0).setup()


def test_paths_resolve_whatever_the_release_folder_is_called(tmp_path):
    rows = [chexpert_row(i, no_finding=1) for i in range(1, 4)] + [chexpert_row(9, Edema=1)]
    for row in rows:
        row["Path"] = str(row["Path"]).replace("CheXpert-v1.0-small", "CheXpert-v1.0")
    root = write_chexpert(tmp_path / "my_copy", rows, rows[:1] + rows[-1:])
    datamodule = CheXpert(root, train_normal=2, test_normal=1, test_abnormal=1, image_size=8, num_workers=0)
    datamodule.setup()
    assert len(datamodule.train_data) == 2
    assert datamodule.cache_dir == tmp_path / "my_copy_cache"


def test_fit_and_test(root, tmp_path):
    datamodule = _datamodule(root, image_size=32, train_batch_size=4, eval_batch_size=4)
    results = fit_and_test(datamodule, tmp_path / "results")
    assert 0.0 <= results["image_AUROC"] <= 1.0


def test_config_matches_the_defaults():
    check_config("chexpert.yaml", CheXpert)
