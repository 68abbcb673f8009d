"""Preprocessing cache: resizing, masks from scaled boxes, reuse, invalidation, resumption, atomic entries."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalib_medical.data.utils.boxes import boxes_to_mask
from anomalib_medical.data.utils.cache import CacheEntry, Preprocessing, RadiographCache
from tests.unit.fake_chest_data import gradient, write_dicom, write_xray


def _entries(tmp_path, count=3, boxes=None):
    return [
        CacheEntry(f"img{i}", write_xray(tmp_path / "src" / f"img{i}.dcm", (30, 40), seed=i), boxes)
        for i in range(count)
    ]


def _count_loads(monkeypatch):
    calls = []
    original = Preprocessing.load

    def counting(self, source):
        calls.append(source.name)
        return original(self, source)

    monkeypatch.setattr(Preprocessing, "load", counting)
    return calls


def test_images_are_resized_grey_pngs_with_their_original_size(tmp_path):
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(15, 20)))
    files = cache.build(_entries(tmp_path))
    assert [file.image.name for file in files] == ["img0.png", "img1.png", "img2.png"]
    assert all(file.mask is None for file in files)
    with Image.open(files[0].image) as image:
        assert image.mode == "L"
        assert image.size == (20, 15)
        assert image.text["original_size"] == "30x40"
    assert (cache.directory / "settings.json").is_file()
    assert cache.directory.parent == tmp_path / "cache"


def test_resized_intensities_follow_the_source(tmp_path):
    source = write_dicom(tmp_path / "ramp.dcm", gradient(8, 64))
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(4, 16)))
    (files,) = cache.build([CacheEntry("ramp", source)])
    row = np.asarray(Image.open(files.image))[0].astype(int)
    assert row[0] < 16
    assert row[-1] > 240
    assert np.all(np.diff(row) > 0)


def test_histogram_equalisation_spreads_a_skewed_histogram(tmp_path):
    pixels = (np.linspace(0, 1, 64) ** 4 * 4095).round().astype(np.uint16)[None, :].repeat(8, axis=0)
    source = write_dicom(tmp_path / "skewed.dcm", pixels)
    plain = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(8, 64)))
    equalised = RadiographCache(
        tmp_path / "cache", "Test", Preprocessing(image_size=(8, 64), histogram_equalisation=True)
    )
    (plain_files,) = plain.build([CacheEntry("x", source)])
    (equalised_files,) = equalised.build([CacheEntry("x", source)])
    plain_mean = np.asarray(Image.open(plain_files.image)).mean()
    equalised_values = np.asarray(Image.open(equalised_files.image))
    assert plain_mean < 70
    assert 110 < equalised_values.mean() < 145
    assert equalised_values.max() == 255


def test_mask_marks_the_scaled_box(tmp_path):
    box = (10.0, 4.0, 20.0, 12.0)  # x_min, y_min, x_max, y_max on a 40 x 30 image
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(15, 20)))
    (files,) = cache.build(_entries(tmp_path, 1, boxes=(box,)))
    mask = np.asarray(Image.open(files.mask))
    assert mask.shape == (15, 20)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 5, 5, 9)
    assert set(np.unique(mask)) == {0, 255}


def test_boxes_to_mask_takes_the_union_and_clips():
    mask = boxes_to_mask([(0, 0, 2, 2), (1, 1, 3, 3), (8, 8, 50, 50)], original_size=(10, 10), size=(10, 10))
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[0:2, 0:2] = 255
    expected[1:3, 1:3] = 255
    expected[8:, 8:] = 255
    np.testing.assert_array_equal(mask, expected)


def test_non_square_scaling_covers_touched_pixels():
    mask = boxes_to_mask([(3, 1, 5, 3)], original_size=(4, 8), size=(8, 4))  # x halves, y doubles
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 5, 1, 2)


def test_empty_boxes_give_an_empty_mask(tmp_path):
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8)))
    (files,) = cache.build(_entries(tmp_path, 1, boxes=()))
    assert not np.asarray(Image.open(files.mask)).any()


def test_second_build_reuses_the_cache(tmp_path, monkeypatch):
    entries = _entries(tmp_path)
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8)))
    files = cache.build(entries)
    stamps = [file.image.stat().st_mtime_ns for file in files]
    calls = _count_loads(monkeypatch)
    again = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8))).build(entries)
    assert calls == []
    assert again == files
    assert [file.image.stat().st_mtime_ns for file in again] == stamps


def test_other_settings_use_another_folder(tmp_path, monkeypatch):
    entries = _entries(tmp_path)
    first = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8)))
    first.build(entries)
    calls = _count_loads(monkeypatch)
    for other in (
        Preprocessing(image_size=(12, 16)),
        Preprocessing(image_size=(6, 8), apply_window=False),
        Preprocessing(image_size=(6, 8), histogram_equalisation=True),
        Preprocessing(image_size=(6, 8), intensity_fallback="bit_depth"),
    ):
        cache = RadiographCache(tmp_path / "cache", "Test", other)
        assert cache.directory != first.directory
        cache.build(entries)
    assert len(calls) == 4 * len(entries)
    assert Preprocessing(image_size=(6, 8)).key == first.preprocessing.key


def test_new_boxes_make_a_new_mask_without_reading_the_image_again(tmp_path, monkeypatch):
    source = write_xray(tmp_path / "a.dcm", (30, 40))
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(15, 20)))
    (old,) = cache.build([CacheEntry("a", source, ((0, 0, 4, 4),))])
    calls = _count_loads(monkeypatch)
    (new,) = cache.build([CacheEntry("a", source, ((20, 10, 40, 30),))])
    assert calls == []
    assert new.image == old.image
    assert new.mask != old.mask
    rows, cols = np.nonzero(np.asarray(Image.open(new.mask)))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 14, 10, 19)


def test_interrupted_build_leaves_only_complete_entries_and_resumes(tmp_path, monkeypatch):
    entries = _entries(tmp_path, 4)
    original = Preprocessing.apply

    def failing(self, image):
        if failing.calls == 2:
            raise KeyboardInterrupt
        failing.calls += 1
        return original(self, image)

    failing.calls = 0
    monkeypatch.setattr(Preprocessing, "apply", failing)
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8)))
    with pytest.raises(KeyboardInterrupt):
        cache.build(entries)
    written = sorted(path.name for path in (cache.directory / "images").iterdir())
    assert written == ["img0.png", "img1.png"]
    monkeypatch.setattr(Preprocessing, "apply", original)
    calls = _count_loads(monkeypatch)
    cache.build(entries)
    assert calls == ["img2.dcm", "img3.dcm"]


def test_a_write_killed_midway_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8)))
    with pytest.raises(OSError, match="disk full"):
        cache.build(_entries(tmp_path, 1))
    leftovers = [path for path in cache.directory.rglob("*") if path.is_file() and path.name != "settings.json"]
    assert leftovers == []
    assert cache.missing(_entries(tmp_path, 1))


def test_worker_threads_give_the_same_files(tmp_path):
    entries = _entries(tmp_path, 3, boxes=((1, 1, 9, 9),))
    serial = RadiographCache(tmp_path / "serial", "Test", Preprocessing(image_size=(6, 8))).build(entries)
    parallel = RadiographCache(tmp_path / "parallel", "Test", Preprocessing(image_size=(6, 8))).build(entries, 2)
    for one, two in zip(serial, parallel, strict=True):
        assert one.image.read_bytes() == two.image.read_bytes()
        assert one.mask.read_bytes() == two.mask.read_bytes()


def test_bad_requests_are_rejected(tmp_path):
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(6, 8)))
    source = write_xray(tmp_path / "a.dcm")
    with pytest.raises(ValueError, match="Duplicate"):
        cache.build([CacheEntry("a", source), CacheEntry("a", source)])
    with pytest.raises(ValueError, match="Invalid cache key"):
        CacheEntry("../a", source)
    with pytest.raises(FileNotFoundError, match=r"missing\.dcm"):
        cache.build([CacheEntry("b", tmp_path / "missing.dcm")])
    with pytest.raises(ValueError, match="image_size"):
        Preprocessing(image_size=(0, 8))


def test_jpeg_sources_are_read_with_pillow(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((10, 12), 200, dtype=np.uint8)).save(path)
    cache = RadiographCache(tmp_path / "cache", "Test", Preprocessing(image_size=(5, 6)))
    (files,) = cache.build([CacheEntry("a", path)])
    assert np.all(np.abs(np.asarray(Image.open(files.image)).astype(int) - 200) <= 1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg"):
        cache.build([CacheEntry("bad", bad)])
