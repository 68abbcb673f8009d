"""DigitAnatomy: generator, datasets, datamodule, MNIST source, viewer and an engine smoke run."""

from __future__ import annotations

import gzip
import inspect
import math
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from anomalib.data import ImageBatch
from anomalib.data.utils import Split
from PIL import Image

from anomalib_medical.data import digit_anatomy as da
from anomalib_medical.data.digit_anatomy import (
    ANOMALY_TYPES,
    FLIPPABLE_DIGITS,
    NOVEL_DIGITS,
    SCALE_RANGE,
    DigitAnatomy,
    DigitAnatomyGenerator,
    generate_eval_sample,
    split_digit_pools,
)
from tests.conftest import REPO_ROOT, assert_succeeded, run_command

CELL = 8  # 24x24 images keep the tests fast
TYPES = ("normal", *ANOMALY_TYPES)


def make_datamodule(root: Path, **kwargs: object) -> DigitAnatomy:
    options = {"cell_size": CELL, "samples_per_type": 3, "train_size": 6, "train_batch_size": 3, "eval_batch_size": 5}
    datamodule = DigitAnatomy(root=root, **{**options, **kwargs})
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> DigitAnatomy:
    return make_datamodule(tmp_path_factory.mktemp("digit_anatomy"))


def eval_stack(dataset: da.DigitAnatomyDataset) -> torch.Tensor:
    return torch.stack([dataset[i].image for i in range(len(dataset))])


def train_epoch(datamodule: DigitAnatomy) -> torch.Tensor:
    return torch.cat([batch.image for batch in datamodule.train_dataloader()])


def changed_cells(generator: DigitAnatomyGenerator, first: np.ndarray, second: np.ndarray) -> set[int]:
    return {
        cell for cell in range(9) if np.any(first[generator.cell_slices(cell)] != second[generator.cell_slices(cell)])
    }


def mask_cells(generator: DigitAnatomyGenerator, mask: np.ndarray) -> set[int]:
    return {cell for cell in range(9) if mask[generator.cell_slices(cell)].any()}


# ----------------------------------------------------------------------------------- items and batches


def test_items_and_batches_have_anomalib_shapes_types_and_ranges(datamodule: DigitAnatomy) -> None:
    side = 3 * CELL
    for dataset in (datamodule.train_data, datamodule.val_data, datamodule.test_data):
        for index in range(len(dataset)):
            item = dataset[index]
            assert item.image.shape == (3, side, side)
            assert item.image.dtype == torch.float32
            assert item.image.min() >= 0.0 and item.image.max() <= 1.0
            assert item.image.max() > 0.5  # digits are drawn
            assert torch.equal(item.image[0], item.image[1]) and torch.equal(item.image[0], item.image[2])
            assert item.gt_mask.shape == (side, side)
            assert isinstance(item.image_path, str) and item.image_path.endswith(".png")
            assert int(item.gt_label) == int(item.gt_mask.any())  # abnormal <=> non-empty mask
    loaders = (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader())
    for loader in loaders:
        batch = next(iter(loader))
        assert isinstance(batch, ImageBatch)
        assert batch.image.shape[1:] == (3, side, side)
        assert batch.gt_label.shape == (batch.image.shape[0],)
        assert batch.gt_mask.shape == (batch.image.shape[0], side, side)
        assert len(batch.image_path) == batch.image.shape[0]


def test_train_items_are_normal_with_empty_masks(datamodule: DigitAnatomy) -> None:
    item = datamodule.train_data[123456]  # any key: the epoch sampler hands out keys beyond len()
    assert int(item.gt_label) == 0
    assert not item.gt_mask.any()
    assert set(datamodule.train_data.anomaly_types) == {"normal"}


def test_test_split_keeps_normal_and_abnormal_images(datamodule: DigitAnatomy) -> None:
    for dataset in (datamodule.val_data, datamodule.test_data):
        labels = dataset.samples["label_index"].tolist()
        assert labels.count(0) == 3 and labels.count(1) == 12


def test_equal_numbers_per_type_and_types_recorded(datamodule: DigitAnatomy) -> None:
    for dataset in (datamodule.val_data, datamodule.test_data):
        assert Counter(dataset.anomaly_types) == dict.fromkeys(TYPES, 3)
        for row in dataset.samples.itertuples():
            assert f"/{row.anomaly_type}/" in row.image_path
            assert row.label_index == int(row.anomaly_type != "normal")


# ----------------------------------------------------------------------------------------- determinism


def test_eval_sets_are_deterministic_and_depend_on_seed_and_split(tmp_path: Path, datamodule: DigitAnatomy) -> None:
    again = make_datamodule(tmp_path / "again")
    other = make_datamodule(tmp_path / "other", seed=1)
    for split in ("val_data", "test_data"):
        reference = eval_stack(getattr(datamodule, split))
        assert torch.equal(reference, eval_stack(getattr(again, split)))
        assert not torch.equal(reference, eval_stack(getattr(other, split)))
    assert not torch.equal(eval_stack(datamodule.val_data), eval_stack(datamodule.test_data))


def test_train_images_change_every_epoch_and_are_reproducible(tmp_path: Path) -> None:
    first = make_datamodule(tmp_path / "a")
    epochs = [train_epoch(first), train_epoch(first)]
    assert not torch.equal(epochs[0], epochs[1])
    assert len({image.numpy().tobytes() for image in torch.cat(epochs)}) == 12  # no repeats within or across
    replay = make_datamodule(tmp_path / "b")
    assert torch.equal(train_epoch(replay), epochs[0])
    assert torch.equal(train_epoch(replay), epochs[1])
    workers = make_datamodule(tmp_path / "c", num_workers=2)
    assert torch.equal(train_epoch(workers), epochs[0])
    assert torch.equal(train_epoch(workers), epochs[1])
    assert not torch.equal(train_epoch(make_datamodule(tmp_path / "d", seed=5)), epochs[0])


# -------------------------------------------------------------------------------------- anomaly content


@pytest.mark.parametrize("split", [Split.VAL, Split.TEST])
def test_files_match_generator_and_masks_cover_exactly_the_changed_cells(
    datamodule: DigitAnatomy, split: Split
) -> None:
    generator = DigitAnatomyGenerator(split_digit_pools(seed=0)[split], CELL)
    dataset = datamodule.val_data if split == Split.VAL else datamodule.test_data
    full_cell_masks = {}
    for index, row in enumerate(dataset.samples.itertuples()):
        sample = generate_eval_sample(generator, split, row.anomaly_type, row.index, seed=0)
        item = dataset[index]
        image = generator.render(sample.layout)
        assert torch.equal((item.image[0] * 255).round().to(torch.uint8), torch.from_numpy(image))  # file == render
        normal = generator.render(sample.normal)
        mask = item.gt_mask.numpy().astype(bool)
        cells = changed_cells(generator, image, normal)
        assert cells == mask_cells(generator, mask) == set(sample.cells)
        assert np.array_equal(mask, generator.cell_mask(sorted(cells)))  # full cell squares, nothing else
        assert row.anomalous_cells == " ".join(map(str, sample.cells))
        full_cell_masks[row.anomaly_type] = len(cells)
    assert full_cell_masks == {"normal": 0, "novel": 1, "missing": 1, "disorder": 2, "flipped": 1}


def test_each_anomaly_type_changes_what_it_says() -> None:
    generator = DigitAnatomyGenerator(split_digit_pools(seed=0)[Split.TEST], CELL)
    labels = generator.pool.labels
    rng = np.random.default_rng(0)
    for _ in range(50):
        normal = generator.normal_layout(rng)
        assert labels[normal.instances].tolist() == list(range(1, 10))
        layout, (cell,) = generator.add_anomaly(normal, "novel", rng)
        assert labels[layout.instances[cell]] in NOVEL_DIGITS
        layout, (cell,) = generator.add_anomaly(normal, "missing", rng)
        assert layout.instances[cell] == -1
        assert not generator.render(layout)[generator.cell_slices(cell)].any()
        layout, (first, second) = generator.add_anomaly(normal, "disorder", rng)
        assert (
            layout.instances[first] == normal.instances[second] and layout.instances[second] == normal.instances[first]
        )
        assert layout.scales[first] == normal.scales[second]
        layout, (cell,) = generator.add_anomaly(normal, "flipped", rng)
        assert layout.flipped[cell] and labels[layout.instances[cell]] in FLIPPABLE_DIGITS
        rendered = generator.render(layout)[generator.cell_slices(cell)]
        mirrored = generator.render(normal)[generator.cell_slices(cell)][:, ::-1]
        assert np.abs(rendered.astype(int) - mirrored).max() <= 1  # the cell's digit, mirrored
    with pytest.raises(ValueError, match="anomaly_type"):
        generator.add_anomaly(normal, "rotated", rng)


def test_flippable_digits_are_those_whose_mirror_differs_most() -> None:
    """The excluded digits (1, 8) have the most mirror-symmetric class means of the digits 1-9."""
    pool = da.load_sklearn_digits()
    asymmetry = {}
    for digit in range(1, 10):
        mean = pool.images[pool.labels == digit].astype(float).mean(0)
        asymmetry[digit] = np.abs(mean - mean[:, ::-1]).sum() / mean.sum()
    excluded = set(range(1, 10)) - set(FLIPPABLE_DIGITS)
    assert excluded == {1, 8}
    assert max(asymmetry[d] for d in excluded) < min(asymmetry[d] for d in FLIPPABLE_DIGITS)


def test_per_cell_scales_span_the_authors_range() -> None:
    generator = DigitAnatomyGenerator(split_digit_pools(seed=0)[Split.TRAIN], CELL)
    rng = np.random.default_rng(1)
    scales = np.concatenate([generator.normal_layout(rng).scales for _ in range(200)])
    assert SCALE_RANGE[0] <= scales.min() < SCALE_RANGE[0] + 0.05
    assert SCALE_RANGE[1] - 0.05 < scales.max() <= SCALE_RANGE[1]
    layout = generator.normal_layout(rng)
    small = generator.render(da.GridLayout(layout.instances, np.full(9, 0.6), layout.flipped))
    large = generator.render(da.GridLayout(layout.instances, np.full(9, 1.3), layout.flipped))
    assert (small > 0).sum() < (large > 0).sum()  # a larger scale draws larger digits


def test_generation_is_fast() -> None:
    generator = DigitAnatomyGenerator(split_digit_pools(seed=0)[Split.TRAIN], cell_size=32)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(200):
        image = generator.render(generator.normal_layout(rng))
    per_image = (time.perf_counter() - start) / 200
    assert image.shape == (96, 96)
    assert per_image < 0.005, f"{per_image * 1e3:.2f} ms per 96x96 image"


def test_digit_instances_of_train_val_and_test_are_disjoint(datamodule: DigitAnatomy) -> None:
    pools = split_digit_pools(seed=0)
    assert np.array_equal(datamodule.train_data.generator.pool.images, pools[Split.TRAIN].images)
    hashes = {split: {image.tobytes() for image in pool.images} for split, pool in pools.items()}
    assert sum(len(pool) for pool in pools.values()) == len(da.load_sklearn_digits()) == sum(map(len, hashes.values()))
    assert not hashes[Split.TRAIN] & hashes[Split.VAL]
    assert not hashes[Split.TRAIN] & hashes[Split.TEST]
    assert not hashes[Split.VAL] & hashes[Split.TEST]
    for pool in pools.values():
        assert set(pool.labels.tolist()) == set(range(10))


# -------------------------------------------------------------------------------------- files and errors


def test_interrupted_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_save(array: np.ndarray, path: Path) -> None:
        calls.append(path)
        if len(calls) > 5:
            raise OSError("disk full")
        Image.fromarray(array).save(path)

    monkeypatch.setattr(da, "_save_png", failing_save)
    datamodule = DigitAnatomy(root=tmp_path, cell_size=CELL, samples_per_type=2)
    with pytest.raises(OSError, match="disk full"):
        datamodule.prepare_data()
    assert list(tmp_path.rglob("*")) == [tmp_path / "sklearn"]  # no partial folder, no stray file


def test_incomplete_folder_is_reported(tmp_path: Path) -> None:
    datamodule = DigitAnatomy(root=tmp_path, cell_size=CELL, samples_per_type=2)
    datamodule.dataset_dir.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv"):
        datamodule.setup()
    datamodule.dataset_dir.rmdir()
    datamodule.setup()
    next(datamodule.dataset_dir.rglob("flipped/0001.png")).unlink()
    with pytest.raises(FileNotFoundError, match=r"flipped/0001\.png"):
        da.DigitAnatomyDataset(datamodule.dataset_dir, "test")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"digit_source.*'sklearn', 'mnist'.*'emnist'"):
        DigitAnatomy(digit_source="emnist")
    with pytest.raises(ValueError, match=r"digit_source.*'sklearn', 'mnist'"):
        split_digit_pools("emnist")
    with pytest.raises(ValueError, match="mnist_root"):
        DigitAnatomy(digit_source="mnist")
    for name in ("cell_size", "samples_per_type", "train_size"):
        with pytest.raises(ValueError, match=name):
            DigitAnatomy(**{name: 0})


# ------------------------------------------------------------------------------------------------- MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_fake_mnist(root: Path, per_class: tuple[int, int] = (4, 4)) -> dict[str, np.ndarray]:
    """Tiny MNIST in torchvision's layout: train files gzipped, test files raw (both are accepted)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, count, suffix in (("train", per_class[0], ".gz"), ("t10k", per_class[1], "")):
        labels = np.repeat(np.arange(10, dtype=np.uint8), count)
        digits = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        digits[:, 4:24, 8:20] = rng.integers(0, 256, size=(len(labels), 20, 12), dtype=np.uint8)
        write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", digits)
        write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", labels)
        images[split] = digits
    return images


def test_mnist_source_reads_torchvision_layout(tmp_path: Path) -> None:
    images = make_fake_mnist(tmp_path / "mnist")
    datamodule = make_datamodule(tmp_path / "data", digit_source="mnist", mnist_root=tmp_path / "mnist")
    assert "mnist" in str(datamodule.dataset_dir)
    assert datamodule.test_data[0].image.shape == (3, 3 * CELL, 3 * CELL)
    assert Counter(datamodule.test_data.anomaly_types) == dict.fromkeys(TYPES, 3)
    assert train_epoch(datamodule).shape == (6, 3, 3 * CELL, 3 * CELL)
    pools = split_digit_pools("mnist", tmp_path / "mnist")
    assert np.array_equal(pools[Split.TRAIN].images, images["train"])  # the official training set
    held_out = {image.tobytes() for image in images["t10k"]}
    val, test = ({image.tobytes() for image in pools[split].images} for split in (Split.VAL, Split.TEST))
    assert val | test == held_out and not val & test


def test_missing_or_corrupt_mnist_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw.*download=True"):
        DigitAnatomy(root=tmp_path, digit_source="mnist", mnist_root=tmp_path / "nowhere").setup()
    make_fake_mnist(tmp_path / "mnist")
    labels = tmp_path / "mnist" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*truncated"):
        split_digit_pools("mnist", tmp_path / "mnist")
    labels.write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*not an IDX"):
        split_digit_pools("mnist", tmp_path / "mnist")


# ------------------------------------------------------------------------------------ viewer and config


def test_viewer_writes_each_type_and_its_mask(tmp_path: Path) -> None:
    out = tmp_path / "examples"
    module = "anomalib_medical.data.digit_anatomy_examples"
    process = run_command([sys.executable, "-m", module, "--out", out, "--cell-size", "10", "--seed", "3"])
    assert_succeeded(process)
    assert "RuntimeWarning" not in process.stderr  # runpy warns when the module was imported by its package
    printed = [Path(line) for line in process.stdout.split()]
    expected = [out / f"{name}{suffix}.png" for name in TYPES for suffix in ("", "_mask")]
    assert printed == expected
    assert sorted(out.iterdir()) == sorted(expected)  # nothing else (no temporary files)
    arrays = {path.stem: np.array(Image.open(path)) for path in expected}
    assert all(array.shape == (30, 30) for array in arrays.values())
    assert not arrays["normal_mask"].any()
    for name in ANOMALY_TYPES:
        assert arrays[f"{name}_mask"].any()
        assert not np.array_equal(arrays[name], arrays["normal"])


def test_config_lists_every_argument_with_its_default() -> None:
    config = yaml.safe_load((REPO_ROOT / "configs" / "data" / "digit_anatomy.yaml").read_text())
    assert config["class_path"] == "anomalib_medical.data.DigitAnatomy"
    parameters = inspect.signature(DigitAnatomy.__init__).parameters
    defaults = {name: p.default for name, p in parameters.items() if name != "self"}
    assert set(config["init_args"]) == set(defaults)
    for name, value in config["init_args"].items():
        assert value == (str(defaults[name]) if isinstance(defaults[name], Path) else defaults[name]), name


# ------------------------------------------------------------------------------------------ engine smoke


@pytest.mark.slow
def test_engine_fits_and_tests_a_builtin_model_with_image_and_pixel_auroc(tmp_path: Path) -> None:
    from anomalib.engine import Engine
    from anomalib.models import Padim

    datamodule = DigitAnatomy(root=tmp_path / "data", cell_size=16, samples_per_type=4, train_size=32)
    model = Padim(backbone="resnet18", pre_trained=False, pre_processor=Padim.configure_pre_processor((48, 48)))
    engine = Engine(
        max_epochs=1,
        default_root_dir=tmp_path / "results",
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(model, datamodule=datamodule)
    (results,) = engine.test(model, datamodule=datamodule)
    for metric in ("image_AUROC", "pixel_AUROC"):
        assert 0.0 <= results[metric] <= 1.0 and math.isfinite(results[metric])
    written = list((tmp_path / "results").rglob("images/*/*.png"))
    assert len(written) == 20  # the visualiser read every test image from its path
