"""The full-depth reader and the datasets built on it: known pixel values for every stored type, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_medical.data import (
    RadiographFolder,
    RadiographPredictDataset,
    read_image_tensor,
)
from anomalib_medical.data.utils.images import InvalidImageError
from anomalib_medical.data.utils.reader import read_grey_or_rgb
from tests.unit.fake_chest_data import write_dicom
from tests.unit.test_chest_xray import SMALL_EXPECTED, make_tree, small_datamodule

STORED_16 = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
EXPECTED_16 = STORED_16 / 65535.0


def save_16bit(path: Path, values: np.ndarray = STORED_16, mode: str = "I;16") -> Path:
    """Write a 16-bit grey image (``I;16`` little-endian, ``I;16B`` big-endian) at the given path."""
    dtype = "<u2" if mode == "I;16" else ">u2"
    height, width = values.shape
    Image.frombytes(mode, (width, height), values.astype(dtype).tobytes()).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "mode"), [("le.png", "I;16"), ("le.tif", "I;16"), ("be.tif", "I;16B")], ids=["png", "tiff", "tiff-be"]
)
def test_16_bit_images_keep_every_level(tmp_path, name, mode):
    path = save_16bit(tmp_path / name, mode=mode)
    with Image.open(path) as image:
        assert image.mode == mode  # the file really is stored that way
    np.testing.assert_allclose(read_grey_or_rgb(path), EXPECTED_16, atol=1e-7)
    tensor = read_image_tensor(path)
    assert tensor.shape == (3, 2, 2)
    assert tensor.dtype == torch.float32
    for channel in tensor:
        np.testing.assert_allclose(channel.numpy(), EXPECTED_16, atol=1e-7)


def test_anomalibs_own_reader_saturates_what_ours_keeps(tmp_path):
    """The reason for our reader: anomalib's read_image turns a stored 1,000 of 65,535 into white."""
    from anomalib.data.utils import read_image

    path = save_16bit(tmp_path / "dark.png", np.full((2, 2), 1000, dtype=np.uint16))
    assert read_image(path, as_tensor=True).min() == 1.0
    torch.testing.assert_close(read_image_tensor(path), torch.full((3, 2, 2), 1000 / 65535))


def test_float_tiff_in_unit_range_is_kept_and_outside_is_min_max_scaled(tmp_path, caplog):
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(read_grey_or_rgb(tmp_path / "unit.tif"), unit)
    Image.fromarray(unit * 3000 - 1000).save(tmp_path / "hu.tif")
    np.testing.assert_allclose(read_grey_or_rgb(tmp_path / "hu.tif"), unit, atol=1e-6)
    assert "min-max" in caplog.text
    assert "hu.tif" in caplog.text


def test_32_bit_integer_image_of_16_bit_values_is_scaled_by_65535(tmp_path):
    Image.fromarray(STORED_16.astype(np.int32), mode="I").save(tmp_path / "int.tif")
    with Image.open(tmp_path / "int.tif") as image:
        assert image.mode == "I"
    np.testing.assert_allclose(read_grey_or_rgb(tmp_path / "int.tif"), EXPECTED_16, atol=1e-7)


def test_8_bit_grey_and_colour(tmp_path):
    grey = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_allclose(read_grey_or_rgb(tmp_path / "grey.png"), grey / 255.0, atol=1e-7)
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "red.png")
    tensor = read_image_tensor(tmp_path / "red.png")
    torch.testing.assert_close(tensor[0], torch.ones(2, 2))
    torch.testing.assert_close(tensor[1:], torch.zeros(2, 2, 2))


def test_dicom_goes_through_the_display_pipeline(tmp_path):
    pixels = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "scan.dcm", pixels, photometric="MONOCHROME1")
    expected = 1.0 - pixels / 4095.0  # min-max fallback (no window), MONOCHROME1 inverted
    np.testing.assert_allclose(read_image_tensor(path)[0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p: p.write_bytes(b"not an image at all"), "cannot be decoded"),
        (lambda p: p.write_bytes(b""), "cannot be decoded"),
        (lambda p: Image.fromarray(np.array([[np.nan, 0.5]], dtype=np.float32)).save(p), "NaN or infinite"),
        (
            lambda p: Image.new("L", (2, 2)).save(p, save_all=True, append_images=[Image.new("L", (2, 2))]),
            "2 frames",
        ),
    ],
    ids=["garbage", "empty", "nan", "multi-frame"],
)
def test_bad_files_name_the_file_and_the_fault(tmp_path, write, reason):
    path = tmp_path / "bad.tif"
    write(path)
    with pytest.raises(InvalidImageError, match=reason) as error:
        read_image_tensor(path)
    assert error.value.path == path


def test_dicom_without_pixel_data_names_the_file(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(InvalidImageError, match="no pixel data") as error:
        read_image_tensor(path)
    assert error.value.path == path


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    Image.new("L", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4,096 pixels is then more than twice the limit
    with pytest.raises(InvalidImageError, match="too many pixels") as error:
        read_image_tensor(tmp_path / "big.png")
    assert error.value.path == tmp_path / "big.png"


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image_tensor(tmp_path / "nope.png")


def test_chest_xray_serves_16_bit_pngs_at_full_depth(tmp_path):
    make_tree(tmp_path / "chest_xray", SMALL_EXPECTED)
    pngs = []
    for index, jpeg in enumerate(sorted((tmp_path / "chest_xray").rglob("*.jpeg"))):
        jpeg.unlink()
        pngs.append(save_16bit(jpeg.with_suffix(".png"), STORED_16 + index))
    datamodule = small_datamodule(tmp_path)
    datamodule.setup()
    item = datamodule.test_data[0]
    index = pngs.index(Path(item.image_path))
    torch.testing.assert_close(item.image, torch.from_numpy((STORED_16 + index) / 65535.0).float().expand(3, 2, 2))


def write_radiograph_folder(root: Path) -> None:
    """Normal 16-bit PNGs and DICOMs, abnormal DICOMs with PNG masks (anomalib's Folder layout)."""
    rng = np.random.default_rng(0)
    for folder in ("normal", "abnormal", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(4):
        save_16bit(root / "normal" / f"n{index}.png", rng.integers(0, 65536, (16, 16)).astype(np.uint16))
        write_dicom(root / "normal" / f"d{index}.dcm", rng.integers(0, 4096, (16, 16)).astype(np.uint16))
    for index in range(2):
        write_dicom(root / "abnormal" / f"a{index}.dcm", rng.integers(0, 4096, (16, 16)).astype(np.uint16))
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[4:8, 4:8] = 255
        Image.fromarray(mask).save(root / "masks" / f"a{index}.png")


def test_radiograph_folder_reads_dicoms_and_16_bit_pngs_with_masks(tmp_path):
    write_radiograph_folder(tmp_path)
    datamodule = RadiographFolder(
        name="mine",
        root=tmp_path,
        normal_dir="normal",
        abnormal_dir="abnormal",
        mask_dir="masks",
        train_batch_size=4,
        eval_batch_size=4,
        num_workers=0,
        seed=0,
    )
    datamodule.setup()
    everything = [*datamodule.train_data, *datamodule.val_data, *datamodule.test_data]
    suffixes = sorted(Path(item.image_path).suffix for item in everything)
    assert suffixes == [".dcm"] * 6 + [".png"] * 4  # nothing dropped
    for item in everything:
        torch.testing.assert_close(item.image, read_image_tensor(item.image_path))
        if Path(item.image_path).parent.name == "abnormal":
            assert int(item.gt_label) == 1
            assert item.gt_mask.sum() == 16
    png = next(item for item in everything if item.image_path.endswith(".png"))
    stored = np.asarray(Image.open(png.image_path)).astype(np.float64)
    np.testing.assert_allclose(png.image[0].numpy(), stored / 65535.0, atol=1e-7)


def test_predict_dataset_lists_a_folder_or_takes_one_file(tmp_path):
    write_radiograph_folder(tmp_path)
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    dataset = RadiographPredictDataset(tmp_path / "normal")
    assert len(dataset) == 8
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    assert batch.image.shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch.image[0], read_image_tensor(dataset.image_paths[0]))
    single = RadiographPredictDataset(tmp_path / "abnormal" / "a0.dcm")
    assert [Path(item.image_path).name for item in single] == ["a0.dcm"]
    with pytest.raises(InvalidImageError, match="unknown suffix"):
        RadiographPredictDataset(tmp_path / "normal" / "notes.txt")
    with pytest.raises(FileNotFoundError, match="missing"):
        RadiographPredictDataset(tmp_path / "missing")
