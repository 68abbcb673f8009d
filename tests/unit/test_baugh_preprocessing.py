"""Baugh et al.'s preprocessing preset: the authors' order step by step, its cache storage, its settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import exposure, transform

from anomalib_medical.data import CheXpert, COVIDx, RSNAPneumonia
from anomalib_medical.data.utils.baugh import BaughPreprocessing, make_preprocessing
from anomalib_medical.data.utils.cache import CacheEntry, Preprocessing, RadiographCache
from anomalib_medical.data.utils.reader import read_grey_or_rgb
from anomalib_medical.data.vindr_cxr import VinDrCXR
from anomalib_medical.models.synthetic_task_localiser.torch_model import SyntheticTaskLocaliserModel
from tests.unit.fake_chest_data import write_dicom, write_vindr

LEVEL = 2 / 65535  # one step of the 16-bit cache on [-1, 1]


def _radiograph(seed: int = 0) -> np.ndarray:
    """A 12-bit 48 x 40 image: noisy anatomy-like blobs inside a dark collimated border (sharp edges)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:48, :40]
    body = 2500 + 900 * np.sin(rows / 7.0) * np.cos(columns / 5.0)
    pixels = body + rng.normal(0, 150, (48, 40))
    pixels[:4], pixels[:, :3] = 200, 200
    return np.clip(pixels, 0, 4095).round().astype(np.uint16)


def _authors_order(pixels: np.ndarray, window: tuple[float, float] | None, monochrome1: bool, size) -> np.ndarray:
    """Baugh et al.'s vindr_cxr_preproc.py, step by step, with scikit-image and numpy."""
    cubic = {"order": 3, "anti_aliasing": True, "preserve_range": True}
    step1 = transform.resize(pixels.astype(float), output_shape=(512, 512), **cubic)
    if window is not None:
        centre, width = window
        step2 = np.clip(step1, centre - width / 2, centre + width / 2)
    else:
        step2 = step1
    step3 = exposure.equalize_hist(step2, 256)
    step4 = step3.max() - step3 if monochrome1 else step3
    step5 = np.interp(step4, [np.min(step4), np.max(step4)], [-1.0, 1.0])
    return transform.resize(step5, output_shape=size, **cubic)


def _cached(tmp_path, source, preprocessing) -> np.ndarray:
    """Build one cache entry and read it back as the model sees it: ``2 x - 1``."""
    (files,) = RadiographCache(tmp_path / "cache", "Test", preprocessing).build([CacheEntry("x", source)])
    return read_grey_or_rgb(files.image).astype(np.float64) * 2 - 1


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_preset_follows_the_authors_order_on_a_dicom(tmp_path, photometric):
    pixels, window = _radiograph(), (2400.0, 1600.0)  # the window clips both the border and the bright blobs
    source = write_dicom(tmp_path / "x.dicom", pixels, photometric=photometric, window=window)
    cached = _cached(tmp_path, source, BaughPreprocessing(image_size=(32, 24)))
    expected = _authors_order(pixels, window, photometric == "MONOCHROME1", (32, 24))
    assert cached.shape == (32, 24)
    assert np.abs(expected).max() <= 1  # skimage's resize clips to its input's range: nothing to clip in the cache
    np.testing.assert_allclose(cached, expected, atol=LEVEL / 2 + 1e-7)
    assert -1 <= cached.min() < -0.9 and 0.9 < cached.max() <= 1  # min-max to [-1, 1] before the last resize


def test_window_and_inversion_matter(tmp_path):
    pixels, window = _radiograph(1), (2400.0, 1600.0)
    mono2 = write_dicom(tmp_path / "m2.dicom", pixels, window=window)
    mono1 = write_dicom(tmp_path / "m1.dicom", pixels, window=window, photometric="MONOCHROME1")
    preset = BaughPreprocessing(image_size=(32, 24))
    two, one = _cached(tmp_path, mono2, preset), _cached(tmp_path, mono1, preset)
    np.testing.assert_allclose(one, -two, atol=LEVEL)  # inverted after equalising: min-max is odd
    unwindowed = _cached(tmp_path, mono2, BaughPreprocessing(image_size=(32, 24), apply_window=False))
    np.testing.assert_allclose(unwindowed, _authors_order(pixels, None, False, (32, 24)), atol=LEVEL)
    assert np.abs(unwindowed - two).max() > 0.05
    display = _cached(tmp_path, mono2, Preprocessing(image_size=(32, 24), histogram_equalisation=True))
    assert np.abs(display - two).max() > 0.05  # not the display pipeline


def test_png_source_has_no_window_or_inversion(tmp_path):
    pixels = _radiograph(2)
    path = tmp_path / "x.png"
    Image.fromarray(pixels * 16).save(path)  # 16-bit PNG
    cached = _cached(tmp_path, path, BaughPreprocessing(image_size=(32, 24)))
    expected = _authors_order(pixels * 16 / 65535, None, False, (32, 24))
    np.testing.assert_allclose(cached, expected, atol=LEVEL)


def test_preset_settings(tmp_path):
    baugh = make_preprocessing("baugh", 32)
    assert isinstance(baugh, BaughPreprocessing)
    assert baugh.image_size == (32, 32)
    assert baugh.key != Preprocessing(image_size=32).key  # another cache folder
    assert baugh.key != BaughPreprocessing(image_size=32, intermediate_size=256).key
    assert type(make_preprocessing("display", 32)) is Preprocessing
    cache = RadiographCache(tmp_path, "Test", baugh)
    cache._write_settings()
    assert json.loads((cache.directory / "settings.json").read_text())["preset"] == "baugh"
    with pytest.raises(ValueError, match="the 'baugh' preset equalises itself"):
        make_preprocessing("baugh", 32, histogram_equalisation=True)
    with pytest.raises(ValueError, match="preprocessing must be 'display' or 'baugh', got 'paper'"):
        make_preprocessing("paper", 32)  # type: ignore[arg-type]


def test_vindr_datamodule_with_the_preset(tmp_path):
    root = write_vindr(tmp_path / "vindr", ["n0", "n1"], {}, test_normal=["t0"], test_abnormal={"u0": [(4, 4, 9, 9)]})
    write_dicom(root / "test" / "u0.dicom", _radiograph(3), window=(2400.0, 1600.0), photometric="MONOCHROME1")
    settings = {"image_size": (32, 24), "val_normal": 1, "val_abnormal": 0, "num_workers": 0}
    datamodule = VinDrCXR(root, split="physionet", preprocessing="baugh", **settings)
    datamodule.setup()
    samples = datamodule.test_data.samples.set_index("image_id")
    item = datamodule.test_data[list(datamodule.test_data.samples.image_id).index("u0")]
    # what the localiser's network sees (its equalisation off, as in the recipe): the authors' array
    seen = SyntheticTaskLocaliserModel(depth=2, positional_encoding=False).to_task_space(item.image[None])
    expected = _authors_order(_radiograph(3), (2400.0, 1600.0), True, (32, 24))
    np.testing.assert_allclose(seen[0, 0].double().numpy(), expected, atol=LEVEL)
    assert "vindrcxr-" + make_preprocessing("baugh", (32, 24)).key in samples.image_path["u0"]


@pytest.mark.parametrize("datamodule_class", [CheXpert, COVIDx, RSNAPneumonia, VinDrCXR])
def test_every_cached_chest_datamodule_takes_the_preset(tmp_path, datamodule_class):
    baugh = datamodule_class(root=tmp_path, image_size=32, preprocessing="baugh", num_workers=0)
    assert isinstance(baugh.preprocessing, BaughPreprocessing)
    assert baugh.preprocessing.image_size == (32, 32)
    display = datamodule_class(root=tmp_path, image_size=32, num_workers=0)
    assert type(display.preprocessing) is Preprocessing
    with pytest.raises(ValueError, match="preprocessing must be 'display' or 'baugh'"):
        datamodule_class(root=tmp_path, preprocessing="paper")
