"""ChestXray: SQUID split on trees with the official layout and counts, download/extraction, bad input, engine run."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import Split
from PIL import Image

from anomalib_medical.data import ChestXray, ChestXrayDataset
from anomalib_medical.data.chest_xray import (
    ARCHIVE_NAME,
    CHEST_XRAY_URL,
    OFFICIAL_COUNTS,
    make_chest_xray_samples,
)
from anomalib_medical.data.utils.download import ArchiveError, ChecksumError, DownloadError, UnsafeArchiveError
from anomalib_medical.data.utils.images import InvalidImageError
from tests.unit.test_download import closed_port_url, serve_directory

REPO_ROOT = Path(__file__).resolve().parents[2]
MENDELEY = {  # official archive: train/ and test/
    "train": OFFICIAL_COUNTS["train"],
    "test": OFFICIAL_COUNTS["test"],
}
KAGGLE = {  # Kaggle copy: 8 + 8 of the training images moved to val/
    "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
    "val": {"NORMAL": 8, "PNEUMONIA": 8},
    "test": OFFICIAL_COUNTS["test"],
}
SMALL = {"train": {"NORMAL": 8, "PNEUMONIA": 4}, "test": {"NORMAL": 3, "PNEUMONIA": 3}}
SMALL_EXPECTED = {"train": {"NORMAL": 8, "PNEUMONIA": 4}, "test": {"NORMAL": 3, "PNEUMONIA": 3}}


def jpeg_bytes(value: int = 128, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 255 - value)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_tree(folder: Path, counts: dict[str, dict[str, int]], data: bytes | None = None) -> Path:
    """Write ``folder/<split>/<CLASS>/<name>.jpeg`` with the given counts (the same tiny JPEG unless varied)."""
    data = data or jpeg_bytes()
    for split, classes in counts.items():
        for class_name, count in classes.items():
            directory = folder / split / class_name
            directory.mkdir(parents=True, exist_ok=True)
            prefix = "NORMAL2-IM" if class_name == "NORMAL" else "person_bacteria"
            for index in range(count):
                (directory / f"{prefix}-{split}-{index:04d}.jpeg").write_bytes(data)
    return folder


def zip_tree(tree: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``tree`` under ``chest_xray/`` like ``ChestXRay2017.zip`` (with macOS metadata entries)."""
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                name = f"chest_xray/{path.relative_to(tree).as_posix()}"
                handle.write(path, name)
                handle.writestr(f"__MACOSX/{Path(name).parent.as_posix()}/._{path.name}", b"\x00\x05\x16\x07junk")
        handle.writestr("chest_xray/.DS_Store", b"\x00\x00\x00\x01Bud1")
        for name, data in (extra or {}).items():
            handle.writestr(zipfile.ZipInfo(name), data)
    return archive


@pytest.fixture(scope="module")
def official_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("official")
    make_tree(root / "chest_xray", MENDELEY)
    return root


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kaggle")
    make_tree(root / "chest_xray", KAGGLE)
    return root


@pytest.fixture
def small_archive(tmp_path: Path) -> Path:
    served = tmp_path / "served"
    served.mkdir()
    return zip_tree(make_tree(tmp_path / "src", SMALL), served / ARCHIVE_NAME)


def small_datamodule(root: Path, **kwargs: object) -> ChestXray:
    options: dict[str, object] = {
        "val_normal": 2,
        "val_abnormal": 2,
        "expected_counts": SMALL_EXPECTED,
        "num_workers": 0,
        "train_batch_size": 4,
        "eval_batch_size": 4,
        "timeout": 2.0,
    }
    options.update(kwargs)
    return ChestXray(root=root, **options)  # type: ignore[arg-type]


def split_paths(samples, split: str, label: int | None = None) -> set[str]:
    rows = samples[samples.split == split]
    if label is not None:
        rows = rows[rows.label_index == label]
    return set(rows.image_path)


# --- split logic on trees with the official layout and counts ---------------------------------------------------


def test_official_tree_gives_squid_split(official_root: Path) -> None:
    datamodule = ChestXray(root=official_root, download=False, num_workers=0)
    datamodule.setup()
    train, val, test = datamodule.train_data.samples, datamodule.val_data.samples, datamodule.test_data.samples
    assert (len(train), len(val), len(test)) == (1349 - 100, 200, 234 + 390)
    assert set(train.label_index) == {0}
    assert sorted(val.label_index.value_counts().items()) == [(0, 100), (1, 100)]
    assert sorted(test.label_index.value_counts().items()) == [(0, 234), (1, 390)]
    assert set(train.split) == {"train"} and set(val.split) == {"val"} and set(test.split) == {"test"}
    assert set(train.image_path).isdisjoint(val.image_path)
    assert set(train.image_path).isdisjoint(test.image_path)
    assert set(val.image_path).isdisjoint(test.image_path)
    all_train_normals = {str(p.resolve()) for p in (official_root / "chest_xray/train/NORMAL").iterdir()}
    assert set(train.image_path) | split_paths(val, "val", 0) == all_train_normals
    assert all("/train/PNEUMONIA/" in p for p in split_paths(val, "val", 1))
    assert all("/test/" in p for p in test.image_path)
    assert (train.mask_path == "").all()
    assert datamodule.task.value == "classification"


def test_split_is_deterministic_and_seeded(official_root: Path) -> None:
    folder = official_root / "chest_xray"
    first = make_chest_xray_samples(folder, seed=3)
    again = make_chest_xray_samples(folder, seed=3)
    other = make_chest_xray_samples(folder, seed=4)
    assert split_paths(first, "val") == split_paths(again, "val")
    assert split_paths(first, "val", 0) != split_paths(other, "val", 0)
    assert split_paths(first, "val", 1) != split_paths(other, "val", 1)
    # each class has its own stream: resizing the normal draw leaves the pneumonia draw unchanged
    resized = make_chest_xray_samples(folder, val_normal=50, val_abnormal=100, seed=3)
    assert split_paths(resized, "val", 1) == split_paths(first, "val", 1)
    assert len(split_paths(resized, "val", 0)) == 50
    assert len(split_paths(resized, "train")) == 1349 - 50


def test_kaggle_layout_with_val_folder_is_pooled_into_training(kaggle_root: Path) -> None:
    samples = make_chest_xray_samples(kaggle_root / "chest_xray", seed=0)
    pool = samples[samples.split.isin(["train", "val"])]
    assert set(pool.official_split) == {"train", "val"}
    kaggle_val = {str(p.resolve()) for p in (kaggle_root / "chest_xray/val/NORMAL").iterdir()}
    assert kaggle_val <= set(samples.image_path)  # every val/ normal is used for training or validation
    assert len(split_paths(samples, "train")) == 1349 - 100
    assert len(split_paths(samples, "test")) == 624


def test_root_may_be_the_folder_holding_train_and_test(kaggle_root: Path) -> None:
    dataset = ChestXrayDataset(root=kaggle_root / "chest_xray", split=Split.VAL)
    assert len(dataset) == 200
    item = dataset[0]
    assert item.image.shape[0] == 3
    assert item.image.dtype == torch.float32
    assert 0 <= float(item.image.min()) <= float(item.image.max()) <= 1
    assert item.gt_mask is None


def test_counts_are_verified_unless_disabled(tmp_path: Path) -> None:
    make_tree(tmp_path / "chest_xray", SMALL)
    with pytest.raises(ValueError, match=r"train/ \+ val/NORMAL has 8 images, expected 1349") as info:
        ChestXrayDataset(root=tmp_path, val_normal=2, val_abnormal=2)
    assert str(tmp_path / "chest_xray") in str(info.value)
    assert "expected_counts" in str(info.value)
    dataset = ChestXrayDataset(root=tmp_path, val_normal=2, val_abnormal=2, expected_counts=None)
    assert len(dataset) == 8 + 2 + 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"val_normal": 8}, "val_normal=8"), ({"val_abnormal": 5}, "val_abnormal=5"), ({"val_normal": 0}, "val_normal")],
)
def test_impossible_validation_sizes(tmp_path: Path, kwargs: dict[str, int], match: str) -> None:
    make_tree(tmp_path / "chest_xray", SMALL)
    with pytest.raises(ValueError, match=match):
        make_chest_xray_samples(
            tmp_path / "chest_xray", **{"val_normal": 2, "val_abnormal": 2, "expected_counts": None, **kwargs}
        )


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("create", [False, True], ids=["missing-root", "empty-root"])
def test_missing_or_empty_root_without_download(tmp_path: Path, create: bool) -> None:
    root = tmp_path / "data"
    if create:
        root.mkdir()
    datamodule = small_datamodule(root, download=False)
    with pytest.raises(FileNotFoundError, match="download=False") as info:
        datamodule.prepare_data()
    message = str(info.value)
    assert str(root / "chest_xray") in message
    assert str(root / ARCHIVE_NAME) in message
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        datamodule.setup()


def test_incomplete_extracted_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "chest_xray" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"chest_xray exists but does not contain both train/ and test/"):
        small_datamodule(tmp_path).prepare_data()


def test_class_folder_without_images(tmp_path: Path) -> None:
    make_tree(tmp_path / "chest_xray", SMALL)
    empty = tmp_path / "chest_xray" / "test" / "PNEUMONIA"
    for path in empty.iterdir():
        path.unlink()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match="contains no image files") as info:
        ChestXrayDataset(root=tmp_path, val_normal=2, val_abnormal=2, expected_counts=None)
    assert str(empty) in str(info.value)


def test_missing_class_folder(tmp_path: Path) -> None:
    make_tree(tmp_path / "chest_xray", {"train": SMALL["train"], "test": {"NORMAL": 3}})
    with pytest.raises(FileNotFoundError, match=r"test/PNEUMONIA"):
        ChestXrayDataset(root=tmp_path, val_normal=2, val_abnormal=2, expected_counts=None)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"<html>not an image</html>", "not a JPEG"), (None, "truncated")],
    ids=["empty", "text", "truncated"],
)
def test_bad_image_is_named_at_setup(tmp_path: Path, content: bytes | None, reason: str) -> None:
    make_tree(tmp_path / "chest_xray", SMALL)
    bad = tmp_path / "chest_xray" / "test" / "NORMAL" / "NORMAL2-IM-test-0001.jpeg"
    good = jpeg_bytes(size=(64, 64))
    bad.write_bytes(good[: len(good) // 2] if content is None else content)
    datamodule = small_datamodule(tmp_path, download=False)
    datamodule.prepare_data()
    with pytest.raises(InvalidImageError, match=reason) as info:
        datamodule.setup()
    assert str(bad) in str(info.value)


def test_undecodable_image_raises_naming_the_file_on_read(tmp_path: Path) -> None:
    make_tree(tmp_path / "chest_xray", SMALL)
    bad = tmp_path / "chest_xray" / "test" / "PNEUMONIA" / "person_bacteria-test-0002.jpeg"
    good = jpeg_bytes(size=(64, 64))
    bad.write_bytes(good[: len(good) // 2])
    dataset = ChestXrayDataset(
        root=tmp_path, split="test", val_normal=2, val_abnormal=2, expected_counts=None, image_check="none"
    )
    index = int(np.flatnonzero(dataset.samples.image_path == str(bad.resolve()))[0])
    assert dataset[(index + 1) % len(dataset)].image.shape[0] == 3
    with pytest.raises(InvalidImageError, match="cannot be decoded") as info:
        dataset[index]
    assert str(bad.resolve()) in str(info.value)


def test_rgb_and_odd_sized_images_become_three_channel_floats(tmp_path: Path) -> None:
    make_tree(tmp_path / "chest_xray", SMALL)
    rgb = tmp_path / "chest_xray" / "test" / "NORMAL" / "NORMAL2-IM-test-0000.jpeg"
    rgb.write_bytes(jpeg_bytes(200, size=(13, 9), mode="RGB"))
    dataset = ChestXrayDataset(root=tmp_path, split="test", val_normal=2, val_abnormal=2, expected_counts=None)
    item = dataset[int(np.flatnonzero(dataset.samples.image_path == str(rgb.resolve()))[0])]
    assert tuple(item.image.shape) == (3, 9, 13)
    assert item.image.dtype == torch.float32
    assert int(item.gt_label) == 0


# --- prepare_data: download, checksum, extraction --------------------------------------------------------------


def assert_clean(root: Path) -> None:
    """No partial download or staging folder is left in ``root``."""
    leftovers = [p.name for p in root.iterdir() if p.name.endswith((".part", ".partial"))]
    assert leftovers == []


def test_download_over_http_then_extract_and_setup(tmp_path: Path, small_archive: Path) -> None:
    root = tmp_path / "data"
    sha = hashlib.sha256(small_archive.read_bytes()).hexdigest()
    with serve_directory(small_archive.parent) as base:
        datamodule = small_datamodule(root, url=f"{base}/{ARCHIVE_NAME}", sha256=sha)
        datamodule.prepare_data()
    assert (root / ARCHIVE_NAME).read_bytes() == small_archive.read_bytes()
    assert sorted(p.name for p in (root / "chest_xray").iterdir()) == ["test", "train"]  # no .DS_Store
    assert not (root / "__MACOSX").exists()
    assert_clean(root)
    datamodule.setup()
    assert (len(datamodule.train_data), len(datamodule.val_data), len(datamodule.test_data)) == (6, 4, 6)
    datamodule.prepare_data()  # extracted folder found: nothing downloaded again
    assert_clean(root)


def test_download_from_file_url(tmp_path: Path, small_archive: Path) -> None:
    root = tmp_path / "data"
    small_datamodule(root, url=small_archive.as_uri()).prepare_data()
    assert (root / "chest_xray" / "test" / "PNEUMONIA").is_dir()
    assert_clean(root)


def test_archive_placed_by_hand_is_extracted(tmp_path: Path, small_archive: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(small_archive.read_bytes())
    datamodule = small_datamodule(root, download=False)
    datamodule.prepare_data()
    datamodule.setup()
    assert len(datamodule.test_data) == 6


def test_downloaded_archive_with_wrong_checksum_is_discarded(tmp_path: Path, small_archive: Path) -> None:
    root = tmp_path / "data"
    with serve_directory(small_archive.parent) as base, pytest.raises(ChecksumError):
        small_datamodule(root, url=f"{base}/{ARCHIVE_NAME}", sha256="f" * 64).prepare_data()
    assert not (root / ARCHIVE_NAME).exists()
    assert not (root / "chest_xray").exists()
    assert_clean(root)


def test_archive_placed_by_hand_with_wrong_checksum_is_kept(tmp_path: Path, small_archive: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(small_archive.read_bytes())
    actual = hashlib.sha256(small_archive.read_bytes()).hexdigest()
    expected = rf"{ARCHIVE_NAME} is {actual}, expected {'0' * 64}; it was kept"
    for download in (False, True):
        with pytest.raises(ChecksumError, match=expected):
            small_datamodule(root, download=download, sha256="0" * 64).prepare_data()
        assert (root / ARCHIVE_NAME).read_bytes() == small_archive.read_bytes()  # a typo never deletes user data
    assert not (root / "chest_xray").exists()


def test_unsafe_archive_is_refused(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive = zip_tree(make_tree(tmp_path / "src", SMALL), served / ARCHIVE_NAME, extra={"../../escape.txt": b"x"})
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    with pytest.raises(UnsafeArchiveError, match=r"escape\.txt"):
        small_datamodule(root, download=False).prepare_data()
    assert (root / ARCHIVE_NAME).exists()  # the user's own file is kept ...
    assert not (root / "chest_xray").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert_clean(root)
    other = tmp_path / "downloaded"
    with pytest.raises(UnsafeArchiveError, match="has been removed"):
        small_datamodule(other, url=archive.as_uri()).prepare_data()
    assert not (other / ARCHIVE_NAME).exists()  # ... a downloaded one is removed


def test_archive_with_wrong_counts_is_not_published(tmp_path: Path, small_archive: Path) -> None:
    root = tmp_path / "data"
    expected = {"train": {"NORMAL": 9, "PNEUMONIA": 4}, "test": SMALL_EXPECTED["test"]}
    with pytest.raises(ValueError, match="NORMAL has 8 images, expected 9"):
        small_datamodule(root, url=small_archive.as_uri(), expected_counts=expected).prepare_data()
    assert not (root / "chest_xray").exists()
    assert not (root / ARCHIVE_NAME).exists()
    assert_clean(root)


def test_corrupt_archive_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE_NAME).write_text("<html>Please sign in</html>")
    with pytest.raises(ArchiveError, match=ARCHIVE_NAME):
        small_datamodule(root, download=False).prepare_data()
    assert not (root / "chest_xray").exists()


def test_no_network_fails_fast_and_says_where_to_put_the_data(tmp_path: Path) -> None:
    root = tmp_path / "data"
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        small_datamodule(root, url=closed_port_url()).prepare_data()
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "Cannot reach" in message
    assert str(root / "chest_xray") in message
    assert str(root / ARCHIVE_NAME) in message
    assert_clean(root)
    assert not (root / ARCHIVE_NAME).exists()


def test_leftover_staging_folder_is_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root / ".chest_xray.deadbeef.partial" / "chest_xray", SMALL)  # a killed extraction
    datamodule = small_datamodule(root, download=False)
    with pytest.raises(FileNotFoundError, match="download=False"):
        datamodule.prepare_data()
    with pytest.raises(FileNotFoundError):
        datamodule.setup()


def test_constructor_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ChestXray(root=tmp_path, sha256="not-a-digest")
    with pytest.raises(ValueError, match="image_check"):
        ChestXray(root=tmp_path, image_check="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="val_abnormal"):
        ChestXray(root=tmp_path, val_abnormal=0)


# --- configuration and an engine run ----------------------------------------------------------------------------


def test_config_file_builds_the_datamodule(official_root: Path) -> None:
    datamodule = AnomalibDataModule.from_config(
        REPO_ROOT / "configs" / "data" / "chest_xray.yaml", **{"data.root": str(official_root), "data.num_workers": 0}
    )
    assert isinstance(datamodule, ChestXray)
    assert datamodule.url == CHEST_XRAY_URL
    assert datamodule.expected_counts == OFFICIAL_COUNTS
    datamodule.setup()
    assert (len(datamodule.train_data), len(datamodule.val_data)) == (1249, 200)


def test_engine_fit_and_test_with_padim(tmp_path: Path) -> None:
    from anomalib.engine import Engine
    from anomalib.models import Padim
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Resize

    counts = {"train": {"NORMAL": 12, "PNEUMONIA": 4}, "test": {"NORMAL": 4, "PNEUMONIA": 4}}
    rng = np.random.default_rng(0)
    for split, classes in counts.items():
        for class_name, count in classes.items():
            directory = tmp_path / "data" / "chest_xray" / split / class_name
            directory.mkdir(parents=True)
            for index in range(count):  # pneumonia images are brighter: trivially separable
                pixels = rng.integers(0, 100, (24, 20)) + (120 if class_name == "PNEUMONIA" else 0)
                Image.fromarray(pixels.astype(np.uint8)).save(directory / f"{index}.jpeg")
    torch.manual_seed(0)  # the backbone is randomly initialised
    datamodule = small_datamodule(tmp_path / "data", expected_counts=counts, val_normal=2, val_abnormal=2)
    model = Padim(
        backbone="resnet18",
        pre_trained=False,
        layers=["layer1", "layer2"],
        pre_processor=PreProcessor(transform=Resize((64, 64))),
        visualizer=False,
    )
    engine = Engine(
        max_epochs=1, default_root_dir=tmp_path / "results", logger=False, enable_progress_bar=False, accelerator="cpu"
    )
    start = time.monotonic()
    engine.fit(model, datamodule=datamodule)
    results = engine.test(model, datamodule=datamodule)
    assert time.monotonic() - start < 60
    assert len(datamodule.train_data) == 10
    assert results[0]["image_AUROC"] > 0.9
    assert not any(key.startswith("pixel_") for key in results[0])
