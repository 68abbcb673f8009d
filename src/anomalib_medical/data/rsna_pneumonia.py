"""RSNA Pneumonia Detection Challenge radiographs (2018) with the one-class split of DDAD / MedIAnomaly, box masks.

Data:
    Shih, G., Wu, C. C., Halabi, S. S., et al. (2019). *Augmenting the National Institutes of Health Chest
    Radiograph Dataset with Expert Annotations of Possible Pneumonia*. Radiology: Artificial Intelligence 1(1).
    The challenge data (RSNA Pneumonia Detection Challenge on Kaggle, competition rules: non-commercial research
    and education; images from the NIH ChestX-ray14 set, CC0) after accepting the rules, stage 2::

        root/
            stage_2_train_images/<patientId>.dcm    26,684 DICOMs (1024 x 1024, 8-bit, one per patient)
            stage_2_train_labels.csv                patientId, x, y, width, height, Target (one row per box;
                                                    Target 0 rows have no box)
            stage_2_detailed_class_info.csv         patientId, class: "Normal", "Lung Opacity" or
                                                    "No Lung Opacity / Not Normal"

Labels and split (as in DDAD, Cai et al. MICCAI 2022, and MedIAnomaly, Cai et al. 2024):
    normal = class ``Normal`` (8,851 images), abnormal = class ``Lung Opacity`` (6,012); ``No Lung Opacity / Not
    Normal`` is not used. Seeded draws: test = ``test_normal`` + ``test_abnormal`` (1,000 + 1,000); val =
    ``val_normal`` + ``val_abnormal`` (100 + 100; the papers define none, anomalib fits its threshold here); train
    = ``train_normal`` (3,851) of the remaining normal images (``None``: all of them). The papers' own id lists are
    not used, so the images differ from theirs, the sizes do not. The mask of an abnormal image is the union of its
    boxes (``Target`` == 1 rows), drawn at the cached resolution with the coordinates scaled like the image.

Preprocessing (once, into the cache; :mod:`anomalib_medical.data.utils.cache`): DICOM display pipeline
(:mod:`anomalib_medical.data.utils.dicom`), resize to ``image_size``, optional histogram equalisation.
"""

from pathlib import Path

import pandas as pd
from anomalib.data.utils import Split
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.base import CachedRadiographDataModule, SelectedImage
from anomalib_medical.data.utils.baugh import PreprocessingPreset, make_preprocessing
from anomalib_medical.data.utils.boxes import boxes_by_image
from anomalib_medical.data.utils.cache import CacheEntry
from anomalib_medical.data.utils.dicom import IntensityFallback
from anomalib_medical.data.utils.splits import draw_disjoint, read_label_csv

RSNA_CLASSES = ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal")
"""Values of the ``class`` column of ``stage_2_detailed_class_info.csv``."""

LABELS_FILE = "stage_2_train_labels.csv"
CLASSES_FILE = "stage_2_detailed_class_info.csv"
IMAGES_FOLDER = "stage_2_train_images"


class RSNAPneumonia(CachedRadiographDataModule):
    """RSNA Pneumonia Detection Challenge with box masks; see :mod:`anomalib_medical.data.rsna_pneumonia`.

    Args:
        root: Folder with ``stage_2_train_images/`` and the two stage-2 CSV files.
        train_normal: Normal training images (DDAD: 3,851); ``None`` takes all that remain.
        val_normal: Normal validation images.
        val_abnormal: Lung-opacity validation images.
        test_normal: Normal test images (DDAD: 1,000).
        test_abnormal: Lung-opacity test images (DDAD: 1,000).
        image_size: Size of the cached images, an int for square images or ``(height, width)``.
        apply_window: Apply the DICOM VOI LUT or window when present.
        intensity_fallback: Scaling without window: ``"minmax"`` or ``"bit_depth"``.
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
        seed: Seed of the split draws.

    Example:
        >>> datamodule = RSNAPneumonia(root="./datasets/rsna-pneumonia-detection-challenge")  # doctest: +SKIP
        >>> datamodule.setup()  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/rsna-pneumonia-detection-challenge",
        train_normal: int | None = 3851,
        val_normal: int = 100,
        val_abnormal: int = 100,
        test_normal: int = 1000,
        test_abnormal: int = 1000,
        image_size: int | tuple[int, int] = 256,
        apply_window: bool = True,
        intensity_fallback: IntensityFallback = "minmax",
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
        self.train_normal = train_normal
        self.val_normal = val_normal
        self.val_abnormal = val_abnormal
        self.test_normal = test_normal
        self.test_abnormal = test_abnormal

    def classes(self, labels: pd.DataFrame) -> pd.Series:
        """Read the class of every patient from ``stage_2_detailed_class_info.csv``, checked against the labels.

        Args:
            labels: The table of ``stage_2_train_labels.csv`` (see :meth:`labels`).

        Returns:
            ``class`` indexed by ``patientId``.

        Raises:
            FileNotFoundError: When a CSV file is missing.
            ValueError: For an unknown layout or class, a patient with two classes, or classes that contradict
                the ``Target`` column of ``stage_2_train_labels.csv``.

        """
        path = self.root / CLASSES_FILE
        table = read_label_csv(path, ("patientId", "class"), f"RSNA {CLASSES_FILE}").drop_duplicates()
        unknown = table[~table["class"].isin(RSNA_CLASSES)]
        if len(unknown):
            msg = f"{path}: unknown class {unknown['class'].iloc[0]!r} (expected one of {list(RSNA_CLASSES)})."
            raise ValueError(msg)
        twice = table["patientId"][table["patientId"].duplicated()]
        if len(twice):
            msg = f"{path}: patient {twice.iloc[0]!r} has more than one class."
            raise ValueError(msg)
        classes = table.set_index("patientId")["class"]
        targets = labels.groupby("patientId")["Target"].max()
        if set(targets.index) != set(classes.index):
            patient = sorted(set(targets.index) ^ set(classes.index))[0]
            msg = f"Patient {patient!r} is in only one of {path} and {self.root / LABELS_FILE}."
            raise ValueError(msg)
        contradicting = classes.index[(classes == "Lung Opacity") != (targets.reindex(classes.index) == 1)]
        if len(contradicting):
            msg = f"Patient {contradicting[0]!r}: class {classes[contradicting[0]]!r} in {path} contradicts Target."
            raise ValueError(msg)
        return classes

    def select(self) -> list[SelectedImage]:
        """Choose the images of every split (see the module docstring)."""
        labels = self.labels()
        classes = self.classes(labels)
        boxes = boxes_by_image(labels, "patientId", ("x", "y", "width", "height"), self.root / LABELS_FILE, True)
        rng = self.rng()
        test_normal, val_normal, train_normal = draw_disjoint(
            classes.index[classes == "Normal"],
            [
                ("normal test", self.test_normal),
                ("normal validation", self.val_normal),
                ("normal training", self.train_normal),
            ],
            rng,
        )
        test_abnormal, val_abnormal = draw_disjoint(
            classes.index[classes == "Lung Opacity"],
            [("lung-opacity test", self.test_abnormal), ("lung-opacity validation", self.val_abnormal)],
            rng,
        )
        chosen = [
            (train_normal, Split.TRAIN, 0),
            (val_normal, Split.VAL, 0),
            (val_abnormal, Split.VAL, 1),
            (test_normal, Split.TEST, 0),
            (test_abnormal, Split.TEST, 1),
        ]
        return [
            SelectedImage(
                CacheEntry(
                    patient, self.root / IMAGES_FOLDER / f"{patient}.dcm", tuple(boxes[patient]) if label else None
                ),
                split,
                label,
                self.root / LABELS_FILE,
            )
            for patients, split, label in chosen
            for patient in patients
        ]

    def labels(self) -> pd.DataFrame:
        """Read ``stage_2_train_labels.csv``, checking that ``Target`` is 0 or 1 and matches the boxes."""
        path = self.root / LABELS_FILE
        table = read_label_csv(path, ("patientId", "x", "y", "width", "height", "Target"), f"RSNA {LABELS_FILE}")
        has_box = table[["x", "y", "width", "height"]].notna().all(axis=1)
        wrong = ~table["Target"].isin([0, 1]) | (has_box != (table["Target"] == 1))
        if wrong.any():
            row = int(wrong.to_numpy().nonzero()[0][0])
            msg = f"{path}, line {row + 2}: Target {table['Target'].iloc[row]} does not match the box (Target 1 "
            msg += "rows have x, y, width, height; Target 0 rows have none)."
            raise ValueError(msg)
        return table
