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
      cache folder; either way its SHA-256 must be :data:`DDAD_SPLIT_SHA256`. Labels are taken from the JSON; a
      disagreement with the label files is logged.
    - ``split="physionet"``: the official split: train = the normal training images less ``val_normal`` held out for
      validation with ``val_abnormal`` abnormal training images; test = the 3,000 official test images.

Preprocessing (once, into the cache; :mod:`anomalib_medical.data.utils.cache`): DICOM display pipeline (modality
LUT, VOI LUT or window, ``MONOCHROME1`` inverted; :mod:`anomalib_medical.data.utils.dicom`), resize to
``image_size``, optional histogram equalisation. Baugh et al.'s preprocessing is ``apply_window=True,
histogram_equalisation=True, image_size=256`` (their scaling to [-1, 1] belongs to the model's pre-processor).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from anomalib.data.utils import Split
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.base import CachedRadiographDataModule, SelectedImage
from anomalib_medical.data.utils.boxes import Box, boxes_by_image
from anomalib_medical.data.utils.cache import CacheEntry, Preprocessing
from anomalib_medical.data.utils.dicom import IntensityFallback
from anomalib_medical.data.utils.download import download_file, verify_sha256
from anomalib_medical.data.utils.reader import DICOM_SUFFIXES
from anomalib_medical.data.utils.splits import draw, read_label_csv

logger = logging.getLogger(__name__)

LabelFormat = Literal["auto", "physionet", "competition"]
VinDrSplit = Literal["ddad", "physionet"]

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


class VinDrCXR(CachedRadiographDataModule):
    """VinDr-CXR (Nguyen et al. 2022) with box masks; see :mod:`anomalib_medical.data.vindr_cxr`.

    Args:
        root: Folder with ``train/`` and the label files (PhysioNet or competition layout).
        split: ``"ddad"`` (DDAD's 4,000 / 1,000 + 1,000 split) or ``"physionet"`` (official train/test).
        label_format: ``"auto"``, ``"physionet"`` or ``"competition"``.
        split_file: DDAD JSON file; ``None`` downloads it from ``split_url`` into the cache folder.
        split_url: Where to download the DDAD JSON from.
        split_sha256: Expected SHA-256 of the JSON (default the published file's); ``None`` skips the check.
        val_normal: Normal validation images (from DDAD's unlabelled pool, or held out of the official train set).
        val_abnormal: Abnormal validation images, likewise.
        image_size: Size of the cached images, an int for square images or ``(height, width)``.
        apply_window: Apply the DICOM VOI LUT or window when present.
        intensity_fallback: Scaling without window: ``"minmax"`` or ``"bit_depth"``.
        histogram_equalisation: Equalise the histogram of each cached image (Baugh et al.).
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
        val_normal: int = 100,
        val_abnormal: int = 100,
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
        preprocessing = Preprocessing(image_size, apply_window, intensity_fallback, histogram_equalisation)
        super().__init__(
            root=root,
            cache_dir=cache_dir,
            preprocessing=preprocessing,
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
        self.split = split
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
            ChecksumError: When the file's SHA-256 differs from ``split_sha256``.
            ValueError: When the JSON does not have DDAD's structure.

        """
        path = self.split_file or self.cache_dir / "ddad_vin_data.json"
        if not path.is_file():
            if self.split_file is not None:
                msg = f"DDAD split file {path} does not exist (it is published as {self.split_url})."
                raise FileNotFoundError(msg)
            download_file(self.split_url, path, sha256=self.split_sha256)
        if self.split_sha256 is not None:
            verify_sha256(path, self.split_sha256, remove_on_mismatch=self.split_file is None)
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
        rng = self.rng()
        train_labels = self.labels("train")
        if self.split == "ddad":
            ids = self.ddad_split()
            val_normal = draw(ids["unlabeled_normal"], self.val_normal, rng, "normal validation images (DDAD pool)")
            val_abnormal = draw(ids["unlabeled_abnormal"], self.val_abnormal, rng, "abnormal validation images")
            chosen = [
                (ids["train"], Split.TRAIN, 0, train_labels),
                (val_normal, Split.VAL, 0, train_labels),
                (val_abnormal, Split.VAL, 1, train_labels),
                (ids["test_normal"], Split.TEST, 0, train_labels),
                (ids["test_abnormal"], Split.TEST, 1, train_labels),
            ]
            self._check_ddad_labels(chosen)
        else:
            test_labels = self.labels("test")
            normal = [key for key, is_normal in train_labels.normal.items() if is_normal]
            abnormal = [key for key, is_normal in train_labels.normal.items() if not is_normal]
            val_normal = draw(normal, self.val_normal, rng, "normal validation images from the training set")
            val_abnormal = draw(abnormal, self.val_abnormal, rng, "abnormal validation images from the training set")
            chosen = [
                (sorted(set(normal) - set(val_normal)), Split.TRAIN, 0, train_labels),
                (val_normal, Split.VAL, 0, train_labels),
                (val_abnormal, Split.VAL, 1, train_labels),
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
