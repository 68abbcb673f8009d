"""DigitAnatomy: a synthetic data set for developing and explaining radiograph anomaly detectors.

Xiang et al., "SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection", CVPR 2023
(section 4.1, figure 5) introduced DigitAnatomy: a 3x3 grid of the handwritten digits 1-9 in
reading order. Like the anatomy on a chest radiograph, every normal image has the same layout of
structures whose individual appearance varies (a random instance of each digit, each cell with its
own random scale). Abnormal images break the layout in one of four ways:

* ``novel``: a cell holds a digit that never occurs in a normal image. We use ``0``, the only
  digit absent from the grid (a duplicate of another digit would be a ``disorder``-like anomaly).
* ``missing``: a cell is empty.
* ``disorder``: the contents of two cells (any two) are swapped.
* ``flipped``: the digit of one cell is mirrored left-right. Only digits whose mirror image differs
  from the original are flipped (:data:`FLIPPABLE_DIGITS`: all but ``1`` and ``8``; measured: the
  class-mean images of ``1`` and ``8`` are the most mirror-symmetric of the digits 1-9).

The authors build training images on the fly from MNIST (each digit cropped with torchvision's
``RandomResizedCrop(scale=(0.6, 1.3))``) and ship a fixed test folder of normal and abnormal PNGs
without masks. This module is our own implementation:

* Each cell draws a linear scale factor uniformly from :data:`SCALE_RANGE` (0.6-1.3) and renders
  its digit centred in the cell, resampled with an antialiased bilinear kernel (all nine cells in
  one batched matrix product; about 0.1 ms per 96x96 image). Cells never overlap.
* Every abnormal image has a pixel-level ground-truth mask: the full square of each cell that
  differs from the normal image it was made from (one cell, or two for ``disorder``), so anomalib
  reports pixel metrics. Normal images have all-zero masks.
* Digits come from scikit-learn's bundled handwritten digits by default (1,797 8x8 images,
  no download; padded to 12x12 so a digit fills about 2/3 of its tile, as in MNIST's 20/28) or from
  MNIST in torchvision's layout. The digit instances are split per class, deterministically under
  the seed, into disjoint train / val / test pools (scikit-learn: 60/20/20 %; MNIST: the official
  training set for train, the official test set halved into val and test).
* Training images are generated on the fly, different in every epoch and reproducible under the
  seed (see :class:`EpochKeySampler`). For "true" unsupervised training, ``train_abnormal_fraction``
  mixes generated anomalies of all four types (in equal shares) into the training stream: they are
  labelled normal, as unlabelled contamination would be, and their true type is recorded.
  Validation and test sets are generated once per seed and written as 8-bit PNGs with masks and a
  ``manifest.csv`` under ``root`` (anomalib's visualiser reads test images from their paths), with
  the same number of normal images and of each anomaly type. Images are grey digits on black,
  3-channel float in [0, 1] (grey replicated).

Look at examples with ``python -m anomalib_medical.data.digit_anatomy_examples --out DIR``.
"""

import gzip
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data import AnomalibDataModule
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode
from PIL import Image as PILImage
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2.functional import to_dtype
from torchvision.tv_tensors import Image, Mask

from anomalib_medical.data.utils.dataset import FullDepthDataset

__all__ = [
    "ANOMALY_TYPES",
    "DIGIT_SOURCES",
    "FLIPPABLE_DIGITS",
    "NOVEL_DIGITS",
    "SCALE_RANGE",
    "DigitAnatomy",
    "DigitAnatomyDataset",
    "DigitAnatomyGenerator",
    "DigitAnatomyTrainDataset",
    "DigitPool",
    "EpochKeySampler",
    "GridLayout",
    "GridSample",
    "generate_eval_sample",
    "load_mnist",
    "load_sklearn_digits",
    "read_idx",
    "split_digit_pools",
    "write_eval_sets",
]

logger = logging.getLogger(__name__)

GRID = 3
NUM_CELLS = GRID * GRID
GRID_DIGITS = tuple(range(1, NUM_CELLS + 1))  # digit of each cell in reading order
NORMAL = "normal"
ANOMALY_TYPES = ("novel", "missing", "disorder", "flipped")
EVAL_TYPES = (NORMAL, *ANOMALY_TYPES)
NOVEL_DIGITS = (0,)
FLIPPABLE_DIGITS = (2, 3, 4, 5, 6, 7, 9)
SCALE_RANGE = (0.6, 1.3)
DIGIT_SOURCES = ("sklearn", "mnist")
SKLEARN_PAD = 2  # pixels of black added around scikit-learn's 8x8 digits
SKLEARN_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test share of each digit class
FORMAT_VERSION = 1  # bump when the generator's output changes: cached val/test folders are keyed on it
MANIFEST = "manifest.csv"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_STREAMS = {Split.TRAIN: 0, Split.VAL: 1, Split.TEST: 2}  # random streams derived from the seed
_POOL_STREAM = 3
_CONTAMINATION_STREAM = 4


# --------------------------------------------------------------------------------------------- digits


@dataclass(frozen=True)
class DigitPool:
    """Digit instances: ``images`` (N, k, k) uint8 grey on black, ``labels`` (N,) digit classes 0-9."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2] or self.images.dtype != np.uint8:
            msg = f"DigitPool images must be uint8 of shape (N, k, k), got {self.images.dtype} {self.images.shape}"
            raise ValueError(msg)
        if self.labels.shape != (len(self.images),):
            msg = f"DigitPool labels must have shape ({len(self.images)},), got {self.labels.shape}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "DigitPool":
        """Pool of the instances at ``indices``."""
        return DigitPool(self.images[indices], self.labels[indices])


def load_sklearn_digits() -> DigitPool:
    """scikit-learn's bundled 8x8 handwritten digits (grey levels 0-16), padded to 12x12 and scaled to uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.pad(bunch.images, ((0, 0), (SKLEARN_PAD, SKLEARN_PAD), (SKLEARN_PAD, SKLEARN_PAD)))
    images = np.round(images * (255.0 / 16.0)).astype(np.uint8)
    return DigitPool(images, bunch.target.astype(np.int64))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), optionally gzipped.

    Raises:
        ValueError: If the file is not an IDX file of unsigned bytes or is truncated.

    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        msg = f"cannot read MNIST file {path}: {error}"
        raise ValueError(msg) from error
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        msg = f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()!r}): a corrupt MNIST file?"
        raise ValueError(msg)
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        msg = f"{path} is truncated: its IDX header is incomplete"
        raise ValueError(msg)
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        msg = f"{path} holds {len(data) - header} data bytes, its header says {shape}: truncated or corrupt"
        raise ValueError(msg)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _mnist_raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def _missing_mnist_files(root: str | Path) -> list[str]:
    raw = _mnist_raw_dir(root)
    names = [name for pair in MNIST_FILES.values() for name in pair]
    return [name for name in names if not (raw / name).is_file() and not (raw / f"{name}.gz").is_file()]


def _mnist_file(root: str | Path, name: str) -> Path:
    path = _mnist_raw_dir(root) / name
    return path if path.is_file() else path.with_name(f"{name}.gz")


def _download_mnist(root: str | Path) -> None:
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(root=str(root), train=train, download=True)
    except Exception as error:
        msg = f"downloading MNIST into {_mnist_raw_dir(root)} failed ({error}); place the files there by hand"
        raise RuntimeError(msg) from error


def load_mnist(root: str | Path, download: bool = False) -> tuple[DigitPool, DigitPool]:
    """MNIST's official training and test sets from ``<root>/MNIST/raw/*-ubyte[.gz]`` (torchvision's layout).

    Args:
        root: Folder that holds ``MNIST/raw``.
        download: Let torchvision download the files when they are missing.

    Raises:
        FileNotFoundError: If files are missing and ``download`` is false.
        ValueError: If a file is corrupt or images and labels disagree.

    """
    if _missing_mnist_files(root) and download:
        _download_mnist(root)
    missing = _missing_mnist_files(root)
    if missing:
        msg = (
            f"MNIST files not found in {_mnist_raw_dir(root)}: {', '.join(missing)} (each may be gzipped). "
            f"Put torchvision's MNIST copy there (mnist_root/MNIST/raw/*-ubyte[.gz]) or pass download=True."
        )
        raise FileNotFoundError(msg)
    pools = []
    for image_name, label_name in MNIST_FILES.values():
        images, labels = read_idx(_mnist_file(root, image_name)), read_idx(_mnist_file(root, label_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max(initial=0) > 9:
            msg = (
                f"MNIST files {image_name} {images.shape} and {label_name} {labels.shape} in {_mnist_raw_dir(root)} "
                "do not match (expected N images of k x k and N labels 0-9)"
            )
            raise ValueError(msg)
        pools.append(DigitPool(np.ascontiguousarray(images), labels.astype(np.int64)))
    return pools[0], pools[1]


def _stratified_split(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split indices per class into consecutive parts of the given fractions (each part sorted)."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)[:-1]
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        for part, chunk in zip(parts, np.split(members, np.round(bounds * len(members)).astype(int)), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]


def split_digit_pools(
    digit_source: str = "sklearn",
    mnist_root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
) -> dict[Split, DigitPool]:
    """Disjoint train / val / test digit pools, split per class under ``seed``.

    scikit-learn's digits are split 60/20/20 %; MNIST's official training set is the train pool and its
    official test set is halved into val and test.

    Raises:
        ValueError: If ``digit_source`` is unknown or ``mnist_root`` is missing for MNIST.

    """
    rng = np.random.default_rng([seed, _POOL_STREAM])
    if digit_source == "sklearn":
        pool = load_sklearn_digits()
        train, val, test = (pool.subset(part) for part in _stratified_split(pool.labels, SKLEARN_FRACTIONS, rng))
    elif digit_source == "mnist":
        if mnist_root is None:
            msg = "digit_source='mnist' needs mnist_root: the folder holding MNIST/raw (torchvision's layout)"
            raise ValueError(msg)
        train, official_test = load_mnist(mnist_root, download=download)
        val, test = (official_test.subset(part) for part in _stratified_split(official_test.labels, (0.5, 0.5), rng))
    else:
        msg = f"digit_source must be one of {', '.join(map(repr, DIGIT_SOURCES))}, got {digit_source!r}"
        raise ValueError(msg)
    return {Split.TRAIN: train, Split.VAL: val, Split.TEST: test}


# ------------------------------------------------------------------------------------------ generator


@dataclass(frozen=True)
class GridLayout:
    """What each of the nine cells (reading order) shows.

    Attributes:
        instances: (9,) index of the digit instance in the pool, ``-1`` for an empty cell.
        scales: (9,) linear scale of the digit tile relative to the cell.
        flipped: (9,) whether the digit is mirrored left-right.

    """

    instances: np.ndarray
    scales: np.ndarray
    flipped: np.ndarray


@dataclass(frozen=True)
class GridSample:
    """A generated image: its ``layout``, the ``normal`` layout it was made from and the ``cells`` that differ."""

    anomaly_type: str
    normal: GridLayout
    layout: GridLayout
    cells: tuple[int, ...]


def _resample_weights(out_size: int, in_size: int, zoom: np.ndarray) -> np.ndarray:
    """(B, out_size, in_size) antialiased bilinear weights placing a tile, zoomed by ``zoom``, centred in the output.

    Pixels outside the tile are black: weights are normalised over the zero-padded tile.
    """
    centres = np.arange(out_size) + 0.5 - out_size / 2
    source = centres[None, :] / zoom[:, None] + in_size / 2  # (B, out) position in tile pixels
    support = np.maximum(1.0, 1.0 / zoom)[:, None, None]  # widen the triangle when shrinking (antialias)
    margin = int(np.ceil(support.max())) + 1
    taps = np.arange(-margin, in_size + margin) + 0.5
    weights = np.clip(1.0 - np.abs(source[..., None] - taps) / support, 0.0, None)
    weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-12)
    return weights[..., margin : margin + in_size]


class DigitAnatomyGenerator:
    """Compose 3x3 digit grids from a :class:`DigitPool`.

    Args:
        pool: Digit instances; it must hold every digit 0-9.
        cell_size: Side of a cell in pixels (the image is ``3 * cell_size`` square).
        scale_range: Range of the per-cell linear scale of a digit tile (1.0: the tile fills the cell).

    """

    def __init__(self, pool: DigitPool, cell_size: int = 32, scale_range: tuple[float, float] = SCALE_RANGE) -> None:
        self.pool = pool
        self.cell_size = cell_size
        self.scale_range = scale_range
        self._by_digit = [np.flatnonzero(pool.labels == digit) for digit in range(10)]
        absent = [digit for digit, members in enumerate(self._by_digit) if len(members) == 0]
        if absent:
            msg = f"the digit pool holds no instance of digit(s) {absent}; DigitAnatomy needs every digit 0-9"
            raise ValueError(msg)
        self._counts = np.array([len(members) for members in self._by_digit])

    @property
    def image_size(self) -> int:
        """Side of a generated image in pixels."""
        return GRID * self.cell_size

    def _instance_of(self, digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        picks = rng.integers(0, self._counts[digits])
        return np.array([self._by_digit[digit][pick] for digit, pick in zip(digits, picks, strict=True)])

    def normal_layout(self, rng: np.random.Generator) -> GridLayout:
        """Draw a random instance of each digit 1-9 in reading order, each with its own scale."""
        return GridLayout(
            instances=self._instance_of(np.array(GRID_DIGITS), rng),
            scales=rng.uniform(*self.scale_range, size=NUM_CELLS),
            flipped=np.zeros(NUM_CELLS, dtype=bool),
        )

    def add_anomaly(
        self,
        layout: GridLayout,
        anomaly_type: str,
        rng: np.random.Generator,
    ) -> tuple[GridLayout, tuple[int, ...]]:
        """Return ``layout`` with one anomaly of ``anomaly_type`` and the cells it changed.

        Raises:
            ValueError: If ``anomaly_type`` is not one of :data:`ANOMALY_TYPES`.

        """
        instances, scales, flipped = layout.instances.copy(), layout.scales.copy(), layout.flipped.copy()
        if anomaly_type == "novel":
            cells: tuple[int, ...] = (int(rng.integers(NUM_CELLS)),)
            instances[cells[0]] = self._instance_of(rng.choice(NOVEL_DIGITS, size=1), rng)[0]
        elif anomaly_type == "missing":
            cells = (int(rng.integers(NUM_CELLS)),)
            instances[cells[0]] = -1
        elif anomaly_type == "disorder":
            cells = tuple(sorted(int(cell) for cell in rng.choice(NUM_CELLS, size=2, replace=False)))
            order = list(cells[::-1])
            for values in (instances, scales, flipped):
                values[list(cells)] = values[order]
        elif anomaly_type == "flipped":
            candidates = [cell for cell, digit in enumerate(GRID_DIGITS) if digit in FLIPPABLE_DIGITS]
            cells = (int(rng.choice(candidates)),)
            flipped[cells[0]] = ~flipped[cells[0]]
        else:
            msg = f"anomaly_type must be one of {ANOMALY_TYPES}, got {anomaly_type!r}"
            raise ValueError(msg)
        return GridLayout(instances, scales, flipped), cells

    def sample(self, anomaly_type: str, rng: np.random.Generator) -> GridSample:
        """Draw a normal layout and, unless ``anomaly_type`` is ``"normal"``, apply one anomaly to it."""
        normal = self.normal_layout(rng)
        if anomaly_type == NORMAL:
            return GridSample(NORMAL, normal, normal, ())
        layout, cells = self.add_anomaly(normal, anomaly_type, rng)
        return GridSample(anomaly_type, normal, layout, cells)

    def render(self, layout: GridLayout) -> np.ndarray:
        """(H, W) uint8 grey image of ``layout`` (black background)."""
        empty = layout.instances < 0
        tiles = self.pool.images[np.where(empty, 0, layout.instances)].astype(np.float32) / 255.0
        tiles = np.where(layout.flipped[:, None, None], tiles[:, :, ::-1], tiles) * ~empty[:, None, None]
        tile_size = tiles.shape[-1]
        weights = _resample_weights(self.cell_size, tile_size, layout.scales * self.cell_size / tile_size)
        weights = weights.astype(np.float32)
        cells = weights @ tiles @ weights.transpose(0, 2, 1)  # (9, cell, cell): same zoom on both axes
        grid = cells.reshape(GRID, GRID, self.cell_size, self.cell_size).transpose(0, 2, 1, 3)
        image = grid.reshape(self.image_size, self.image_size)
        return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)

    def cell_slices(self, cell: int) -> tuple[slice, slice]:
        """Row and column slices of ``cell`` (reading order) in an image."""
        row, column = divmod(cell, GRID)
        size = self.cell_size
        return slice(row * size, (row + 1) * size), slice(column * size, (column + 1) * size)

    def cell_mask(self, cells: Sequence[int]) -> np.ndarray:
        """(H, W) bool mask covering the full squares of ``cells``."""
        mask = np.zeros((self.image_size, self.image_size), dtype=bool)
        for cell in cells:
            mask[self.cell_slices(cell)] = True
        return mask


def generate_eval_sample(
    generator: DigitAnatomyGenerator,
    split: Split | str,
    anomaly_type: str,
    index: int,
    seed: int,
) -> GridSample:
    """Generate the ``index``-th image of ``anomaly_type`` in a val or test ``split`` (deterministic under ``seed``)."""
    rng = np.random.default_rng([seed, _STREAMS[Split(split)], EVAL_TYPES.index(anomaly_type), index])
    return generator.sample(anomaly_type, rng)


def _to_image_tensor(grey: np.ndarray) -> Image:
    """(3, H, W) float image in [0, 1] from an (H, W) uint8 grey image (grey replicated)."""
    return to_dtype(Image(torch.from_numpy(grey).expand(3, -1, -1).contiguous()), torch.float32, scale=True)


def _save_png(array: np.ndarray, path: Path) -> None:
    """Save an (H, W) uint8 array as a grey PNG."""
    PILImage.fromarray(array).save(path)


def write_eval_sets(
    folder: str | Path,
    generators: Mapping[Split, DigitAnatomyGenerator],
    samples_per_type: int,
    seed: int,
) -> Path:
    """Write the val and test images, masks and ``manifest.csv`` into ``folder`` (atomically).

    Each split holds ``samples_per_type`` normal images and as many of each anomaly type. The folder is
    built under a temporary name next to it and renamed when complete, so an interrupted run leaves no
    folder that a later run would trust. An existing ``folder`` is left as it is.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    """
    folder = Path(folder)
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        rows = []
        for split in (Split.VAL, Split.TEST):
            generator = generators[split]
            for anomaly_type in EVAL_TYPES:
                (staging / split.value / anomaly_type).mkdir(parents=True)
                if anomaly_type != NORMAL:
                    (staging / split.value / "ground_truth" / anomaly_type).mkdir(parents=True)
                for index in range(samples_per_type):
                    sample = generate_eval_sample(generator, split, anomaly_type, index, seed)
                    image_path = f"{split.value}/{anomaly_type}/{index:04d}.png"
                    _save_png(generator.render(sample.layout), staging / image_path)
                    mask_path = ""
                    if sample.cells:
                        mask_path = f"{split.value}/ground_truth/{anomaly_type}/{index:04d}_mask.png"
                        _save_png(generator.cell_mask(sample.cells).astype(np.uint8) * 255, staging / mask_path)
                    rows.append(
                        {
                            "split": split.value,
                            "index": index,
                            "anomaly_type": anomaly_type,
                            "label": "normal" if anomaly_type == NORMAL else "abnormal",
                            "label_index": int(LabelName.NORMAL if anomaly_type == NORMAL else LabelName.ABNORMAL),
                            "anomalous_cells": " ".join(map(str, sample.cells)),
                            "image_path": image_path,
                            "mask_path": mask_path,
                        }
                    )
        pd.DataFrame(rows).to_csv(staging / MANIFEST, index=False)
        staging.chmod(0o755)  # mkdtemp makes it private
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():  # not a concurrent writer that finished first
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


# ------------------------------------------------------------------------------------------- datasets


class DigitAnatomyDataset(FullDepthDataset):
    """Validation or test split of DigitAnatomy, read from a folder written by :func:`write_eval_sets`.

    The samples DataFrame has anomalib's columns (``image_path``, ``mask_path``, ``label``,
    ``label_index``, ``split``) plus ``anomaly_type`` (``normal``, ``novel``, ``missing``, ``disorder``,
    ``flipped``), ``anomalous_cells`` (space-separated cell indices in reading order) and ``index``.

    Args:
        root: Folder holding ``manifest.csv`` and the PNGs.
        split: ``"val"`` or ``"test"``.
        augmentations: Augmentations applied to image and mask.

    Raises:
        FileNotFoundError: If the manifest or a file it lists is missing.

    """

    def __init__(self, root: str | Path, split: Split | str, augmentations: Transform | None = None) -> None:
        super().__init__(augmentations=augmentations)
        self.root = Path(root).resolve()
        self.split = Split(split)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            msg = (
                f"{manifest} not found: {self.root} is not a complete DigitAnatomy folder (write one with "
                "DigitAnatomy(...).prepare_data() or write_eval_sets(); delete an incomplete folder to regenerate it)"
            )
            raise FileNotFoundError(msg)
        samples = pd.read_csv(manifest, dtype={"anomalous_cells": str}, keep_default_na=False)
        samples = samples[samples["split"] == self.split.value].reset_index(drop=True)
        for column in ("image_path", "mask_path"):
            samples[column] = [str(self.root / path) if path else "" for path in samples[column]]
        listed = [path for column in ("image_path", "mask_path") for path in samples[column] if path]
        missing = [path for path in listed if not Path(path).is_file()]
        if missing:
            msg = f"{len(missing)} file(s) listed in {manifest} are missing, e.g. {missing[0]} (delete {self.root})"
            raise FileNotFoundError(msg)
        samples.attrs["task"] = "segmentation"
        self.samples = samples

    @property
    def anomaly_types(self) -> list[str]:
        """Anomaly type of each sample, in dataset order."""
        return self.samples["anomaly_type"].tolist()


class DigitAnatomyTrainDataset(AnomalibDataset):
    """DigitAnatomy training images generated on the fly, optionally contaminated with anomalies.

    Item ``key`` is rendered from a random generator seeded with ``(seed, key)``, so it depends on nothing
    else (not on the worker that renders it). :class:`EpochKeySampler` hands out keys
    ``epoch * length + i``, which makes every epoch different and every run reproducible. The items'
    ``image_path`` is virtual (``digit_anatomy/train/<anomaly type>/<key>.png``): nothing is written to disk.

    Contamination: in every epoch (keys ``epoch * length`` to ``epoch * length + length - 1``) exactly
    ``round(abnormal_fraction * length)`` items, chosen by a permutation seeded with ``(seed, epoch)``, carry
    one generated anomaly; the four types take turns, so each gets a quarter (up to rounding). Every item
    is labelled normal with an empty mask (the model trains without labels); the truth is the item's
    anomaly type: :meth:`anomaly_type_of`, the ``anomaly_type`` and ``contaminant`` columns of ``samples``
    (keys of the first epoch) and the folder of the virtual ``image_path``.

    Args:
        generator: Generator over the train digit pool.
        length: Images per epoch.
        seed: Seed of the images.
        augmentations: Augmentations applied to image and mask.
        abnormal_fraction: Fraction of each epoch's images that are abnormal, in ``[0, 1)``.

    Raises:
        ValueError: If ``abnormal_fraction`` is outside ``[0, 1)``.

    """

    def __init__(
        self,
        generator: DigitAnatomyGenerator,
        length: int,
        seed: int,
        augmentations: Transform | None = None,
        abnormal_fraction: float = 0.0,
    ) -> None:
        super().__init__(augmentations=augmentations)
        if not 0.0 <= abnormal_fraction < 1.0:
            msg = f"the training abnormal fraction must be in [0, 1), got {abnormal_fraction}"
            raise ValueError(msg)
        self.generator = generator
        self.length = length
        self.seed = seed
        self.num_abnormal = round(abnormal_fraction * length)
        self._ranks: dict[int, np.ndarray] = {}
        types = [self.anomaly_type_of(key) for key in range(length)]
        samples = pd.DataFrame(
            {
                "image_path": [self._path(key, anomaly_type) for key, anomaly_type in enumerate(types)],
                "mask_path": "",
                "label": "normal",
                "label_index": int(LabelName.NORMAL),
                "anomaly_type": types,
                "contaminant": [anomaly_type != NORMAL for anomaly_type in types],
                "split": Split.TRAIN.value,
            }
        )
        samples.attrs["task"] = "segmentation"
        self.samples = samples

    @AnomalibDataset.samples.setter
    def samples(self, samples: pd.DataFrame) -> None:
        """Set the samples without anomalib's file check: the images are generated, not read."""
        missing = {"image_path", "split", "label_index"} - set(samples.columns)
        if missing:
            msg = f"samples lack column(s) {sorted(missing)}"
            raise ValueError(msg)
        self._samples = samples.reset_index(drop=True)

    @property
    def anomaly_types(self) -> list[str]:
        """True anomaly type of each sample (keys of the first epoch; ``normal`` unless contaminated)."""
        return self.samples["anomaly_type"].tolist()

    def anomaly_type_of(self, key: int) -> str:
        """Return the true anomaly type of item ``key`` (``"normal"`` or one of :data:`ANOMALY_TYPES`)."""
        if self.num_abnormal == 0:
            return NORMAL
        epoch, index = divmod(key, self.length)
        if epoch not in self._ranks:
            rng = np.random.default_rng([self.seed, _CONTAMINATION_STREAM, epoch])
            self._ranks = {epoch: rng.permutation(self.length)}  # keep one epoch: keys arrive epoch by epoch
        rank = int(self._ranks[epoch][index])
        return ANOMALY_TYPES[rank % len(ANOMALY_TYPES)] if rank < self.num_abnormal else NORMAL

    @staticmethod
    def _path(key: int, anomaly_type: str = NORMAL) -> str:
        return f"digit_anatomy/train/{anomaly_type}/{key:07d}.png"

    def __getitem__(self, key: int) -> ImageItem:
        """Render the image of ``key`` (any non-negative integer, see :class:`EpochKeySampler`), labelled normal."""
        rng = np.random.default_rng([self.seed, _STREAMS[Split.TRAIN], key])
        anomaly_type = self.anomaly_type_of(key)
        image = _to_image_tensor(self.generator.render(self.generator.sample(anomaly_type, rng).layout))
        mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        if self.augmentations:
            image, mask = self.augmentations(image, mask)
        return ImageItem(
            image=image,
            gt_label=torch.tensor(int(LabelName.NORMAL)),
            gt_mask=mask,
            image_path=self._path(key, anomaly_type),
        )


class EpochKeySampler(Sampler[int]):
    """Yield keys ``epoch * length + i`` (``i < length``), advancing ``epoch`` at every pass.

    Keys are drawn in the main process, so every epoch gets new images whatever the number of workers.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.length
        self.epoch += 1
        return iter(range(start, start + self.length))


# ----------------------------------------------------------------------------------------- datamodule


class DigitAnatomy(AnomalibDataModule):
    """DigitAnatomy (Xiang et al., SQUID, CVPR 2023): 3x3 grids of the digits 1-9 with four anomaly types.

    Normal images show a random instance of each digit 1-9 in reading order, each cell with a random
    scale in 0.6-1.3; abnormal images hold a novel digit (a 0), a missing digit (an empty cell), a
    disorder (two cells swapped) or a flipped digit (one of 2-7 and 9 mirrored). Ground-truth masks
    cover the full square of each changed cell. Images are grey digits on black, 3 channels in [0, 1],
    ``3 * cell_size`` pixels square.

    Train: ``train_size`` images per epoch, generated on the fly (new ones in every epoch,
    reproducible under ``seed``); all normal unless ``train_abnormal_fraction`` > 0, which mixes that
    fraction of unlabelled anomalies into every epoch (see :class:`DigitAnatomyTrainDataset`).
    Validation and test: ``samples_per_type`` normal images and as many of each anomaly type
    (``5 * samples_per_type`` each), generated once and written to
    ``<root>/<digit_source>/cell<cell_size>_n<samples_per_type>_seed<seed>_v<version>/`` as PNGs with
    masks and ``manifest.csv``; the anomaly type of each image is the ``anomaly_type`` column of
    ``val_data.samples`` / ``test_data.samples`` (``dataset.anomaly_types``). Train, validation and
    test use disjoint digit instances. Look at examples with
    ``python -m anomalib_medical.data.digit_anatomy_examples --out DIR``.

    Args:
        root: Folder for the generated validation and test sets.
            Defaults to ``"./datasets/DigitAnatomy"``.
        cell_size: Side of a grid cell in pixels; images are ``3 * cell_size`` square
            (32: 96x96, as in the authors' configuration). Defaults to ``32``.
        samples_per_type: Images per anomaly type, and normal images, in each of validation and test.
            Defaults to ``100``.
        train_size: Generated training images per epoch (the authors use 1,600: 100 batches of 16).
            Defaults to ``1600``.
        train_abnormal_fraction: Fraction of the training images that are abnormal (contamination for
            "true" unsupervised training; the normal ratio of the SQUID/SimSID papers is one minus it).
            Every epoch holds exactly ``round(train_abnormal_fraction * train_size)`` generated anomalies,
            the four types in equal shares, built from the training digit pool (so disjoint from
            validation and test), labelled normal; their true type is recorded
            (``train_data.anomaly_types``, ``train_data.samples["contaminant"]``, the folder of the
            virtual ``image_path``). Must be in ``[0, 1)``. Defaults to ``0.0``.
        digit_source: ``"sklearn"`` (scikit-learn's bundled 8x8 digits, no download) or ``"mnist"``.
            Defaults to ``"sklearn"``.
        mnist_root: For ``"mnist"``: folder holding ``MNIST/raw/*-ubyte[.gz]`` (torchvision's layout).
            Defaults to ``None``.
        download: For ``"mnist"``: let torchvision download MNIST into ``mnist_root`` when missing.
            Defaults to ``False``.
        train_batch_size: Training batch size. Defaults to ``16``.
        eval_batch_size: Validation and test batch size. Defaults to ``32``.
        num_workers: Data loader workers (generation takes ~0.1 ms per image). Defaults to ``0``.
        train_augmentations: Augmentations of the training images. Defaults to ``None``.
        val_augmentations: Augmentations of the validation images. Defaults to ``None``.
        test_augmentations: Augmentations of the test images. Defaults to ``None``.
        augmentations: Augmentations of every split without its own. Defaults to ``None``.
        seed: Seed of the digit pool split, the training images and the validation and test sets.
            Defaults to ``0``.

    Raises:
        ValueError: If ``digit_source`` is unknown, ``mnist_root`` is missing for MNIST, a size is not positive
            or ``train_abnormal_fraction`` is outside ``[0, 1)``.

    Example:
        >>> from anomalib.engine import Engine
        >>> from anomalib.models import Padim
        >>> datamodule = DigitAnatomy(samples_per_type=50)
        >>> Engine(max_epochs=1).fit(Padim(), datamodule=datamodule)  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/DigitAnatomy",
        cell_size: int = 32,
        samples_per_type: int = 100,
        train_size: int = 1600,
        train_abnormal_fraction: float = 0.0,
        digit_source: str = "sklearn",
        mnist_root: str | Path | None = None,
        download: bool = False,
        train_batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            val_split_mode=ValSplitMode.FROM_DIR,
            test_split_mode=TestSplitMode.FROM_DIR,
            seed=seed,
        )
        if digit_source not in DIGIT_SOURCES:
            msg = f"digit_source must be one of {', '.join(map(repr, DIGIT_SOURCES))}, got {digit_source!r}"
            raise ValueError(msg)
        if digit_source == "mnist" and mnist_root is None:
            msg = "digit_source='mnist' needs mnist_root: the folder holding MNIST/raw (torchvision's layout)"
            raise ValueError(msg)
        sizes = {"cell_size": cell_size, "samples_per_type": samples_per_type, "train_size": train_size}
        for name, value in sizes.items():
            if value < 1:
                msg = f"{name} must be a positive integer, got {value}"
                raise ValueError(msg)
        if not 0.0 <= train_abnormal_fraction < 1.0:
            msg = f"train_abnormal_fraction must be in [0, 1), got {train_abnormal_fraction}"
            raise ValueError(msg)
        self.root = Path(root)
        self.cell_size = cell_size
        self.samples_per_type = samples_per_type
        self.train_size = train_size
        self.train_abnormal_fraction = train_abnormal_fraction
        self.digit_source = digit_source
        self.mnist_root = mnist_root
        self.download = download
        self.category = digit_source
        self._generators: dict[Split, DigitAnatomyGenerator] | None = None
        self._train_sampler = EpochKeySampler(train_size)

    @property
    def dataset_dir(self) -> Path:
        """Folder of this configuration's validation and test sets."""
        name = f"cell{self.cell_size}_n{self.samples_per_type}_seed{self.seed}_v{FORMAT_VERSION}"
        return self.root / self.digit_source / name

    def _get_generators(self) -> dict[Split, DigitAnatomyGenerator]:
        if self._generators is None:
            pools = split_digit_pools(self.digit_source, self.mnist_root, self.download, self.seed)
            self._generators = {split: DigitAnatomyGenerator(pool, self.cell_size) for split, pool in pools.items()}
        return self._generators

    def prepare_data(self) -> None:
        """Download MNIST if allowed and needed, and write the validation and test sets if absent."""
        if not (self.dataset_dir / MANIFEST).is_file():
            write_eval_sets(self.dataset_dir, self._get_generators(), self.samples_per_type, self.seed)

    def _setup(self, _stage: str | None = None) -> None:
        self.prepare_data()  # no-op when done; covers setup() called without prepare_data()
        self.train_data = DigitAnatomyTrainDataset(
            self._get_generators()[Split.TRAIN],
            self.train_size,
            self.seed,
            augmentations=self.train_augmentations,
            abnormal_fraction=self.train_abnormal_fraction,
        )
        self.val_data = DigitAnatomyDataset(self.dataset_dir, Split.VAL, augmentations=self.val_augmentations)
        self.test_data = DigitAnatomyDataset(self.dataset_dir, Split.TEST, augmentations=self.test_augmentations)

    def train_dataloader(self) -> DataLoader:
        """Training loader whose keys change every epoch (:class:`EpochKeySampler`)."""
        return DataLoader(
            dataset=self.train_data,
            sampler=self._train_sampler,
            batch_size=self.train_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.external_collate_fn or self.train_data.collate_fn,
        )
