"""VinDr-CXR datamodule: both label formats, DDAD and official splits, masks from boxes, checksums, errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import threading
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from anomalib_medical.data.utils.download import ChecksumError
from anomalib_medical.data.utils.reader import read_grey_or_rgb
from anomalib_medical.data.vindr_cxr import DDAD_SPLIT_SHA256, VinDrCXR, VinDrLabels, clean_ddad_split
from tests.unit.fake_chest_data import check_config, fit_and_test, write_dicom, write_vindr

NORMAL = [f"n{i}" for i in range(6)]
ABNORMAL = {
    "a0": [(4, 2, 12, 10)],
    "a1": [(20, 10, 30, 20), (0, 0, 4, 4)],
    "a2": [(8, 8, 16, 16)],
    "a3": [(1, 1, 9, 9)],
}
TEST_NORMAL = ["t0", "t1"]
TEST_ABNORMAL = {"u0": [(10, 10, 20, 20)], "u1": [(2, 4, 10, 12)]}
DDAD = {
    "train": {"0": ["n0.png", "n1.png", "n2.png"], "unlabeled": {"0": ["n3.png", "n4.png"], "1": ["a2.png", "g0.png"]}},
    "test": {"0": ["n5.png"], "1": ["a0.png", "a1.png"]},
}


def _tree(root, label_format="physionet", suffix=".dicom"):
    return write_vindr(
        root, NORMAL, ABNORMAL, label_format, TEST_NORMAL, TEST_ABNORMAL, suffix=suffix, global_only=["g0"]
    )


def _split_file(path, content=None):
    path.write_text(json.dumps(content or DDAD))
    return path


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def root(tmp_path):
    return _tree(tmp_path / "vindr")


@pytest.fixture
def split_file(tmp_path):
    return _split_file(tmp_path / "ddad.json")


def _datamodule(root, split_file=None, **kwargs):
    settings = {"image_size": (15, 20), "num_workers": 0, "val_normal": 1, "val_abnormal": 1}
    if split_file is not None:
        settings.update(split_file=split_file, split_sha256=_sha256(split_file))
    return VinDrCXR(root, **{**settings, **kwargs})


def _ids(dataset, label=None):
    samples = dataset.samples
    return set(samples.image_id if label is None else samples[samples.label_index == label].image_id)


def _mask(dataset, image_id):
    samples = dataset.samples
    return np.asarray(Image.open(samples[samples.image_id == image_id].mask_path.iloc[0])) > 0


@contextmanager
def _serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("label_format", ["physionet", "competition"])
def test_normal_means_every_radiologist_says_no_finding(tmp_path, label_format):
    root = _tree(tmp_path / "vindr", label_format)
    labels = VinDrCXR(root).labels("train")
    global_only = {"g0"} if label_format == "competition" else set()  # the competition has no global labels
    assert {key for key, normal in labels.normal.items() if normal} == set(NORMAL) | global_only
    assert {key for key, normal in labels.normal.items() if not normal} >= set(ABNORMAL)  # R3 said "No finding"
    # R1's two boxes and R2's shifted copy of the first
    assert sorted(labels.boxes["a1"]) == [(0.0, 0.0, 4.0, 4.0), (20.0, 10.0, 30.0, 20.0), (21.0, 11.0, 31.0, 21.0)]


def test_ddad_split_picks_exactly_the_listed_ids(root, split_file):
    datamodule = _datamodule(root, split_file)
    datamodule.setup()
    assert _ids(datamodule.train_data) == {"n0", "n1", "n2"}
    assert _ids(datamodule.test_data, 0) == {"n5"}
    assert _ids(datamodule.test_data, 1) == {"a0", "a1"}
    assert _ids(datamodule.val_data, 0) <= {"n3", "n4"}
    assert _ids(datamodule.val_data, 1) <= {"a2", "g0"}
    assert len(datamodule.val_data) == 2
    assert datamodule.test_data.task == "segmentation"


@pytest.mark.parametrize("label_format", ["physionet", "competition"])
def test_masks_are_the_union_of_all_readers_boxes_after_resizing(tmp_path, split_file, label_format):
    root = _tree(tmp_path / "vindr", label_format, suffix=".dcm" if label_format == "competition" else ".dicom")
    datamodule = _datamodule(root, split_file)
    datamodule.setup()
    expected = np.zeros((15, 20), dtype=bool)
    expected[1:5, 2:6] = True  # R1: (4, 2, 12, 10) halved
    expected[1:6, 2:7] = True  # R2: (5, 3, 13, 11) halved, touched pixels
    np.testing.assert_array_equal(_mask(datamodule.test_data, "a0"), expected)
    item = datamodule.test_data[list(datamodule.test_data.samples.image_id).index("a0")]
    assert item.image.shape == (3, 15, 20)
    assert item.gt_mask.shape == (15, 20)
    assert int(item.gt_mask.sum()) == int(expected.sum())
    normal = datamodule.test_data[list(datamodule.test_data.samples.image_id).index("n5")]
    assert not normal.gt_mask.any()
    assert datamodule.test_data.samples.set_index("image_id").mask_path["n5"] == ""


def test_abnormal_image_without_boxes_has_an_empty_mask(root, split_file):
    datamodule = _datamodule(root, split_file, val_normal=0, val_abnormal=2)
    datamodule.setup()
    assert _ids(datamodule.val_data, 1) == {"a2", "g0"}
    assert not _mask(datamodule.val_data, "g0").any()
    assert _mask(datamodule.val_data, "a2").any()


def test_official_split(root):
    datamodule = _datamodule(root, split="physionet")
    datamodule.setup()
    train, val, test = datamodule.train_data, datamodule.val_data, datamodule.test_data
    assert _ids(train) | _ids(val, 0) == set(NORMAL)
    assert not _ids(train) & _ids(val)
    assert _ids(val, 1) <= {*ABNORMAL, "g0"}
    assert _ids(test, 0) == set(TEST_NORMAL)
    assert _ids(test, 1) == set(TEST_ABNORMAL)
    expected = np.zeros((15, 20), dtype=bool)
    expected[2:6, 1:5] = True  # consensus box (2, 4, 10, 12) halved
    np.testing.assert_array_equal(_mask(test, "u1"), expected)


def test_official_split_needs_physionet_labels(tmp_path):
    root = _tree(tmp_path / "vindr", "competition")
    with pytest.raises(ValueError, match="no test labels"):
        _datamodule(root, split="physionet").setup()


def test_ddad_labels_come_from_the_json_and_disagreements_are_logged(root, tmp_path, caplog):
    content = json.loads(json.dumps(DDAD))
    content["test"]["0"].append("a3.png")
    split_file = _split_file(tmp_path / "changed.json", content)
    with caplog.at_level(logging.WARNING):
        datamodule = _datamodule(root, split_file, ddad_cleaning=False)
        datamodule.setup()
    assert "a3" in _ids(datamodule.test_data, 0)
    assert "1 normal image(s) of the DDAD test split are labelled abnormal" in caplog.text


def test_pinned_checksum_rejects_another_file_and_keeps_the_users_file(root, split_file):
    datamodule = VinDrCXR(root, split_file=split_file, image_size=8, num_workers=0)
    with pytest.raises(ChecksumError, match=DDAD_SPLIT_SHA256):
        datamodule.setup()
    assert split_file.is_file()


def test_split_file_is_downloaded_through_the_checksum(root, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    source = _split_file(served / "vin_data.json")
    with _serve(served) as url:
        wrong = VinDrCXR(root, split_url=f"{url}/vin_data.json", cache_dir=tmp_path / "c1", image_size=8)
        with pytest.raises(ChecksumError, match=rf"is {_sha256(source)}, expected {DDAD_SPLIT_SHA256}.*\.rejected"):
            wrong.prepare_data()
        # kept for inspection under a name no later run reads
        assert [path.name for path in (tmp_path / "c1").glob("*.json*")] == ["ddad_vin_data.json.rejected"]
        assert (tmp_path / "c1" / "ddad_vin_data.json.rejected").read_bytes() == source.read_bytes()
        datamodule = _datamodule(
            root, split_url=f"{url}/vin_data.json", split_sha256=_sha256(source), cache_dir=tmp_path / "c2"
        )
        datamodule.prepare_data()
    assert (tmp_path / "c2" / "ddad_vin_data.json").read_bytes() == source.read_bytes()
    datamodule.setup()  # no server needed any more
    assert _ids(datamodule.train_data) == {"n0", "n1", "n2"}


def test_real_ddad_split_file(shared_dir, root):
    path = shared_dir / "data" / "ddad_split.json"
    lists = VinDrCXR(root, split_file=path).ddad_split()
    assert len(lists["train"]) == 4000
    assert len(lists["test_normal"]) == len(lists["test_abnormal"]) == 1000
    assert all(len(key) == 32 and not key.endswith(".png") for key in lists["train"])
    assert not set(lists["train"]) & (set(lists["test_normal"]) | set(lists["test_abnormal"]))


def test_missing_labels(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"image_labels_train\.csv .*train\.csv"):
        VinDrCXR(tmp_path / "empty").labels("train")


def test_unknown_column_layout(root, split_file):
    path = root / "annotations" / "annotations_train.csv"
    pd.read_csv(path).rename(columns={"x_min": "xmin"}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"annotations_train\.csv: unknown column layout .*\['x_min'\]"):
        _datamodule(root, split_file).setup()


def test_id_in_split_file_but_not_in_labels(root, tmp_path):
    content = json.loads(json.dumps(DDAD))
    content["train"]["0"].append("zz.png")
    with pytest.raises(ValueError, match=r"'zz' of the train split is not in .*image_labels_train\.csv"):
        _datamodule(root, _split_file(tmp_path / "x.json", content)).setup()


def test_image_listed_but_absent(root, split_file):
    (root / "train" / "n1.dicom").unlink()
    with pytest.raises(FileNotFoundError, match=r"n1\.dicom is listed in .*image_labels_train\.csv but does not exist"):
        _datamodule(root, split_file).setup()


def test_dicom_without_pixel_data(root, split_file):
    write_dicom(root / "train" / "n2.dicom", None)
    with pytest.raises(ValueError, match=r"n2\.dicom.*no pixel data"):
        _datamodule(root, split_file).setup()


def test_malformed_box(root, split_file):
    path = root / "annotations" / "annotations_train.csv"
    table = pd.read_csv(path)
    row = table.index[table.image_id == "a0"][0]
    table.loc[row, "x_max"] = 1.0  # x_max < x_min
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"annotations_train\.csv, line {row + 2}: malformed box"):
        _datamodule(root, split_file).setup()


def test_fit_and_test(root, split_file, tmp_path):
    datamodule = _datamodule(root, split_file, image_size=32, train_batch_size=3, eval_batch_size=4)
    results = fit_and_test(datamodule, tmp_path / "results")
    assert 0.0 <= results["image_AUROC"] <= 1.0
    assert 0.0 <= results["pixel_AUROC"] <= 1.0


def test_config_matches_the_defaults():
    check_config("vindr_cxr.yaml", VinDrCXR)


def test_invalid_label_value(root, split_file):
    path = root / "annotations" / "image_labels_train.csv"
    table = pd.read_csv(path)
    table.loc[3, "Cardiomegaly"] = 2
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"image_labels_train\.csv, line 5: 'Cardiomegaly' is '2'; expected 0 or 1"):
        _datamodule(root, split_file).setup()


def test_monochrome1_missing_window_and_compressed_dicoms_in_the_tree(root, split_file):
    pixels = np.random.default_rng(7).integers(0, 4096, size=(32, 40), dtype=np.uint16)  # JPEG 2000 needs >= 32
    write_dicom(root / "train" / "n0.dicom", pixels, window=(2048, 3000))
    write_dicom(root / "train" / "n1.dicom", pixels, window=(2048, 3000), transfer_syntax=JPEG2000Lossless)
    write_dicom(root / "train" / "n2.dicom", pixels, window=(2048, 3000), photometric="MONOCHROME1")
    write_dicom(root / "train" / "n5.dicom", pixels)  # no window: min-max scaling
    datamodule = _datamodule(root, split_file, image_size=(32, 40))
    datamodule.setup()
    samples = pd.concat([datamodule.train_data.samples, datamodule.test_data.samples]).set_index("image_id")
    cached = {key: read_grey_or_rgb(samples.image_path[key]) for key in ("n0", "n1", "n2", "n5")}
    level = 1 / 65535  # the cache is 16-bit: nothing of the 12-bit DICOM is lost
    windowed = np.clip((pixels - 2047.5) / 2999 + 0.5, 0, 1)
    np.testing.assert_allclose(cached["n0"], windowed, atol=level)
    np.testing.assert_array_equal(cached["n1"], cached["n0"])
    np.testing.assert_allclose(cached["n2"], 1 - cached["n0"], atol=1.5 * level)
    expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(cached["n5"], expected, atol=level)


@pytest.mark.parametrize("label_format", ["physionet", "competition"])
def test_ids_of_digits_only_keep_their_leading_zeros(tmp_path, label_format):
    root = write_vindr(
        tmp_path / "vindr",
        ["000123", "004560", "0789"],
        {"001000": [(4, 2, 12, 10)]},
        label_format,
        ["00042"],
        {"0099": [(10, 10, 20, 20)]},
    )
    labels = VinDrCXR(root).labels("train")
    assert sorted(labels.normal) == ["000123", "001000", "004560", "0789"]
    assert list(labels.boxes) == ["001000"]
    if label_format == "physionet":
        datamodule = _datamodule(root, split="physionet")
        datamodule.setup()  # the files are found under their own names
        assert _ids(datamodule.train_data) | _ids(datamodule.val_data) == {"000123", "004560", "0789", "001000"}
        assert _ids(datamodule.test_data) == {"00042", "0099"}


def test_box_entirely_outside_its_image_is_an_error(root, split_file):
    path = root / "annotations" / "annotations_train.csv"
    table = pd.read_csv(path)
    row = table.index[table.image_id == "a0"][0]
    table.loc[row, ["x_min", "y_min", "x_max", "y_max"]] = [50, 5, 60, 9]  # the image is 40 x 30
    table.to_csv(path, index=False)
    message = r"Box \(x_min=50, y_min=5, x_max=60, y_max=9\) of image 'a0' \(.*a0\.dicom\) lies entirely outside"
    with pytest.raises(ValueError, match=message):
        _datamodule(root, split_file).setup()


# ------------------------------------------------------------------ DDAD cleaning (Baugh et al.) and VinDr_ts

CLEAN_NORMAL = [f"n{i}" for i in range(10)]
CLEAN_ABNORMAL = {**ABNORMAL, "a4": [(2, 2, 6, 6)]}
CLEAN_DDAD = {  # a0-a4 were labelled abnormal by R1 and R2 (R3: "No finding"); g0 by all three (PhysioNet)
    "train": {
        "0": ["n0.png", "a0.png", "n1.png", "a1.png"],
        "unlabeled": {"0": ["n3.png", "n4.png", "n7.png"], "1": ["g0.png", "a4.png"]},
    },
    "test": {"0": ["n2.png", "a2.png"], "1": ["a3.png"]},
}


@pytest.mark.parametrize("label_format", ["physionet", "competition"])
def test_ddad_cleaning_replaces_images_a_radiologist_labelled_abnormal(tmp_path, label_format, caplog):
    root = write_vindr(tmp_path / "vindr", CLEAN_NORMAL, CLEAN_ABNORMAL, label_format, global_only=["g0"])
    split_file = _split_file(tmp_path / "ddad.json", CLEAN_DDAD)
    with caplog.at_level(logging.INFO, logger="anomalib_medical.data.vindr_cxr"):
        datamodule = _datamodule(root, split_file)
        datamodule.setup()
    # all-normal images in neither cleaned list, sorted: n3 n4 n5 n6 n7 n8 n9, and g0 first in the competition
    # copy (no global labels there); training takes the first two, the normal test list the last one
    padding, validation = (["n3", "n4"], {"n7"}) if label_format == "physionet" else (["g0", "n3"], {"n4", "n7"})
    assert _ids(datamodule.train_data) == {"n0", "n1", *padding}
    assert _ids(datamodule.test_data, 0) == {"n2", "n9"}
    assert _ids(datamodule.test_data, 1) == {"a3"}
    assert _ids(datamodule.val_data, 0) <= validation  # the unlabelled normal pool less the padding
    assert _ids(datamodule.val_data, 1) <= ({"g0", "a4"} if label_format == "physionet" else {"a4"})
    assert len(datamodule.val_data) == 2
    assert "replaced 2 of 4 training and 1 of 2 normal test images" in caplog.text


def test_ddad_cleaning_off_keeps_the_published_lists(tmp_path):
    root = write_vindr(tmp_path / "vindr", CLEAN_NORMAL, CLEAN_ABNORMAL, global_only=["g0"])
    datamodule = _datamodule(root, _split_file(tmp_path / "ddad.json", CLEAN_DDAD), ddad_cleaning=False)
    datamodule.setup()
    assert _ids(datamodule.train_data) == {"n0", "a0", "n1", "a1"}
    assert _ids(datamodule.test_data, 0) == {"n2", "a2"}


def test_ddad_cleaning_without_enough_normal_images(tmp_path):
    root = write_vindr(tmp_path / "vindr", CLEAN_NORMAL[:4], CLEAN_ABNORMAL, global_only=["g0"])
    content = {**CLEAN_DDAD, "train": {**CLEAN_DDAD["train"], "unlabeled": {"0": ["n3.png"], "1": ["g0.png"]}}}
    with pytest.raises(ValueError, match=r"needs 3 all-normal images of .*image_labels_train\.csv .* there are 1"):
        _datamodule(root, _split_file(tmp_path / "ddad.json", content)).setup()


def test_ddad_split_tested_on_the_official_test_set(root, split_file):
    datamodule = _datamodule(root, split_file, test_set="official")
    datamodule.setup()
    assert _ids(datamodule.train_data) == {"n0", "n1", "n2"}  # DDAD's training images
    assert _ids(datamodule.val_data, 0) <= {"n3", "n4"}
    assert _ids(datamodule.test_data, 0) == set(TEST_NORMAL)
    assert _ids(datamodule.test_data, 1) == set(TEST_ABNORMAL)
    expected = np.zeros((15, 20), dtype=bool)
    expected[2:6, 1:5] = True  # consensus box (2, 4, 10, 12) halved
    np.testing.assert_array_equal(_mask(datamodule.test_data, "u1"), expected)


def test_official_test_set_needs_physionet_labels(tmp_path, split_file):
    root = _tree(tmp_path / "vindr", "competition")
    with pytest.raises(ValueError, match="no test labels"):
        _datamodule(root, split_file, test_set="official").setup()


def test_unknown_test_set(root):
    with pytest.raises(ValueError, match="test_set must be 'split' or 'official', got 'ddad_ts'"):
        VinDrCXR(root, test_set="ddad_ts")


def test_cleaning_rule_keeps_the_order_and_pads_from_both_ends(tmp_path):
    normal = {key: True for key in ("h5", "h1", "h3", "h2", "h4", "h0")} | {"x1": False, "x0": False, "y0": False}
    labels = VinDrLabels(normal, {}, tmp_path / "labels.csv")
    cleaning = clean_ddad_split(["h3", "x1", "h0", "x0"], ["y0", "h1"], labels)
    assert cleaning.train == ["h3", "h0", "h2", "h4"]  # kept in DDAD's order, then the first leftovers (sorted)
    assert cleaning.test_normal == ["h1", "h5"]  # then the last leftover
    assert (cleaning.removed_train, cleaning.removed_test) == (["x1", "x0"], ["y0"])
    assert cleaning.padding == {"h2", "h4", "h5"}
    untouched = clean_ddad_split(["h3"], ["h1"], labels)  # nothing to replace: nothing added
    assert (untouched.train, untouched.test_normal, untouched.padding) == (["h3"], ["h1"], frozenset())
