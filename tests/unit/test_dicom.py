"""DICOM reading: display pipeline (modality LUT, VOI LUT/window, MONOCHROME1), bit depth, compression, errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, RLELossless

from anomalib_medical.data.utils.dicom import read_dicom, read_dicom_values
from tests.unit.fake_chest_data import gradient, write_dicom


def test_no_window_scales_by_min_and_max(tmp_path):
    pixels = gradient(3, 9, low=100, high=900)
    image = read_dicom(write_dicom(tmp_path / "a.dcm", pixels))
    assert image.dtype == np.float32
    assert image.shape == (3, 9)
    np.testing.assert_allclose(image, (pixels - 100.0) / 800.0, atol=1e-6)


def test_bit_depth_fallback_scales_by_stored_range(tmp_path):
    pixels = gradient(2, 5, low=100, high=900)
    image = read_dicom(write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12), fallback="bit_depth")
    np.testing.assert_allclose(image, pixels / 4095.0, atol=1e-6)
    image = read_dicom(write_dicom(tmp_path / "b.dcm", pixels, bits_stored=10), fallback="bit_depth")
    np.testing.assert_allclose(image, pixels / 1023.0, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    pixels = gradient(2, 7)
    normal = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels))
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)
    assert inverted[0, 0] == pytest.approx(1.0)  # lowest stored value is displayed white in MONOCHROME1


@pytest.mark.parametrize("function", [None, "LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("rescale", [None, (2.0, -1000.0)])
def test_window_matches_pydicom(tmp_path, function, rescale):
    pixels = gradient(2, 64)
    center, width = (1500.0, 1200.0) if rescale else (2048.0, 1024.0)
    path = write_dicom(tmp_path / "w.dcm", pixels, window=(center, width), voi_function=function, rescale=rescale)
    image = read_dicom(path)
    ds = pydicom.dcmread(path)
    reference = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    low, high = (0.0, 4095.0) if rescale is None else (-1000.0, 4095.0 * 2 - 1000)
    np.testing.assert_allclose(image, (reference - low) / (high - low), atol=1e-6)
    assert image.min() < 0.05
    assert image.max() > 0.95


def test_linear_window_clips_outside_the_window(tmp_path):
    pixels = np.array([[0, 1000, 1536, 2047, 2048, 2560, 3100, 4095]], dtype=np.uint16)
    image = read_dicom(write_dicom(tmp_path / "w.dcm", pixels, window=(2048, 1024)))
    assert image[0, 0] == 0.0
    assert image[0, 1] == 0.0
    assert image[0, -1] == 1.0
    assert image[0, -2] == 1.0
    assert image[0, 3] == pytest.approx(0.5, abs=1e-3)  # centre - 0.5 maps to the middle (PS3.3 C.11.2.1.2.1)


def test_apply_window_false_ignores_the_window(tmp_path):
    pixels = gradient(2, 9)
    path = write_dicom(tmp_path / "w.dcm", pixels, window=(2048, 100))
    np.testing.assert_allclose(read_dicom(path, apply_window=False), pixels / 4095.0, atol=1e-6)
    windowed = read_dicom(path)[0]
    assert np.count_nonzero((windowed > 0) & (windowed < 1)) == 1  # a 100-wide window on a 0..4095 ramp


def test_voi_lut_sequence_is_applied_and_preferred_to_the_window(tmp_path):
    pixels = gradient(2, 33)
    path = write_dicom(tmp_path / "lut.dcm", pixels, window=(10, 2))
    ds = pydicom.dcmread(path)
    table = (np.sqrt(np.arange(4096) / 4095.0) * 1000 + 24).round().astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = table.tolist()
    ds.VOILUTSequence = Sequence([item])
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    ds.save_as(path)
    image = read_dicom(path)
    expected = (table[pixels].astype(np.float64) - table.min()) / (table.max() - table.min())
    np.testing.assert_allclose(image, expected, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode_like_uncompressed(tmp_path, syntax):
    pixels = np.random.default_rng(0).integers(0, 4096, size=(32, 40), dtype=np.uint16)
    plain = read_dicom(write_dicom(tmp_path / "plain.dcm", pixels, window=(2048, 3000)))
    path = write_dicom(tmp_path / "packed.dcm", pixels, window=(2048, 3000), transfer_syntax=syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom(path), plain)


def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(ValueError, match=r"empty\.dcm.*no pixel data"):
        read_dicom(path)


def test_not_a_dicom_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not a dicom file at all")
    with pytest.raises(ValueError, match=r"junk\.dcm.*not a DICOM file"):
        read_dicom(path)


def test_colour_image_is_rejected(tmp_path):
    path = write_dicom(tmp_path / "rgb.dcm", gradient(2, 3), photometric="RGB")
    with pytest.raises(ValueError, match=r"rgb\.dcm.*'RGB'"):
        read_dicom(path)


def test_unusable_window_names_the_file(tmp_path):
    path = write_dicom(tmp_path / "bad.dcm", gradient(2, 3), window=(100, 0))
    with pytest.raises(ValueError, match=r"bad\.dcm.*window"):
        read_dicom(path)
    assert read_dicom(path, apply_window=False).max() == 1.0


def test_unknown_fallback_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="fallback"):
        read_dicom(write_dicom(tmp_path / "a.dcm", gradient(2, 3)), fallback="percentile")  # type: ignore[arg-type]


def test_values_for_presets_are_modality_values_with_window_and_photometric(tmp_path):
    pixels = gradient(3, 9, low=100, high=900)
    path = write_dicom(tmp_path / "a.dcm", pixels, photometric="MONOCHROME1", window=(600, 400), rescale=(2, -100))
    read = read_dicom_values(path)
    np.testing.assert_array_equal(read.values, pixels * 2.0 - 100)
    assert read.values.dtype == np.float64
    assert read.window == (600.0, 400.0)
    assert read.monochrome1
    plain = read_dicom_values(write_dicom(tmp_path / "b.dcm", pixels))
    assert plain.window is None and not plain.monochrome1
    with pytest.raises(ValueError, match=r"c\.dcm: the DICOM file has no pixel data"):
        read_dicom_values(write_dicom(tmp_path / "c.dcm", None))
