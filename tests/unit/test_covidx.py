"""COVIDx datamodule: provider and authors' split files, validation, contamination, errors, full depth, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from anomalib.data import AnomalibDataModule
from PIL import Image

from anomalib_medical.data import COVIDx
from tests.unit.fake_chest_data import fit_and_test

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "data" / "covidx.yaml"


def write_split(root: Path, name: str, folder: str, rows: list[tuple[str, str, str]], depth16: bool = False) -> Path:
    """Write ``root/name`` (``patient filename class source`` lines) and a small image per row in ``root/folder``."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (patient, filename, label_class) in enumerate(rows):
        lines.append(f"{patient} {filename} {label_class} fake_source")
        rng = np.random.default_rng(index)
        if depth16:
            pixels = np.full((12, 10), 1000, dtype=np.uint16)
        else:
            pixels = rng.integers(0, 256, size=(12, 10), dtype=np.uint8)
        Image.fromarray(pixels).save(root / folder / filename)
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def rows(prefix: str, count: int, label_class: str, patients: int | None = None) -> list[tuple[str, str, str]]:
    """``count`` rows of one class; ``patients`` > 0 shares patients between consecutive images."""
    per = patients or count
    return [(f"{prefix}p{i % per}", f"{prefix}{i}.png", label_class) for i in range(count)]


@pytest.fixture
def provider(tmp_path):
    root = tmp_path / "covidx"
    write_split(root, "train.txt", "train", rows("n", 10, "normal") + rows("a", 6, "pneumonia"))
    write_split(root, "val.txt", "val", rows("vn", 3, "normal") + rows("va", 3, "COVID-19"))
    write_split(
        root, "test.txt", "test", rows("tn", 4, "normal") + rows("ta", 2, "pneumonia") + rows("tc", 2, "COVID-19")
    )
    return root


@pytest.fixture
def authors(tmp_path):
    root = tmp_path / "covidx_authors"
    write_split(root, "train_squid.txt", "train", rows("n", 10, "normal"))
    write_split(root, "train_squid_abnormal.txt", "train", rows("a", 5, "pneumonia"))
    write_split(root, "val_squid.txt", "train", rows("v", 2, "normal") + rows("w", 2, "COVID-19"))
    write_split(root, "test_COVIDx9A.txt", "test", rows("t", 3, "normal") + rows("u", 3, "pneumonia"))
    return root


def _datamodule(root, **kwargs):
    settings = {"val_normal": 2, "val_abnormal": 2, "image_size": 8, "num_workers": 0}
    datamodule = COVIDx(root, **{**settings, **kwargs})
    datamodule.setup()
    return datamodule


def _ids(dataset, label=None):
    samples = dataset.samples
    if label is not None:
        samples = samples[samples.label_index == label]
    return list(samples.image_id)


def test_provider_split_with_val_file(provider):
    datamodule = _datamodule(provider)
    train, val, test = datamodule.train_data, datamodule.val_data, datamodule.test_data
    assert sorted(_ids(train)) == sorted(f"train/n{i}" for i in range(10))
    assert len(_ids(val, 0)) == 2
    assert len(_ids(val, 1)) == 2
    assert all(key.startswith("val/") for key in _ids(val))
    assert all(key.startswith(("val/vn", "val/va")) for key in _ids(val))
    assert len(_ids(test, 0)) == 4
    assert len(_ids(test, 1)) == 4  # pneumonia and COVID-19 are abnormal
    item = test[0]
    assert item.image.shape == (3, 8, 8)
    assert torch.equal(item.image[0], item.image[2])
    assert item.gt_mask is None
    assert not train.samples.contaminant.any()


def test_provider_validation_held_out_of_train_without_val_file(provider):
    (provider / "val.txt").unlink()
    train_rows = rows("n", 10, "normal", patients=5) + rows("a", 6, "pneumonia", patients=3)
    write_split(provider, "train.txt", "train", train_rows)
    datamodule = _datamodule(provider, val_normal=1, val_abnormal=1)
    val = datamodule.val_data.samples
    assert all(key.startswith("train/") for key in val.image_id)
    assert sorted(val.label_index) == [0, 1]
    # The validation normal image's patient has 2 images: neither is used for training.
    patient = {f"n{i}": f"np{i % 5}" for i in range(10)}
    val_normal = next(key.split("/")[1] for key in val.image_id[val.label_index == 0])
    train_ids = [key.split("/")[1] for key in _ids(datamodule.train_data)]
    assert len(train_ids) == 8
    assert patient[val_normal] not in {patient[name] for name in train_ids}
    seeded = _datamodule(provider, val_normal=1, val_abnormal=1)
    assert list(seeded.val_data.samples.image_id) == list(val.image_id)


@pytest.mark.parametrize(("rule", "normal", "abnormal"), [("replace", 7, 3), ("add", 10, 4)])
def test_provider_contamination(provider, rule, normal, abnormal):
    datamodule = _datamodule(provider, train_abnormal_fraction=0.3, contamination=rule)
    train = datamodule.train_data.samples
    contaminants = list(train.image_id[train.contaminant])
    assert len(contaminants) == abnormal  # replace: ceil(0.3 * 10); add: round(0.3 * 10 / 0.7)
    assert len(train) == normal + abnormal
    assert all(key.startswith("train/a") for key in contaminants)
    assert set(train.label_index) == {0}
    assert set(_ids(datamodule.train_data)) - set(contaminants) <= {f"train/n{i}" for i in range(10)}
    assert not datamodule.val_data.samples.contaminant.any()


def test_too_small_contamination_pool_names_the_numbers(provider):
    with pytest.raises(ValueError, match=r"Requested 7 abnormal training images .*0\.4 \(add\), .* only 6 are"):
        _datamodule(provider, train_abnormal_fraction=0.4, contamination="add")


def test_authors_split_files_in_file_order(authors):
    datamodule = _datamodule(authors, split_format="authors", train_abnormal_fraction=0.3)
    train = datamodule.train_data.samples
    # The authors: the first int(10 * 0.7) = 7 normal lines and the first 3 abnormal lines (anomalib's dataset
    # sorts its samples by path, so compare sets).
    assert set(train.image_id[~train.contaminant]) == {f"train/n{i}" for i in range(7)}
    assert set(train.image_id[train.contaminant]) == {f"train/a{i}" for i in range(3)}
    assert len(train) == 10
    val = datamodule.val_data.samples
    assert sorted(zip(val.image_id, val.label_index, strict=True)) == [
        ("train/v0", 0), ("train/v1", 0), ("train/w0", 1), ("train/w1", 1)
    ]  # fmt: skip
    assert sorted(datamodule.test_data.samples.label_index) == [0, 0, 0, 1, 1, 1]
    clean = _datamodule(authors, split_format="authors")
    assert set(clean.train_data.samples.image_id) == {f"train/n{i}" for i in range(10)}


def test_cxr2_classes_need_normal_classes(provider):
    write_split(provider, "train.txt", "train", rows("n", 6, "negative") + rows("a", 3, "positive"))
    with pytest.raises(ValueError, match=r"train\.txt lists no image of normal_classes \['normal'\]; its classes are "):
        _datamodule(provider)
    write_split(provider, "val.txt", "val", rows("vn", 2, "negative") + rows("va", 2, "positive"))
    datamodule = _datamodule(provider, normal_classes=["negative"])
    assert len(datamodule.train_data) == 6
    assert sorted(datamodule.val_data.samples.label_index) == [0, 0, 1, 1]


def test_missing_split_file_and_folder(provider):
    (provider / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"COVIDx split file not found: .*test\.txt does not exist"):
        _datamodule(provider)
    write_split(provider, "test.txt", "test", rows("t", 2, "normal"))
    for image in (provider / "val").iterdir():
        image.unlink()
    (provider / "val").rmdir()
    with pytest.raises(FileNotFoundError, match=r"COVIDx image folder not found: .*val does not exist"):
        _datamodule(provider)


def test_missing_authors_file_is_named(authors):
    (authors / "train_squid_abnormal.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_squid_abnormal\.txt does not exist"):
        _datamodule(authors, split_format="authors")


def test_bad_line_duplicate_and_absent_image_name_file_and_line(provider):
    path = provider / "train.txt"
    original = path.read_text()
    path.write_text(original + "p99 only_three_columns.png normal\n")
    with pytest.raises(ValueError, match=r"train\.txt, line 17: expected 4 space-separated columns .* got 3"):
        _datamodule(provider)
    path.write_text(original + original.splitlines()[2] + "\n")
    with pytest.raises(ValueError, match=r"train\.txt, line 17: image 'n2\.png' is already listed on line 3"):
        _datamodule(provider)
    path.write_text(original)
    (provider / "train" / "n4.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.txt, line 5: image 'n4\.png' does not exist in .*train"):
        _datamodule(provider)


def test_image_in_two_splits_is_an_error(authors):
    path = authors / "val_squid.txt"
    path.write_text(path.read_text() + "p0 n3.png normal fake_source\n")
    with pytest.raises(ValueError, match=r"val_squid\.txt, line 5: image 'n3\.png' is also listed in .*train_squid"):
        _datamodule(authors, split_format="authors")


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("split_format", "kaggle", "split_format must be 'provider' or 'authors'"),
        ("contamination", "swap", "contamination must be 'add' or 'replace'"),
        ("normal_classes", "normal", "normal_classes must be a non-empty list"),
        ("train_abnormal_fraction", 1.0, r"train_abnormal_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(provider, argument, value, message):
    with pytest.raises(ValueError, match=message):
        COVIDx(provider, **{argument: value})


def test_images_are_read_at_full_depth(tmp_path):
    root = tmp_path / "deep"
    write_split(root, "train.txt", "train", rows("n", 2, "normal") + rows("a", 2, "pneumonia"), depth16=True)
    write_split(root, "test.txt", "test", rows("t", 2, "normal"), depth16=True)
    datamodule = _datamodule(root, val_normal=1, val_abnormal=1)
    image = datamodule.train_data[0].image
    assert torch.allclose(image, torch.full_like(image, 1000 / 65535), atol=1e-4)  # 8-bit reading saturates: 1.0


def test_fit_and_test(provider, tmp_path):
    datamodule = COVIDx(provider, val_normal=2, val_abnormal=2, image_size=32, num_workers=0, train_batch_size=4)
    results = fit_and_test(datamodule, tmp_path / "results")
    assert 0.0 <= results["image_AUROC"] <= 1.0


def test_config_matches_the_defaults():
    import inspect

    datamodule = AnomalibDataModule.from_config(CONFIG)
    assert type(datamodule) is COVIDx
    config = yaml.safe_load(CONFIG.read_text())
    defaults = {key: value.default for key, value in inspect.signature(COVIDx).parameters.items()}
    defaults["normal_classes"] = list(defaults["normal_classes"])
    assert config["init_args"] == defaults


def test_anomalib_cli_resolves_the_short_name(provider):
    from anomalib.cli import AnomalibCLI

    args = ["train", "--model", "Padim", "--model.pre_trained", "false", "--data", "COVIDx"]
    cli = AnomalibCLI([*args, "--data.root", str(provider), "--data.split_format", "authors"], run=False)
    assert type(cli.datamodule) is COVIDx
    assert cli.datamodule.split_format == "authors"
