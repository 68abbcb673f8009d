"""CheXpert chest radiographs (Irvin et al. 2019) with SQUID's one-class split.

Data:
    Irvin, J., Rajpurkar, P., et al. (2019). *CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels
    and Expert Comparison*. AAAI 33(01), 590-597. Distributed by the Stanford AIMI Center after registration
    (Stanford University School of Medicine CheXpert Dataset Research Use Agreement: non-commercial research
    use, no redistribution), as ``CheXpert-v1.0`` (full resolution) or ``CheXpert-v1.0-small`` (about 390 x
    320 pixels). ``root`` is the extracted folder::

        root/                                   e.g. CheXpert-v1.0-small/
            train.csv                           223,414 rows, one per image
            valid.csv                           234 rows (radiologist consensus, no uncertain labels)
            train/patient00001/study1/view1_frontal.jpg
            valid/patient64541/study1/view1_frontal.jpg

    The CSV columns are ``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding``, the 13 findings listed in
    :data:`CHEXPERT_FINDINGS` and ``Support Devices``, with values 1 (positive), 0 (negative), -1 (uncertain)
    or empty (not mentioned). ``Path`` starts with the release folder name (``CheXpert-v1.0-small/train/...``);
    it is resolved against ``root`` whatever the folder is called.

Labels:
    - normal: ``No Finding`` == 1,
    - abnormal: any of :data:`SQUID_FINDINGS` (the 12 pathologies SQUID uses; ``Support Devices`` is not a
      pathology) == 1,
    - uncertain labels (-1) of those findings follow ``uncertain``: ``"ignore"`` (default) treats them as not
      mentioned, so an image whose only positive evidence is uncertain is neither normal nor abnormal and is not
      used; ``"abnormal"`` counts them as positive (U-Ones); ``"normal"`` counts them as negative (U-Zeros), so an
      image whose findings are all negative or uncertain, with at least one uncertain, is also normal.
    - views: frontal images only (``frontal_only``); ``pa_only`` keeps posterior-anterior images only, as in
      the SQUID authors' ``*_256_pa`` folders.

Split (SQUID, Xiang et al., CVPR 2023, Table 1: train 4,999 normal; test 250 normal + 250 abnormal):
    - test: ``test_normal`` normal and ``test_abnormal`` abnormal images drawn (seeded) from ``train.csv``,
    - train: ``train_normal`` normal images drawn from the rest of ``train.csv``, excluding every patient that has
      an image in the test split (patient-disjoint); ``None`` takes them all,
    - val: every normal and abnormal image of the official ``valid.csv`` that passes the view filters,
    - contamination ("true" unsupervised training, as SimSID's authors train on CheXpert with 10 % abnormal
      images, their ``positive_ratio`` 0.9): with ``train_abnormal_fraction`` f > 0 abnormal images of
      ``train.csv`` make up that fraction of the training split of ``n`` normal images. ``contamination="add"``
      (default) adds ``round(f * n / (1 - f))`` of them to the ``n`` normal ones (4,999 + 555 at 10 %);
      ``"replace"`` (the SimSID authors' rule) replaces ``ceil(f * n)`` of the ``n`` normal images by abnormal ones,
      so the split keeps its size (4,499 + 500). They pass the same view filters and label rules, are drawn
      (seeded) after every other draw from the images of patients without a test image (never from
      ``valid.csv``), are labelled normal (``label_index`` 0: the model is told nothing) and are marked by the
      ``contaminant`` column; the normal images replaced are drawn (seeded) last. Every other image of every split
      is the one chosen without contamination.

    The authors distribute their test images (``our_test_256_pa``) but not their ids, so our draw has the same
    sizes and origin but not the same images. A pool smaller than a requested size raises an error naming both
    numbers; nothing is shrunk silently.

Images are preprocessed once (resized to ``image_size``, optionally histogram-equalised) into a cache next to
``root``; see :mod:`anomalib_medical.data.utils.cache`. There are no pixel annotations: the task is
classification.
"""

from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd
from anomalib.data.utils import Split
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.base import CachedRadiographDataModule, SelectedImage
from anomalib_medical.data.utils.baugh import PreprocessingPreset, make_preprocessing
from anomalib_medical.data.utils.cache import CacheEntry
from anomalib_medical.data.utils.splits import contaminant_count, draw, read_label_csv, replaced_count

UncertainRule = Literal["ignore", "normal", "abnormal"]
Contamination = Literal["add", "replace"]

CHEXPERT_FINDINGS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 13 observations of the CheXpert label files besides ``No Finding``."""

SQUID_FINDINGS = CHEXPERT_FINDINGS[:-1]
"""Findings that make an image abnormal: every observation but ``Support Devices``."""

CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", *CHEXPERT_FINDINGS)
"""Columns of ``train.csv`` and ``valid.csv``."""


def chexpert_labels(table: pd.DataFrame, uncertain: UncertainRule = "ignore") -> pd.Series:
    """Label each row of a CheXpert table: 0 normal, 1 abnormal, -1 neither (not used).

    Args:
        table: Rows of ``train.csv`` or ``valid.csv``.
        uncertain: Rule for uncertain (-1) findings (see the module docstring).

    Returns:
        Label per row, indexed like ``table``.

    Raises:
        ValueError: For an unknown rule, or a label value other than 1, 0, -1 or empty.

    """
    if uncertain not in {"ignore", "normal", "abnormal"}:
        msg = f"uncertain must be 'ignore', 'normal' or 'abnormal', got {uncertain!r}."
        raise ValueError(msg)
    values = table[["No Finding", *SQUID_FINDINGS]].apply(pd.to_numeric, errors="coerce")
    invalid = (values.notna() & ~values.isin([1, 0, -1])) | (table[values.columns].notna() & values.isna())
    if invalid.any(axis=None):
        row, column = np.argwhere(invalid.to_numpy())[0]
        msg = f"line {row + 2}: {values.columns[column]!r} is '{table.iloc[row][values.columns[column]]}'; "
        msg += "expected 1, 0, -1 or empty."
        raise ValueError(msg)
    findings = values[list(SQUID_FINDINGS)]
    positive = (findings == 1).any(axis=1)
    uncertain_any = (findings == -1).any(axis=1)
    no_finding = values["No Finding"] == 1
    if uncertain == "abnormal":
        positive |= uncertain_any
        no_finding &= ~uncertain_any
    elif uncertain == "normal":
        no_finding |= uncertain_any & ~positive
    labels = pd.Series(-1, index=table.index)
    labels[no_finding & ~positive] = 0
    labels[positive] = 1
    return labels


class CheXpert(CachedRadiographDataModule):
    """CheXpert (Irvin et al. 2019) with SQUID's one-class split; see :mod:`anomalib_medical.data.chexpert`.

    Args:
        root: The extracted ``CheXpert-v1.0`` or ``CheXpert-v1.0-small`` folder (with ``train.csv``).
        train_normal: Normal training images (SQUID: 4,999); ``None`` takes all that remain after the test draw.
        test_normal: Normal test images drawn from ``train.csv`` (SQUID: 250).
        test_abnormal: Abnormal test images drawn from ``train.csv`` (SQUID: 250).
        train_abnormal_fraction: Fraction of the training split made of abnormal images of ``train.csv`` from
            patients without a test image, labelled normal (contamination for "true" unsupervised training; SimSID's
            authors use 0.1). The ``contaminant`` column of ``train_data.samples`` marks them. Must be in
            ``[0, 1)``; default ``0.0``.
        contamination: How the abnormal images enter the training split: ``"add"`` them to the ``train_normal``
            normal images, or ``"replace"`` as many normal images (the SimSID authors' rule: 4,499 + 500).
        uncertain: Rule for uncertain labels: ``"ignore"``, ``"normal"`` or ``"abnormal"``.
        frontal_only: Keep frontal views only.
        pa_only: Keep posterior-anterior views only (default: the SQUID authors' `*_256_pa` setting).
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
        seed: Seed of the split and contamination draws.

    Example:
        >>> datamodule = CheXpert(root="./datasets/CheXpert-v1.0-small")  # doctest: +SKIP
        >>> datamodule.setup()  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/CheXpert-v1.0-small",
        train_normal: int | None = 4999,
        test_normal: int = 250,
        test_abnormal: int = 250,
        train_abnormal_fraction: float = 0.0,
        contamination: Contamination = "add",
        uncertain: UncertainRule = "ignore",
        frontal_only: bool = True,
        pa_only: bool = True,
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
        if uncertain not in {"ignore", "normal", "abnormal"}:
            msg = f"uncertain must be 'ignore', 'normal' or 'abnormal', got {uncertain!r}."
            raise ValueError(msg)
        contaminant_count(train_abnormal_fraction, 0)  # checks the fraction before any data is read
        if contamination not in {"add", "replace"}:
            msg = f"contamination must be 'add' or 'replace', got {contamination!r}."
            raise ValueError(msg)
        self.contamination = contamination
        self.train_normal = train_normal
        self.test_normal = test_normal
        self.test_abnormal = test_abnormal
        self.train_abnormal_fraction = train_abnormal_fraction
        self.uncertain = uncertain
        self.frontal_only = frontal_only
        self.pa_only = pa_only
        self._contaminants: list[str] = []

    def select(self) -> list[SelectedImage]:
        """Choose the images of every split from ``train.csv`` and ``valid.csv`` (see the module docstring)."""
        train = self._read("train.csv")
        valid = self._read("valid.csv")
        rng = self.rng()
        normal, abnormal = train.index[train.label == 0], train.index[train.label == 1]
        test_normal = draw(normal, self.test_normal, rng, f"normal test images from train.csv ({self._what})")
        test_abnormal = draw(abnormal, self.test_abnormal, rng, f"abnormal test images from train.csv ({self._what})")
        test_patients = set(train.loc[test_normal + test_abnormal, "patient"])
        outside_test = ~train.patient.isin(test_patients)
        not_test = f"{self._what}, not from the {len(test_patients)} test patients"
        train_pool = train.index[outside_test & (train.label == 0)]
        train_normal = draw(train_pool, self.train_normal, rng, f"normal training images ({not_test})")
        contaminant_pool = train.index[outside_test & (train.label == 1)]
        fraction = self.train_abnormal_fraction
        replace = self.contamination == "replace"
        count = (replaced_count if replace else contaminant_count)(fraction, len(train_normal))
        what = f"abnormal training images for train_abnormal_fraction={fraction} ({not_test})"
        self._contaminants = draw(contaminant_pool, count, rng, what)
        if replace:
            replaced = set(draw(train_normal, count, rng, "normal training images to replace"))
            train_normal = [key for key in train_normal if key not in replaced]
        chosen = [
            *((key, Split.TRAIN, 0, train) for key in train_normal + self._contaminants),
            *((key, Split.TEST, 0, train) for key in test_normal),
            *((key, Split.TEST, 1, train) for key in test_abnormal),
            *((key, Split.VAL, int(valid.at[key, "label"]), valid) for key in valid.index[valid.label >= 0]),
        ]
        return [
            SelectedImage(CacheEntry(key, table.at[key, "source"]), split, label, table.attrs["path"])
            for key, split, label, table in chosen
        ]

    def samples(self) -> pd.DataFrame:
        """Return the base class's samples table with a ``contaminant`` column (the abnormal training images)."""
        samples = super().samples()
        samples["contaminant"] = samples.image_id.isin(self._contaminants)
        return samples

    @property
    def _what(self) -> str:
        """The filters in words, for error messages."""
        views = "PA views" if self.pa_only else "frontal views" if self.frontal_only else "all views"
        return f"{views}, uncertain={self.uncertain!r}"

    def _read(self, name: str) -> pd.DataFrame:
        """Read a label file, filter the views and label the rows; indexed by the image's relative path."""
        path = self.root / name
        table = read_label_csv(path, CHEXPERT_COLUMNS, f"CheXpert {name}")
        try:
            table["label"] = chexpert_labels(table, self.uncertain)
        except ValueError as error:
            msg = f"{path}, {error}"
            raise ValueError(msg) from None
        if self.frontal_only or self.pa_only:
            table = table[table["Frontal/Lateral"].astype(str).str.strip() == "Frontal"]
        if self.pa_only:
            table = table[table["AP/PA"].astype(str).str.strip() == "PA"]
        table = table[table.label >= 0].copy()
        relative = [_relative_path(value, path) for value in table["Path"]]
        table.index = pd.Index([str(part.with_suffix("")) for part in relative])
        if table.index.has_duplicates:
            msg = f"{path}: image {table.index[table.index.duplicated()][0]!r} is listed twice."
            raise ValueError(msg)
        table["source"] = [self.root / part for part in relative]
        table["patient"] = [part.parts[1] for part in relative]
        table.attrs["path"] = path
        return table


def _relative_path(value: object, csv_path: Path) -> PurePosixPath:
    """``train/patientX/studyY/viewZ.jpg`` from a ``Path`` entry, with or without the release folder in front."""
    parts = PurePosixPath(str(value).replace("\\", "/")).parts
    if parts and parts[0] not in {"train", "valid", "test"}:
        parts = parts[1:]
    if len(parts) < 4 or ".." in parts:
        msg = f"{csv_path}: unexpected image path {value!r}; expected '<release>/train/<patient>/<study>/<view>.jpg'."
        raise ValueError(msg)
    return PurePosixPath(*parts)
