"""VinDr-CXR chest radiographs (Nguyen et al. 2022) with the DDAD split or the official split, and box masks.

Data:
    Nguyen, H. Q., Lam, K., Le, L. T., et al. (2022). *VinDr-CXR: An open dataset of chest X-rays with
    radiologist's annotations*. Scientific Data 9, 429. 18,000 posterior-anterior DICOM radiographs (15,000
    training images, each labelled independently by 3 of 17 radiologists; 3,000 test images labelled by the
    consensus of 5) with 22 local findings (boxes) and 6 global labels. Two distributions are accepted:

    - PhysioNet (credentialed access, PhysioNet Credentialed Health Data License 1.5.0), ``label_format="physionet"``::

          root/
              train/<image_id>.dicom                      15,000 images
              test/<image_id>.dicom                        3,000 images
              annotations/image_labels_train.csv           image_id, rad_ID, <28 labels incl. "No finding">
              annotations/image_labels_test.csv            image_id, <28 labels> (consensus)
              annotations/annotations_train.csv            image_id, rad_id, class_name, x_min, y_min, x_max, y_max
              annotations/annotations_test.csv             the same for the consensus boxes

    - the VinBigData Kaggle competition copy (competition rules: non-commercial research), ``label_format=
      "competition"``: ``train/<image_id>.dicom`` (or ``.dcm``) and ``train.csv`` with ``image_id, class_name,
      class_id, rad_id, x_min, y_min, x_max, y_max``, one row per radiologist finding (``No finding`` rows have no
      box). Its test images have no labels, so only the DDAD split is available.

    ``label_format="auto"`` picks PhysioNet when ``annotations/image_labels_train.csv`` exists, else the competition
    format when ``train.csv`` exists.

Labels:
    normal = every radiologist says ``No finding`` (PhysioNet: ``No finding`` == 1 and every other label 0 in all of
    the image's rows; competition: all of its rows are ``No finding``); abnormal otherwise. The ground-truth mask of
    an abnormal image is the union of all its boxes (every radiologist's, or the consensus boxes of the official
    test set), drawn at the cached resolution with the coordinates scaled like the image; an abnormal image whose
    findings are all global labels has an empty mask.

Splits:
    - ``split="ddad"`` (default): the repartition of Cai et al. (DDAD, MICCAI 2022), reused by Baugh et al. (MICCAI
      2023), drawn from the 15,000 training images: train = ``train["0"]`` (4,000 normal), test = ``test["0"]`` +
      ``test["1"]`` (1,000 normal + 1,000 abnormal). Its ``train["unlabeled"]`` pool (images DDAD uses without
      labels) is where our validation images come from: ``val_normal`` + ``val_abnormal`` drawn (seeded) from
      ``unlabeled["0"]`` and ``unlabeled["1"]``, disjoint from train and test. The JSON file (``<image_id>.png``
      lists) is read from ``split_file``, or downloaded from the DDAD repository (:data:`DDAD_SPLIT_URL`) into the
      cache folder; either way its SHA-256 must be :data:`DDAD_SPLIT_SHA256` (a downloaded file that differs is
      kept as ``ddad_vin_data.json.rejected``). Labels are taken from the JSON; a disagreement with the label files
      is logged.

      DDAD cleaning (``ddad_cleaning=True``, the default; Baugh et al., Sec. 3, and their
      ``multitask_method/data/vindr_cxr.py``): DDAD's normal lists hold images that one of the three radiologists
      labelled abnormal (52 training and 10 normal test images of the published files). Each is dropped, and the
      lists are padded back to their sizes with the other all-normal training images (those in neither cleaned
      list), sorted by id: the training list takes the first ones, the normal test list the last ones. The numbers
      are logged. The validation images are then drawn from DDAD's unlabelled images whose label files agree
      (all-normal and not used for padding; abnormal). ``ddad_cleaning=False`` keeps DDAD's lists as published.
    - ``split="physionet"``: the official split: train = the normal training images less ``val_normal`` held out for
      validation with ``val_abnormal`` abnormal training images; test = the 3,000 official test images.

    ``test_set="official"`` replaces the test split by the 3,000 official test images (consensus labels and boxes
    of ``image_labels_test.csv`` / ``annotations_test.csv``, PhysioNet layout), keeping the split's training and
    validation images: a DDAD-trained model tested on VinDr_ts, as in the paper's Table 2. ``test_set="split"``
    (default) is the split's own test set.

Preprocessing (once, into the cache; :mod:`anomalib_medical.data.utils.cache`), ``preprocessing=``:

- ``"display"`` (default): DICOM display pipeline (modality LUT, VOI LUT or window, ``MONOCHROME1`` inverted;
  :mod:`anomalib_medical.data.utils.dicom`), bilinear resize to ``image_size``, optional histogram equalisation;
- ``"baugh"``: Baugh et al.'s order (cubic resize to 512, clip to the window, equalise with 256 bins, invert
  ``MONOCHROME1``, min-max to [-1, 1], cubic resize to ``image_size``; :mod:`anomalib_medical.data.utils.baugh`),
  cached as ``(x + 1) / 2`` so that the localiser's ``2 x - 1`` gives back their values. The images are equalised
  already: the model's own ``histogram_equalisation`` must be off.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from anomalib.data.utils import Split
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.base import CachedRadiographDataModule, SelectedImage
from anomalib_medical.data.utils.baugh import PreprocessingPreset, make_preprocessing
from anomalib_medical.data.utils.boxes import Box, boxes_by_image
from anomalib_medical.data.utils.cache import CacheEntry
from anomalib_medical.data.utils.dicom import IntensityFallback
from anomalib_medical.data.utils.download import (
    ChecksumError,
    download_file,
    normalise_sha256,
    sha256sum,
    verify_sha256,
)
from anomalib_medical.data.utils.reader import DICOM_SUFFIXES
from anomalib_medical.data.utils.splits import draw, read_label_csv

logger = logging.getLogger(__name__)

LabelFormat = Literal["auto", "physionet", "competition"]
VinDrSplit = Literal["ddad", "physionet"]
VinDrTestSet = Literal["split", "official"]

DDAD_SPLIT_URL = (
    "https://raw.githubusercontent.com/caiyu6666/DDAD/49efc30ec59e0d6849a5ef8a726899e2fe530445/data/vin_data.json"
)
"""The DDAD repartition of VinDr-CXR (``vin_data.json``) in Cai et al.'s repository, pinned to a commit."""

DDAD_SPLIT_SHA256 = "72d7d17cc2145d0a9adb98f1166ddc93bc1413d0b4dbd828874637df1e9afce2"
"""SHA-256 of :data:`DDAD_SPLIT_URL`."""

NO_FINDING = "No finding"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
COMPETITION_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", *BOX_COLUMNS)
PHYSIONET_LABEL_COLUMNS = ("image_id", NO_FINDING)
PHYSIONET_BOX_COLUMNS = ("image_id", "class_name", *BOX_COLUMNS)
ID_COLUMNS = ("image_id", "rad_id", "rad_ID")
"""Columns read as text: VinDr-CXR image ids are hexadecimal and may consist of digits only (``00123``)."""


@dataclass(frozen=True)
class VinDrLabels:
    """Image-level labels and boxes of one set of VinDr-CXR images (train or test).

    Args:
        normal: Image id -> whether every radiologist said ``No finding``.
        boxes: Image id -> all boxes drawn on it.
        source: The label file, named in errors.

    """

    normal: dict[str, bool]
    boxes: dict[str, list[Box]]
    source: Path

    @classmethod
    def competition(cls, path: Path) -> "VinDrLabels":
        """Read the competition's ``train.csv``."""
        table = read_label_csv(path, COMPETITION_COLUMNS, "VinBigData competition train.csv", ID_COLUMNS)
        normal = (table["class_name"].astype(str).str.strip() == NO_FINDING).groupby(table["image_id"]).all()
        return cls(normal.to_dict(), boxes_by_image(table, "image_id", BOX_COLUMNS, path), path)

    @classmethod
    def physionet(cls, labels_path: Path, boxes_path: Path) -> "VinDrLabels":
        """Read PhysioNet's ``image_labels_<split>.csv`` and ``annotations_<split>.csv``."""
        table = read_label_csv(labels_path, PHYSIONET_LABEL_COLUMNS, f"VinDr-CXR {labels_path.name}", ID_COLUMNS)
        label_columns = [column for column in table.columns if column.lower() not in {"image_id", "rad_id"}]
        values = table[label_columns].apply(pd.to_numeric, errors="coerce")
        bad = values.isna() | ~values.isin([0, 1])
        if bad.any(axis=None):
            row = int(bad.any(axis=1).to_numpy().nonzero()[0][0])
            column = label_columns[int(bad.iloc[row].to_numpy().nonzero()[0][0])]
            msg = f"{labels_path}, line {row + 2}: {column!r} is '{table.iloc[row][column]}'; expected 0 or 1."
            raise ValueError(msg)
        others = [column for column in label_columns if column != NO_FINDING]
        row_normal = (values[NO_FINDING] == 1) & (values[others] == 0).all(axis=1)
        normal = row_normal.groupby(table["image_id"]).all()
        annotations = read_label_csv(boxes_path, PHYSIONET_BOX_COLUMNS, f"VinDr-CXR {boxes_path.name}", ID_COLUMNS)
        boxes = boxes_by_image(annotations, "image_id", BOX_COLUMNS, boxes_path)
        unknown = sorted(set(boxes) - set(normal.index))
        if unknown:
            msg = f"{boxes_path}: image {unknown[0]!r} has boxes but is not in {labels_path} ({len(unknown)} such)."
            raise ValueError(msg)
        return cls(normal.to_dict(), boxes, labels_path)


@dataclass(frozen=True)
class DDADCleaning:
    """DDAD's normal lists after Baugh et al.'s cleaning (see :func:`clean_ddad_split`).

    Args:
        train: The cleaned training list (kept images in DDAD's order, then the padding).
        test_normal: The cleaned normal test list, likewise.
        removed_train: DDAD training images that a radiologist labelled abnormal.
        removed_test: DDAD normal test images that a radiologist labelled abnormal.
        padding: The all-normal images added to either list.

    """

    train: list[str]
    test_normal: list[str]
    removed_train: list[str]
    removed_test: list[str]
    padding: frozenset[str]


def clean_ddad_split(train: list[str], test_normal: list[str], labels: VinDrLabels) -> DDADCleaning:
    """Replace the DDAD normal images that any radiologist labelled abnormal by other all-normal images.

    The authors' rule: the all-normal training images (every radiologist said ``No finding``) in neither cleaned
    list, sorted by id, pad the training list from the front and the normal test list from the back.

    Raises:
        ValueError: When there are too few such images to pad both lists without overlap.

    """
    healthy = sorted(key for key, normal in labels.normal.items() if normal)
    abnormal = {key for key, normal in labels.normal.items() if not normal}
    kept_train = [key for key in train if key not in abnormal]  # unknown ids are reported by the datamodule
    kept_test = [key for key in test_normal if key not in abnormal]
    missing_train, missing_test = len(train) - len(kept_train), len(test_normal) - len(kept_test)
    used = set(kept_train) | set(kept_test)
    leftover = [key for key in healthy if key not in used]
    if len(leftover) < missing_train + missing_test:
        msg = (
            f"DDAD cleaning needs {missing_train + missing_test} all-normal images of {labels.source} outside the "
            f"DDAD lists to replace the images a radiologist labelled abnormal, but there are {len(leftover)}; "
            "pass ddad_cleaning=False to keep DDAD's lists."
        )
        raise ValueError(msg)
    pad_train, pad_test = leftover[:missing_train], leftover[len(leftover) - missing_test :]
    return DDADCleaning(
        train=kept_train + pad_train,
        test_normal=kept_test + pad_test,
        removed_train=[key for key in train if key in abnormal],
        removed_test=[key for key in test_normal if key in abnormal],
        padding=frozenset(pad_train + pad_test),
    )


class VinDrCXR(CachedRadiographDataModule):
    """VinDr-CXR (Nguyen et al. 2022) with box masks; see :mod:`anomalib_medical.data.vindr_cxr`.

    Args:
        root: Folder with ``train/`` and the label files (PhysioNet or competition layout).
        split: ``"ddad"`` (DDAD's 4,000 / 1,000 + 1,000 split) or ``"physionet"`` (official train/test).
        label_format: ``"auto"``, ``"physionet"`` or ``"competition"``.
        split_file: DDAD JSON file; ``None`` downloads it from ``split_url`` into the cache folder.
        split_url: Where to download the DDAD JSON from.
        split_sha256: Expected SHA-256 of the JSON (default the published file's); ``None`` skips the check.
        ddad_cleaning: Replace the DDAD normal images a radiologist labelled abnormal (Baugh et al.; module
            docstring). Only for ``split="ddad"``.
        test_set: ``"split"`` (the split's test images) or ``"official"`` (the 3,000 official test images, VinDr_ts).
        val_normal: Normal validation images (from DDAD's unlabelled pool, or held out of the official train set).
        val_abnormal: Abnormal validation images, likewise.
        preprocessing: ``"display"`` or ``"baugh"`` (Baugh et al.'s order; module docstring).
        image_size: Size of the cached images, an int for square images or ``(height, width)``.
        apply_window: Apply the DICOM VOI LUT or window when present (``"baugh"``: clip to the window).
        intensity_fallback: Scaling without window: ``"minmax"`` or ``"bit_depth"`` (``"display"`` only).
        histogram_equalisation: Equalise the histogram of each cached image (``"display"`` only; ``"baugh"``
            always equalises).
        cache_dir: Parent folder of the preprocessed caches; default ``<root>_cache`` next to ``root``.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers; also the threads that fill the cache.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        seed: Seed of the validation draw.

    Example:
        >>> datamodule = VinDrCXR(root="./datasets/vindr-cxr/1.0.0")  # doctest: +SKIP
        >>> datamodule.setup()  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/vindr-cxr",
        split: VinDrSplit = "ddad",
        label_format: LabelFormat = "auto",
        split_file: str | Path | None = None,
        split_url: str = DDAD_SPLIT_URL,
        split_sha256: str | None = DDAD_SPLIT_SHA256,
        ddad_cleaning: bool = True,
        test_set: VinDrTestSet = "split",
        val_normal: int = 100,
        val_abnormal: int = 100,
        preprocessing: PreprocessingPreset = "display",
        image_size: int | tuple[int, int] = 256,
        apply_window: bool = True,
        intensity_fallback: IntensityFallback = "minmax",
        histogram_equalisation: bool = False,
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
            preprocessing=make_preprocessing(
                preprocessing, image_size, apply_window, intensity_fallback, histogram_equalisation
            ),
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            seed=seed,
        )
        if split not in {"ddad", "physionet"}:
            msg = f"split must be 'ddad' or 'physionet', got {split!r}."
            raise ValueError(msg)
        if label_format not in {"auto", "physionet", "competition"}:
            msg = f"label_format must be 'auto', 'physionet' or 'competition', got {label_format!r}."
            raise ValueError(msg)
        if test_set not in {"split", "official"}:
            msg = f"test_set must be 'split' or 'official', got {test_set!r}."
            raise ValueError(msg)
        self.split = split
        self.ddad_cleaning = ddad_cleaning
        self.test_set = test_set
        self.label_format = label_format
        self.split_file = Path(split_file) if split_file is not None else None
        self.split_url = split_url
        self.split_sha256 = split_sha256
        self.val_normal = val_normal
        self.val_abnormal = val_abnormal

    def prepare_data(self) -> None:
        """Fetch the DDAD JSON if needed, then preprocess the selected images into the cache."""
        if self.split == "ddad":
            self.ddad_split()
        super().prepare_data()

    def resolved_label_format(self) -> Literal["physionet", "competition"]:
        """Return the label format found under ``root`` (or the one asked for, if its files exist)."""
        physionet = self.root / "annotations" / "image_labels_train.csv"
        competition = self.root / "train.csv"
        if self.label_format == "physionet" or (self.label_format == "auto" and physionet.is_file()):
            return "physionet"
        if self.label_format == "competition" or competition.is_file():
            return "competition"
        msg = (
            f"VinDr-CXR labels not found under {self.root}: expected {physionet} (PhysioNet layout) or {competition} "
            "(VinBigData competition layout)."
        )
        raise FileNotFoundError(msg)

    def labels(self, subset: Literal["train", "test"]) -> VinDrLabels:
        """Read the labels and boxes of the official ``train`` or ``test`` images."""
        if self.resolved_label_format() == "competition":
            if subset == "test":
                msg = "The VinBigData competition copy has no test labels: use split='ddad' or the PhysioNet layout."
                raise ValueError(msg)
            return VinDrLabels.competition(self.root / "train.csv")
        folder = self.root / "annotations"
        return VinDrLabels.physionet(folder / f"image_labels_{subset}.csv", folder / f"annotations_{subset}.csv")

    def ddad_split(self) -> dict[str, list[str]]:
        """Read (downloading if needed) and verify the DDAD JSON; return its id lists without ``.png``.

        Returns:
            ``{"train": ..., "unlabeled_normal": ..., "unlabeled_abnormal": ..., "test_normal": ...,
            "test_abnormal": ...}``.

        Raises:
            FileNotFoundError: When ``split_file`` is given but does not exist.
            ChecksumError: When the file's SHA-256 differs from ``split_sha256`` (naming both digests; a file this
                class downloaded is renamed ``<name>.rejected``, a ``split_file`` is left in place).
            ValueError: When the JSON does not have DDAD's structure.

        """
        path = self.split_file or self.cache_dir / "ddad_vin_data.json"
        if not path.is_file():
            if self.split_file is not None:
                msg = f"DDAD split file {path} does not exist (it is published as {self.split_url})."
                raise FileNotFoundError(msg)
            download_file(self.split_url, path)  # checked below, and kept for inspection if it differs
        if self.split_sha256 is not None and self.split_file is not None:
            verify_sha256(path, self.split_sha256)
        elif self.split_sha256 is not None:
            expected, actual = normalise_sha256(self.split_sha256), sha256sum(path)
            if actual != expected:
                rejected = path.with_name(f"{path.name}.rejected")
                os.replace(path, rejected)
                msg = (
                    f"SHA-256 of the DDAD split downloaded from {self.split_url} is {actual}, expected {expected}; "
                    f"the file was moved to {rejected} (check it, then pass it as split_file with its split_sha256)."
                )
                raise ChecksumError(msg)
        try:
            content = json.loads(path.read_text())
            lists = {
                "train": content["train"]["0"],
                "unlabeled_normal": content["train"]["unlabeled"]["0"],
                "unlabeled_abnormal": content["train"]["unlabeled"]["1"],
                "test_normal": content["test"]["0"],
                "test_abnormal": content["test"]["1"],
            }
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            msg = f"{path}: not a DDAD split file (expected train/0, train/unlabeled/{{0,1}}, test/{{0,1}}): {error!r}."
            raise ValueError(msg) from error
        return {name: [Path(str(name_)).stem for name_ in ids] for name, ids in lists.items()}

    def select(self) -> list[SelectedImage]:
        """Choose the images of every split (see the module docstring)."""
        train_labels = self.labels("train")
        chosen = self._ddad_choice(train_labels) if self.split == "ddad" else self._official_choice(train_labels)
        if self.split == "physionet" or self.test_set == "official":
            test_labels = self.labels("test")
            chosen = [choice for choice in chosen if choice[1] != Split.TEST]
            chosen += [
                (sorted(k for k, n in test_labels.normal.items() if n), Split.TEST, 0, test_labels),
                (sorted(k for k, n in test_labels.normal.items() if not n), Split.TEST, 1, test_labels),
            ]
        folders: dict[str, dict[str, Path]] = {}
        selected = []
        for image_ids, split, label, labels in chosen:
            folder = "test" if labels is not train_labels else "train"
            if folder not in folders:
                folders[folder] = _dicom_files(self.root / folder)
            files = folders[folder]
            for image_id in image_ids:
                if image_id not in labels.normal:
                    msg = f"Image {image_id!r} of the {split.value} split is not in {labels.source}."
                    raise ValueError(msg)
                source = files.get(image_id, self.root / folder / f"{image_id}.dicom")
                boxes = tuple(labels.boxes.get(image_id, ())) if label == 1 else None
                selected.append(SelectedImage(CacheEntry(image_id, source, boxes), split, label, labels.source))
        return selected

    def _ddad_choice(self, train_labels: VinDrLabels) -> list[tuple[list[str], Split, int, VinDrLabels]]:
        """Choose the DDAD split (cleaned unless ``ddad_cleaning=False``), validation from its unlabelled pool."""
        rng = self.rng()
        ids = self.ddad_split()
        train, test_normal = ids["train"], ids["test_normal"]
        pool_normal, pool_abnormal = ids["unlabeled_normal"], ids["unlabeled_abnormal"]
        if self.ddad_cleaning:
            cleaning = clean_ddad_split(train, test_normal, train_labels)
            train, test_normal = cleaning.train, cleaning.test_normal
            # validation images as labelled by the radiologists, not among the padding (unknown ids: an error below)
            known = train_labels.normal
            pool_normal = [k for k in pool_normal if known.get(k, True) and k not in cleaning.padding]
            pool_abnormal = [k for k in pool_abnormal if not known.get(k, False)]
            logger.info(
                "DDAD cleaning (Baugh et al.): replaced %d of %d training and %d of %d normal test images that a "
                "radiologist labelled abnormal in %s (e.g. %s) by other all-normal images; ddad_cleaning=False keeps "
                "DDAD's lists.",
                len(cleaning.removed_train),
                len(ids["train"]),
                len(cleaning.removed_test),
                len(ids["test_normal"]),
                train_labels.source,
                ", ".join((cleaning.removed_train + cleaning.removed_test)[:3]) or "none",
            )
        val_normal = draw(pool_normal, self.val_normal, rng, "normal validation images (DDAD pool)")
        val_abnormal = draw(pool_abnormal, self.val_abnormal, rng, "abnormal validation images (DDAD pool)")
        chosen = [
            (train, Split.TRAIN, 0, train_labels),
            (val_normal, Split.VAL, 0, train_labels),
            (val_abnormal, Split.VAL, 1, train_labels),
            (test_normal, Split.TEST, 0, train_labels),
            (ids["test_abnormal"], Split.TEST, 1, train_labels),
        ]
        self._check_ddad_labels(chosen)
        return chosen

    def _official_choice(self, train_labels: VinDrLabels) -> list[tuple[list[str], Split, int, VinDrLabels]]:
        """Choose the official training images less the validation images (:meth:`select` adds the test split)."""
        rng = self.rng()
        normal = [key for key, is_normal in train_labels.normal.items() if is_normal]
        abnormal = [key for key, is_normal in train_labels.normal.items() if not is_normal]
        val_normal = draw(normal, self.val_normal, rng, "normal validation images from the training set")
        val_abnormal = draw(abnormal, self.val_abnormal, rng, "abnormal validation images from the training set")
        return [
            (sorted(set(normal) - set(val_normal)), Split.TRAIN, 0, train_labels),
            (val_normal, Split.VAL, 0, train_labels),
            (val_abnormal, Split.VAL, 1, train_labels),
        ]

    @staticmethod
    def _check_ddad_labels(chosen: list[tuple[list[str], Split, int, VinDrLabels]]) -> None:
        """Log how many DDAD images the label files would label differently."""
        for image_ids, split, label, labels in chosen:
            differ = [key for key in image_ids if key in labels.normal and labels.normal[key] != (label == 0)]
            if differ:
                logger.warning(
                    "%d %s image(s) of the DDAD %s split are labelled %s in %s (e.g. %s); the DDAD label is used.",
                    len(differ),
                    "normal" if label == 0 else "abnormal",
                    split.value,
                    "abnormal" if label == 0 else "normal",
                    labels.source,
                    differ[0],
                )


def _dicom_files(folder: Path) -> dict[str, Path]:
    """Map image id -> DICOM file (``.dicom`` or ``.dcm``) of a folder; empty if the folder does not exist."""
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.iterdir()) if path.suffix.lower() in DICOM_SUFFIXES}
