"""Preprocessing cache: 16-bit full-depth entries keyed on the source file, reuse, validation, invalidation, masks."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from anomalib_medical.data.utils.boxes import boxes_to_mask
from anomalib_medical.data.utils.cache import CACHE_FORMAT_VERSION, CacheEntry, Preprocessing, RadiographCache
from anomalib_medical.data.utils.dicom import read_dicom
from anomalib_medical.data.utils.reader import read_grey_or_rgb
from tests.unit.fake_chest_data import gradient, write_dicom, write_xray

LEVEL = 1 / 65535
"""One step of a cached 16-bit image."""


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


def _cache(tmp_path, size=(6, 8), name="Test", **settings):
    return RadiographCache(tmp_path / "cache", name, Preprocessing(image_size=size, **settings))


def _write_grey_png(path, value, size=(10, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)
    return path


def _replace(path, write):
    """Rewrite a source file and make sure its modification time changes (whatever the file system's clock)."""
    before = path.stat().st_mtime_ns
    write(path)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_images_are_resized_16_bit_grey_pngs_recording_their_source(tmp_path):
    cache = _cache(tmp_path, size=(15, 20))
    entries = _entries(tmp_path)
    files = cache.build(entries)
    assert [file.image.name.split("-")[0] for file in files] == ["img0", "img1", "img2"]
    assert all(file.mask is None for file in files)
    with Image.open(files[0].image) as image:
        assert image.mode == "I;16"
        assert image.size == (20, 15)
        assert image.text["original_size"] == "30x40"
        assert str(entries[0].source.resolve()) in image.text["source"]
    assert (cache.directory / "settings.json").is_file()
    assert cache.directory.parent == tmp_path / "cache"
    assert CACHE_FORMAT_VERSION == 2  # 8-bit caches of version 1 are not reused


def test_resized_intensities_follow_the_source(tmp_path):
    source = write_dicom(tmp_path / "ramp.dcm", gradient(8, 64))
    (files,) = _cache(tmp_path, size=(4, 16)).build([CacheEntry("ramp", source)])
    row = read_grey_or_rgb(files.image)[0]
    assert row[0] < 16 / 255
    assert row[-1] > 240 / 255
    assert np.all(np.diff(row) > 0)


def test_twelve_bit_dicom_keeps_its_levels(tmp_path):
    pixels = gradient(2, 4096)  # every 12-bit level once per row
    source = write_dicom(tmp_path / "ramp.dcm", pixels)
    (files,) = _cache(tmp_path, size=(2, 4096)).build([CacheEntry("ramp", source)])
    cached = read_grey_or_rgb(files.image)
    np.testing.assert_allclose(cached, read_dicom(source), atol=LEVEL)
    assert len(np.unique(cached)) == 4096  # an 8-bit cache keeps 256


def test_big_endian_16_bit_tiff_keeps_its_exact_values(tmp_path):
    stored = np.array([[0, 1], [40000, 65535]], dtype=np.uint16)
    source = tmp_path / "big_endian.tif"
    Image.frombytes("I;16B", (2, 2), stored.astype(">u2").tobytes()).save(source)
    with Image.open(source) as image:
        assert image.mode == "I;16B"
    (files,) = _cache(tmp_path, size=(2, 2)).build([CacheEntry("be", source)])
    np.testing.assert_allclose(read_grey_or_rgb(files.image), stored / 65535, atol=LEVEL)
    assert np.asarray(Image.open(files.image)).tolist() == stored.tolist()


def test_float_tiff_keeps_its_values(tmp_path):
    values = np.array([[0.0, 0.123456], [0.5, 1.0]], dtype=np.float32)
    source = tmp_path / "float.tif"
    Image.fromarray(values).save(source)
    (files,) = _cache(tmp_path, size=(2, 2)).build([CacheEntry("float", source)])
    np.testing.assert_allclose(read_grey_or_rgb(files.image), values, atol=LEVEL)


def test_colour_sources_become_the_mean_of_their_channels(tmp_path):
    source = tmp_path / "red.png"
    Image.fromarray(np.tile(np.array([255, 0, 51], dtype=np.uint8), (4, 4, 1))).save(source)
    (files,) = _cache(tmp_path, size=(4, 4)).build([CacheEntry("red", source)])
    np.testing.assert_allclose(read_grey_or_rgb(files.image), (255 + 0 + 51) / 3 / 255, atol=LEVEL)


def test_histogram_equalisation_spreads_a_skewed_histogram(tmp_path):
    pixels = (np.linspace(0, 1, 64) ** 4 * 4095).round().astype(np.uint16)[None, :].repeat(8, axis=0)
    source = write_dicom(tmp_path / "skewed.dcm", pixels)
    (plain,) = _cache(tmp_path, size=(8, 64)).build([CacheEntry("x", source)])
    (equalised,) = _cache(tmp_path, size=(8, 64), histogram_equalisation=True).build([CacheEntry("x", source)])
    equalised_values = read_grey_or_rgb(equalised.image)
    assert read_grey_or_rgb(plain.image).mean() < 70 / 255
    assert 110 / 255 < equalised_values.mean() < 145 / 255
    assert equalised_values.max() == 1.0


def test_mask_marks_the_scaled_box(tmp_path):
    box = (10.0, 4.0, 20.0, 12.0)  # x_min, y_min, x_max, y_max on a 40 x 30 image
    (files,) = _cache(tmp_path, size=(15, 20)).build(_entries(tmp_path, 1, boxes=(box,)))
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


@pytest.mark.parametrize("box", [(40, 0, 50, 10), (0, 30, 10, 35), (-20, 0, 0, 10), (5, -9, 10, -1)])
def test_box_entirely_outside_its_image_is_an_error_naming_the_image_and_the_box(tmp_path, box):
    (entry,) = _entries(tmp_path, 1, boxes=((1, 1, 5, 5), box))  # 40 x 30 pixels
    with pytest.raises(ValueError, match=r"Box \(x_min=.*\) of image 'img0' \(.*img0\.dcm\) lies entirely outside"):
        _cache(tmp_path).build([entry])


def test_empty_boxes_give_an_empty_mask(tmp_path):
    (files,) = _cache(tmp_path).build(_entries(tmp_path, 1, boxes=()))
    assert not np.asarray(Image.open(files.mask)).any()


def test_second_build_reuses_the_cache(tmp_path, monkeypatch):
    entries = _entries(tmp_path, boxes=((1, 1, 9, 9),))
    files = _cache(tmp_path).build(entries)
    stamps = [(file.image.stat().st_mtime_ns, file.mask.stat().st_mtime_ns) for file in files]
    calls = _count_loads(monkeypatch)
    again = _cache(tmp_path).build(entries)
    assert calls == []
    assert again == files
    assert [(file.image.stat().st_mtime_ns, file.mask.stat().st_mtime_ns) for file in again] == stamps


def test_replaced_source_is_read_again_and_reported(tmp_path, monkeypatch, caplog):
    entries = _entries(tmp_path, boxes=((0, 0, 20, 15),))  # a quarter of the 40 x 30 image
    cache = _cache(tmp_path)
    first = cache.build(entries)
    before = read_grey_or_rgb(first[1].image)
    _replace(entries[1].source, lambda path: write_xray(path, (60, 80), seed=99))  # another image, twice as big
    calls = _count_loads(monkeypatch)
    with caplog.at_level(logging.WARNING):
        files = cache.build(entries)  # the same object, which remembers what it has checked
    assert calls == ["img1.dcm"]
    assert files == first
    assert not np.allclose(read_grey_or_rgb(files[1].image), before)
    with Image.open(files[1].image) as image:
        assert image.text["original_size"] == "60x80"
    assert np.count_nonzero(np.asarray(Image.open(files[1].mask))) == 4  # the box is an eighth of the image now
    assert np.count_nonzero(np.asarray(Image.open(files[0].mask))) == 12
    assert "Rebuilding 2 cached file(s)" in caplog.text
    assert f"images/{files[1].image.name} was made from another version of its source" in caplog.text
    assert f"masks/{files[1].mask.name} was made from another version of its source" in caplog.text
    calls.clear()
    assert _cache(tmp_path).build(entries) == files
    assert calls == []


def test_data_sets_sharing_a_cache_dir_get_their_own_images(tmp_path, monkeypatch):
    dark = CacheEntry("img", _write_grey_png(tmp_path / "site_a" / "img.png", 20))
    light = CacheEntry("img", _write_grey_png(tmp_path / "site_b" / "img.png", 220))  # same name, same id
    (dark_files,) = _cache(tmp_path).build([dark])
    (light_files,) = _cache(tmp_path).build([light])
    assert dark_files.image != light_files.image
    calls = _count_loads(monkeypatch)
    assert _cache(tmp_path).build([dark]) == [dark_files]
    assert calls == []
    np.testing.assert_allclose(read_grey_or_rgb(dark_files.image), 20 / 255, atol=LEVEL)
    np.testing.assert_allclose(read_grey_or_rgb(light_files.image), 220 / 255, atol=LEVEL)


def test_damaged_entries_are_rebuilt_and_reported(tmp_path, monkeypatch, caplog):
    entries = _entries(tmp_path, 4, boxes=((1, 1, 9, 9),))
    cache = _cache(tmp_path)
    files = cache.build(entries)
    good = [(file.image.read_bytes(), file.mask.read_bytes()) for file in files]
    files[0].image.write_bytes(files[0].image.read_bytes()[:60])  # truncated
    files[1].mask.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # not a PNG any more
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(files[2].image)  # wrong size and depth, no source
    Image.fromarray(np.zeros((6, 8), dtype=np.uint16)).save(files[3].image)  # right size, but records no source
    calls = _count_loads(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert len(cache.missing(entries)) == 4
        assert cache.build(entries) == files
    assert calls == ["img0.dcm", "img2.dcm", "img3.dcm"]  # img1's image is fine: only its mask is redrawn
    assert [(file.image.read_bytes(), file.mask.read_bytes()) for file in files] == good
    assert "Rebuilding 4 cached file(s)" in caplog.text
    assert f"images/{files[0].image.name} cannot be decoded" in caplog.text
    assert f"masks/{files[1].mask.name} cannot be decoded" in caplog.text
    assert f"images/{files[2].image.name} is L 3x3, expected I;16 8x6" in caplog.text
    assert "; ..." in caplog.text  # only three are named
    assert cache.missing(entries) == []


def test_a_source_deleted_after_caching_is_not_served(tmp_path):
    entries = _entries(tmp_path, 1)
    cache = _cache(tmp_path)
    cache.build(entries)
    entries[0].source.unlink()
    assert cache.missing(entries) == entries
    with pytest.raises(FileNotFoundError, match=r"img0\.dcm"):
        cache.build(entries)


def test_other_settings_use_another_folder(tmp_path, monkeypatch):
    entries = _entries(tmp_path)
    first = _cache(tmp_path)
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
    cache = _cache(tmp_path, size=(15, 20))
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
    cache = _cache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.build(entries)
    written = sorted(path.name.split("-")[0] for path in (cache.directory / "images").iterdir())
    assert written == ["img0", "img1"]
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
    cache = _cache(tmp_path)
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
    cache = _cache(tmp_path)
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
    (files,) = _cache(tmp_path, size=(5, 6)).build([CacheEntry("a", path)])
    np.testing.assert_allclose(read_grey_or_rgb(files.image), 200 / 255, atol=1 / 255)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg"):
        _cache(tmp_path, size=(5, 6)).build([CacheEntry("bad", bad)])
