"""COVIDx chest radiographs (Wang et al. 2020; COVIDx CXR-2 / CXR-3) with SimSID's one-class protocol.

Data:
    Wang, L., Lin, Z. Q., Wong, A. (2020). *COVID-Net: a tailored deep convolutional neural network design for
    detection of COVID-19 cases from chest X-ray images*. Scientific Reports 10, 19549. The COVIDx releases
    (Kaggle ``andyczhao/covidx-cxr2``; licences of the source collections) are folders of images plus split
    files::

        root/
            train.txt   test.txt   val.txt (in releases that have one, e.g. CXR-3)
            train/<filename>   test/<filename>   val/<filename>

    Every line of a split file is ``patient_id filename class source``, separated by single spaces (COVIDx
    CXR-2/3: class ``positive`` / ``negative`` for COVID-19; COVIDx8 and the authors' ``COVIDx9A`` files:
    ``normal`` / ``pneumonia`` / ``COVID-19``).

Labels:
    An image is normal when its class is one of ``normal_classes`` (default ``["normal"]``, the SimSID authors'
    rule) and abnormal otherwise. The CXR-2/3 files have no ``normal`` class: ``negative`` there means "no
    COVID-19" and includes other pneumonias, so ``normal_classes: [negative]`` trains on COVID-negative images,
    a different task from the paper's.

Split formats (``split_format``):
    - ``"provider"``: train = the normal images of ``train.txt``; validation = ``val_normal`` + ``val_abnormal``
      images drawn (seeded) from ``val.txt`` when it exists, else held out of ``train.txt`` (and then every image
      of a validation patient is kept out of training); test = every image of ``test.txt``.
    - ``"authors"``: the SimSID authors' files (``configs/covidx_dev.py``, ``dataloader/dataloader_covidx.py``):
      ``train_squid.txt`` (normal training images), ``train_squid_abnormal.txt`` (the abnormal images that
      contamination draws from), ``val_squid.txt`` (validation; images in ``train/``) and ``test_COVIDx9A.txt``
      (test; images in ``test/``), all in the line format above. Every image listed is used, in file order:
      contamination takes the first lines of each file, as the authors do, so their split files give their images.

Contamination ("true" unsupervised training; SimSID's COVIDx setting ``positive_ratio`` 0.7, i.e.
``train_abnormal_fraction: 0.3``): abnormal training-pool images labelled normal for the model and marked by the
``contaminant`` column. ``contamination="replace"`` (default, the authors' rule) keeps the split's size: ``ceil(f * n)``
of the ``n`` normal images are replaced; ``"add"`` adds ``round(f * n / (1 - f))`` abnormal images. In the provider
format the contaminants are drawn (seeded) from the abnormal images of ``train.txt`` that validation does not use.

Images are preprocessed once (resized to ``image_size``, full depth) into a cache next to ``root``; see
:mod:`anomalib_medical.data.utils.cache`. No pixel annotations: image metrics only. A missing split file or folder,
a line without four columns, an image listed twice or listed but absent raises an error naming the file and line.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from anomalib.data.utils import Split
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.base import CachedRadiographDataModule, SelectedImage
from anomalib_medical.data.utils.baugh import PreprocessingPreset, make_preprocessing
from anomalib_medical.data.utils.cache import CacheEntry
from anomalib_medical.data.utils.splits import contaminant_count, draw, replaced_count

SplitFormat = Literal["provider", "authors"]
Contamination = Literal["add", "replace"]

SPLIT_COLUMNS = ("patient_id", "filename", "class", "source")
"""The space-separated columns of every COVIDx split file."""

AUTHORS_FILES = {
    "train": ("train_squid.txt", "train"),
    "train_abnormal": ("train_squid_abnormal.txt", "train"),
    "val": ("val_squid.txt", "train"),
    "test": ("test_COVIDx9A.txt", "test"),
}
"""The SimSID authors' split files and the image folder each one refers to."""


@dataclass(frozen=True)
class SplitLine:
    """One line of a split file: the image, its patient and class, and where it is listed."""

    key: str
    source: Path
    patient: str
    label_class: str
    listed_in: Path
    line: int


def read_split_file(path: Path, image_folder: Path) -> list[SplitLine]:
    """Read a COVIDx split file (``patient_id filename class source`` per line) in file order.

    Args:
        path: The split file.
        image_folder: Folder that holds the listed images.

    Returns:
        One entry per non-empty line.

    Raises:
        FileNotFoundError: When the file or the image folder does not exist, or a listed image is absent.
        ValueError: For a line without exactly four columns or an image listed twice.

    """
    if not path.is_file():
        msg = f"COVIDx split file not found: {path} does not exist."
        raise FileNotFoundError(msg)
    if not image_folder.is_dir():
        msg = f"COVIDx image folder not found: {image_folder} does not exist (the images of {path.name})."
        raise FileNotFoundError(msg)
    entries: list[SplitLine] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        columns = text.split()
        if len(columns) != len(SPLIT_COLUMNS):
            msg = f"{path}, line {number}: expected {len(SPLIT_COLUMNS)} space-separated columns "
            msg += f"({' '.join(SPLIT_COLUMNS)}), got {len(columns)}: {text.strip()!r}."
            raise ValueError(msg)
        patient, filename, label_class, _source = columns
        if filename in seen:
            msg = f"{path}, line {number}: image {filename!r} is already listed on line {seen[filename]}."
            raise ValueError(msg)
        seen[filename] = number
        source = image_folder / filename
        if not source.is_file():
            msg = f"{path}, line {number}: image {filename!r} does not exist in {image_folder}."
            raise FileNotFoundError(msg)
        key = f"{image_folder.name}/{Path(filename).with_suffix('')}"
        entries.append(SplitLine(key, source, patient, label_class, path, number))
    return entries


class COVIDx(CachedRadiographDataModule):
    """COVIDx (CXR-2/3 layout or the SimSID authors' split files); see :mod:`anomalib_medical.data.covidx`.

    Args:
        root: Folder with the split files and the ``train/``, ``test/`` (and ``val/``) image folders.
        split_format: ``"provider"`` (``train.txt``, ``test.txt``, optional ``val.txt``) or ``"authors"``
            (SimSID's ``train_squid.txt``, ``train_squid_abnormal.txt``, ``val_squid.txt``, ``test_COVIDx9A.txt``).
        normal_classes: Classes counted as normal (default ``["normal"]``; ``["negative"]`` for CXR-2/3 files,
            see the module docstring).
        val_normal: Normal validation images (provider format); ``None`` takes every one of ``val.txt``.
        val_abnormal: Abnormal validation images (provider format); ``None`` takes every one of ``val.txt``.
        train_abnormal_fraction: Fraction of the training split made of abnormal images labelled normal (SimSID's
            COVIDx setting: 0.3). Must be in ``[0, 1)``.
        contamination: ``"replace"`` normal training images (the authors' rule) or ``"add"`` to them.
        image_size: Size of the cached images, an int for square images or ``(height, width)``.
        histogram_equalisation: Equalise the histogram of each cached image.
        preprocessing: ``"display"`` (the display pipeline) or ``"baugh"`` (Baugh et al.'s order, see
            :mod:`anomalib_medical.data.utils.baugh`), applied once into the cache.
        cache_dir: Parent folder of the preprocessed caches; default ``<root>_cache`` next to ``root``.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers; also the threads that fill the cache.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        seed: Seed of the validation and contamination draws (provider format).

    Example:
        >>> datamodule = COVIDx(root="./datasets/covidx", train_abnormal_fraction=0.3)  # doctest: +SKIP
        >>> datamodule.setup()  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/covidx",
        split_format: SplitFormat = "provider",
        normal_classes: Sequence[str] = ("normal",),
        val_normal: int | None = 100,
        val_abnormal: int | None = 100,
        train_abnormal_fraction: float = 0.0,
        contamination: Contamination = "replace",
        image_size: int | tuple[int, int] = 256,
        histogram_equalisation: bool = False,
        preprocessing: PreprocessingPreset = "display",
        cache_dir: str | Path | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root=root,
            cache_dir=cache_dir,
            preprocessing=make_preprocessing(preprocessing, image_size, histogram_equalisation=histogram_equalisation),
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            seed=seed,
        )
        if split_format not in {"provider", "authors"}:
            msg = f"split_format must be 'provider' or 'authors', got {split_format!r}."
            raise ValueError(msg)
        if contamination not in {"add", "replace"}:
            msg = f"contamination must be 'add' or 'replace', got {contamination!r}."
            raise ValueError(msg)
        if isinstance(normal_classes, str) or not normal_classes:
            msg = f"normal_classes must be a non-empty list of class names, got {normal_classes!r}."
            raise ValueError(msg)
        contaminant_count(train_abnormal_fraction, 0)  # checks the fraction before any data is read
        self.split_format = split_format
        self.normal_classes = tuple(normal_classes)
        self.val_normal = val_normal
        self.val_abnormal = val_abnormal
        self.train_abnormal_fraction = train_abnormal_fraction
        self.contamination = contamination
        self._contaminants: list[str] = []

    def select(self) -> list[SelectedImage]:
        """Choose the images of every split from the split files (see the module docstring)."""
        select = self._select_authors if self.split_format == "authors" else self._select_provider
        train, contaminants, val, test = select()
        self._contaminants = [line.key for line in contaminants]
        chosen = [
            *((line, Split.TRAIN, 0) for line in train + contaminants),
            *((line, Split.VAL, self._label(line)) for line in val),
            *((line, Split.TEST, self._label(line)) for line in test),
        ]
        first: dict[str, SplitLine] = {}
        for line, _, _ in chosen:
            if line.key in first:
                other = first[line.key]
                msg = f"{line.listed_in}, line {line.line}: image {line.source.name!r} is also listed in "
                msg += f"{other.listed_in}, line {other.line}; an image may be in one split only."
                raise ValueError(msg)
            first[line.key] = line
        return [
            SelectedImage(CacheEntry(line.key, line.source), split, label, line.listed_in)
            for line, split, label in chosen
        ]

    def samples(self) -> pd.DataFrame:
        """Return the base class's samples table with a ``contaminant`` column (the abnormal training images)."""
        samples = super().samples()
        samples["contaminant"] = samples.image_id.isin(self._contaminants)
        return samples

    def _label(self, line: SplitLine) -> int:
        """Return 0 for a normal class, 1 otherwise."""
        return 0 if line.label_class in self.normal_classes else 1

    def _contaminant_count(self, normal: int, pool: int) -> int:
        """Abnormal training images for ``normal`` normal ones under the contamination rule, checked against the pool.

        Raises:
            ValueError: When the pool of abnormal training images is smaller than that count.

        """
        rule = replaced_count if self.contamination == "replace" else contaminant_count
        count = rule(self.train_abnormal_fraction, normal)
        if count > pool:
            msg = f"Requested {count} abnormal training images for train_abnormal_fraction="
            msg += f"{self.train_abnormal_fraction} ({self.contamination}), but only {pool} are available."
            raise ValueError(msg)
        return count

    def _read(self, name: str, folder: str) -> list[SplitLine]:
        """Read ``root/name`` whose images are in ``root/folder``."""
        return read_split_file(self.root / name, self.root / folder)

    def _check_classes(self, lines: list[SplitLine], path: Path) -> None:
        """Raise when a split file lists no image of a normal class (e.g. CXR-2/3 files with ``normal``)."""
        if not any(self._label(line) == 0 for line in lines):
            found = sorted({line.label_class for line in lines})
            msg = f"{path} lists no image of normal_classes {list(self.normal_classes)}; its classes are {found}. "
            msg += "COVIDx CXR-2/3 label COVID-19 'positive'/'negative': set normal_classes (e.g. ['negative'])."
            raise ValueError(msg)

    def _select_authors(self) -> tuple[list[SplitLine], ...]:
        """Read the SimSID authors' files in file order; contamination keeps the first lines of each, as they do."""
        lines = {split: self._read(name, folder) for split, (name, folder) in AUTHORS_FILES.items()}
        train, pool = lines["train"], lines["train_abnormal"]
        count = self._contaminant_count(len(train), len(pool))
        kept = train[: len(train) - count] if self.contamination == "replace" else train
        return kept, pool[:count], lines["val"], lines["test"]

    def _select_provider(self) -> tuple[list[SplitLine], ...]:
        """Read ``train.txt``, ``test.txt`` and ``val.txt`` (or hold a validation split out of ``train.txt``)."""
        train = self._read("train.txt", "train")
        self._check_classes(train, self.root / "train.txt")
        test = self._read("test.txt", "test")
        has_val = (self.root / "val.txt").is_file()
        val_pool = {line.key: line for line in (self._read("val.txt", "val") if has_val else train)}
        where = "val.txt" if has_val else "train.txt"
        rng = self.rng()
        val_keys = [
            *draw(self._keys(val_pool.values(), 0), self.val_normal, rng, f"normal validation images ({where})"),
            *draw(self._keys(val_pool.values(), 1), self.val_abnormal, rng, f"abnormal validation images ({where})"),
        ]
        val = [val_pool[key] for key in val_keys]
        held_out = set() if has_val else {line.patient for line in val}
        remaining = [line for line in train if line.patient not in held_out]
        normal = [line for line in remaining if self._label(line) == 0]
        abnormal = {line.key: line for line in remaining if self._label(line) == 1}
        count = self._contaminant_count(len(normal), len(abnormal))
        contaminants = [abnormal[key] for key in draw(abnormal, count, rng, "abnormal training images")]
        if self.contamination == "replace":
            replaced = set(draw(self._keys(normal, 0), count, rng, "normal training images to replace"))
            normal = [line for line in normal if line.key not in replaced]
        return normal, contaminants, val, test

    def _keys(self, lines: Iterable[SplitLine], label: int) -> list[str]:
        """Return the keys of the lines with ``label``."""
        return [line.key for line in lines if self._label(line) == label]
