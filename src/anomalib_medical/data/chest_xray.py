"""ZhangLab paediatric pneumonia chest X-rays (Kermany et al. 2018) with SQUID's one-class split.

Data:
    Kermany, D., Zhang, K., Goldbaum, M. (2018). *Labeled Optical Coherence Tomography (OCT) and Chest X-Ray
    Images for Classification*. Mendeley Data, v2, doi:10.17632/rscbjbr9sj.2, licence CC BY 4.0; images
    described in Kermany et al., *Cell* 172(5), 2018. Greyscale (a few RGB) JPEGs of varying size of children
    aged one to five from Guangzhou Women and Children's Medical Center, in the archive ``ChestXRay2017.zip``::

        chest_xray/
            train/{NORMAL,PNEUMONIA}/*.jpeg    1,349 normal / 3,883 pneumonia (official training set)
            test/{NORMAL,PNEUMONIA}/*.jpeg       234 normal /   390 pneumonia (official test set)

    The Kaggle copy (``paultimothymooney/chest-xray-pneumonia``) moves 8 + 8 training images into ``val/``;
    both layouts are accepted and ``val/`` is counted as training data. ``root`` may hold the archive, the
    extracted ``chest_xray`` folder, or be the folder that directly contains ``train/`` and ``test/``.

Split (as in SQUID, Xiang et al., CVPR 2023, and SimSID):
    - train: the normal images of the official training set (incl. ``val/``) minus the validation images
      (1,249 with the defaults); pneumonia training images are not used (one-class training),
    - val: ``val_normal`` normal + ``val_abnormal`` pneumonia images (100 + 100) held out of the official
      training set, drawn with ``random.Random`` seeded by ``seed`` from the images sorted by relative path, so
      the choice depends only on the file names, the seed and the sizes (each class has its own stream, so
      changing one size does not change the other class's choice); anomalib's adaptive threshold is fitted here,
    - test: the official test set (234 normal / 390 pneumonia).

    Contamination ("true" unsupervised training, as in SQUID's and SimSID's robustness studies):
    ``train_abnormal_fraction`` > 0 adds pneumonia images of the official training set that are not in the
    validation set to the training split, so that they make up that fraction of it (``round(f * n / (1 - f))``
    images for ``n`` normal training images; a seeded draw with its own stream). They are labelled normal
    (``label_index`` 0: the model is told nothing) and marked by the ``contaminant`` column; the test set is the
    official test folder and the validation set is drawn first, so neither overlaps them.

    The SQUID authors distribute their copy of this split through a Google Drive link in their repository
    (``tiangexiang/SQUID``): images pre-resized to 256 x 256 in per-split ``normal_256`` / ``pneumonia_256``
    folders; which training images went into their validation set is recorded only in that archive. Our
    validation set has the same size and origin but is a seeded draw, so it is not image-for-image theirs;
    train and test coincide with theirs up to those 200 held-out images. Images are read at full size; the
    model's pre-processor resizes them (the authors' loader resizes to 256 x 256 without keeping the aspect).

No pixel annotations exist, so the task is classification (``gt_mask`` is ``None``, as with anomalib's ``Folder``
without ``mask_dir``). Images are returned as 3-channel float tensors in [0, 1], read at their full depth (8 or 16
bit) by :func:`~anomalib_medical.data.utils.reader.read_image_tensor`, grey levels replicated over the channels.

Download and checks:
    :meth:`ChestXray.prepare_data` downloads ``ChestXRay2017.zip`` from Mendeley Data when ``root`` holds neither
    the archive nor the extracted folder (``download=True``), through a ``.part`` file; verifies the SHA-256 when
    one is given (``sha256`` argument; :data:`CHEST_XRAY_SHA256` is pinned once a release has verified a download,
    Mendeley publishes none); extracts safely into a hidden staging folder; checks the folders and image counts
    (``expected_counts``, default the official ones; ``None`` accepts a trimmed copy) and only then moves
    ``chest_xray`` into place. Downloaded data with the wrong checksum is discarded, and a downloaded archive that
    fails to extract or verify is removed; an archive placed by hand is never deleted: a wrong checksum raises an
    error naming the file and both digests. Without network the download fails within ``timeout`` seconds and the
    error says where to put the archive or the folder.

    Several processes may call ``prepare_data`` on the same ``root`` at once (Lightning's default
    ``prepare_data_per_node=True`` with ``root`` on shared storage): they take turns on the lock file
    ``root/chest_xray.lock``; the first downloads and extracts, the others wait and then use its result. Partial
    downloads and staging folders found while holding the lock were left by killed runs and are removed.

    At setup every image used is checked cheaply (``image_check="header"``: JPEG/PNG signature and end marker,
    which catches empty, non-image and truncated files); ``"decode"`` decodes every image instead (slow),
    ``"none"`` skips the check. Reading an image that still fails to decode raises
    :class:`~anomalib_medical.data.utils.images.InvalidImageError` naming the file. Nothing is silently dropped.

Example:
    >>> from anomalib_medical.data import ChestXray
    >>> datamodule = ChestXray(root="./datasets/chest_xray")  # doctest: +SKIP
    >>> datamodule.prepare_data()  # downloads ~1.2 GB when needed  # doctest: +SKIP
    >>> datamodule.setup()  # doctest: +SKIP

"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from pandas import DataFrame
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.dataset import FullDepthDataset
from anomalib_medical.data.utils.download import (
    DEFAULT_TIMEOUT,
    ArchiveError,
    ChecksumError,
    DownloadError,
    download_file,
    extract_archive_atomically,
    find_stale_downloads,
    find_stale_staging,
    normalise_sha256,
    preparation_lock,
    verify_sha256,
)
from anomalib_medical.data.utils.images import (
    ImageCheck,
    check_images,
    is_os_metadata,
    list_images,
    make_samples_dataframe,
)
from anomalib_medical.data.utils.splits import contaminant_count

logger = logging.getLogger(__name__)

CHEST_XRAY_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/f12eaf6d-6023-432f-acc9-80c9d7393433/"
    "file_downloaded"
)
"""Mendeley Data file URL of ``ChestXRay2017.zip`` (dataset page: https://data.mendeley.com/datasets/rscbjbr9sj/2)."""

CHEST_XRAY_SHA256: str | None = None
"""SHA-256 of ``ChestXRay2017.zip``: pinned once a release has verified a download (Mendeley publishes none)."""

ARCHIVE_NAME = "ChestXRay2017.zip"
EXTRACTED_NAME = "chest_xray"
NORMAL_CLASS = "NORMAL"
ABNORMAL_CLASS = "PNEUMONIA"
TRAIN_FOLDERS = ("train", "val")
"""Official folders whose images form the training pool (``val/`` exists in the Kaggle copy only)."""

OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "train": {NORMAL_CLASS: 1349, ABNORMAL_CLASS: 3883},
    "test": {NORMAL_CLASS: 234, ABNORMAL_CLASS: 390},
}
"""Images per class in the official release; ``train`` includes the Kaggle copy's ``val/`` folder."""


def find_chest_xray_folder(root: str | Path) -> Path | None:
    """Return the folder that directly contains ``train/`` and ``test/``: ``root/chest_xray`` or ``root``.

    Args:
        root: Data set root.

    Returns:
        The folder, or ``None`` if neither candidate has both sub-folders.

    """
    root = Path(root)
    for candidate in (root / EXTRACTED_NAME, root):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def scan_chest_xray_folder(folder: str | Path) -> dict[str, dict[str, list[Path]]]:
    """List the images of an extracted ZhangLab tree per official split and class.

    Args:
        folder: Folder that directly contains ``train/`` and ``test/`` (and optionally ``val/``).

    Returns:
        ``{"train": {"NORMAL": [...], "PNEUMONIA": [...]}, "test": {...}}`` with paths sorted; ``train`` holds
        the images of ``train/`` and, if present, ``val/``.

    Raises:
        FileNotFoundError: If a ``train`` or ``test`` class folder is missing or holds no image.

    """
    folder = Path(folder)
    listing: dict[str, dict[str, list[Path]]] = {}
    for split, subfolders in (("train", TRAIN_FOLDERS), ("test", ("test",))):
        listing[split] = {}
        for class_name in (NORMAL_CLASS, ABNORMAL_CLASS):
            images: list[Path] = []
            for subfolder in subfolders:
                class_dir = folder / subfolder / class_name
                optional = subfolder == "val"
                if optional and not class_dir.exists():
                    continue
                if not class_dir.is_dir():
                    msg = f"ChestXray: class folder {class_dir} is missing (expected {subfolder}/{class_name})."
                    raise FileNotFoundError(msg)
                images += list_images(class_dir, allow_empty=optional)
            listing[split][class_name] = sorted(images)
    return listing


def verify_chest_xray_counts(
    listing: Mapping[str, Mapping[str, list[Path]]],
    expected_counts: Mapping[str, Mapping[str, int]] | None,
    folder: str | Path,
) -> None:
    """Check the number of images per split and class against ``expected_counts``.

    Args:
        listing: Output of :func:`scan_chest_xray_folder`.
        expected_counts: ``{"train": {"NORMAL": n, "PNEUMONIA": n}, "test": {...}}``; ``None`` skips the check.
        folder: The scanned folder (for the message).

    Raises:
        ValueError: If any count differs, naming every difference.

    """
    if expected_counts is None:
        return
    problems = []
    for split, classes in expected_counts.items():
        for class_name, expected in classes.items():
            found = len(listing.get(split, {}).get(class_name, []))
            if found != expected:
                where = "train/ + val/" if split == "train" else f"{split}/"
                problems.append(f"{where}{class_name} has {found} images, expected {expected}")
    if problems:
        msg = (
            f"ChestXray folder {folder} does not match the expected image counts: {'; '.join(problems)}. "
            "A partial or modified copy can be used with expected_counts=None (--data.expected_counts null)."
        )
        raise ValueError(msg)


def make_chest_xray_samples(
    folder: str | Path,
    val_normal: int = 100,
    val_abnormal: int = 100,
    seed: int = 0,
    expected_counts: Mapping[str, Mapping[str, int]] | None = OFFICIAL_COUNTS,
    image_check: ImageCheck = "header",
    train_abnormal_fraction: float = 0.0,
) -> DataFrame:
    """Build the samples table of SQUID's split from an extracted ZhangLab tree.

    Args:
        folder: Folder that directly contains ``train/`` and ``test/``.
        val_normal: Normal training images held out for validation (>= 1, fewer than the normal training images).
        val_abnormal: Pneumonia training images used for validation (>= 1, at most the pneumonia training images).
        seed: Seed of the validation draw.
        expected_counts: Images per split and class to insist on; ``None`` accepts any non-empty tree.
        image_check: ``"header"``, ``"decode"`` or ``"none"``: how the images used are checked.
        train_abnormal_fraction: Fraction of the training split made of pneumonia training images not used for
            validation, labelled normal (see the module docstring); in ``[0, 1)``.

    Returns:
        anomalib samples table (``split`` in ``train``/``val``/``test``) with an ``official_split`` column
        (``train``, ``val`` or ``test``: the folder the image came from) and a ``contaminant`` column (``True``
        for the pneumonia images in the training split).

    Raises:
        FileNotFoundError: If a class folder is missing or empty.
        ValueError: If the counts differ from ``expected_counts``, the validation sizes are impossible or too few
            pneumonia training images remain for ``train_abnormal_fraction``.
        InvalidImageError: If an image fails ``image_check``.

    """
    folder = Path(folder).resolve()
    listing = scan_chest_xray_folder(folder)
    verify_chest_xray_counts(listing, expected_counts, folder)
    train_normal, train_abnormal = listing["train"][NORMAL_CLASS], listing["train"][ABNORMAL_CLASS]
    if not 1 <= val_normal < len(train_normal):
        msg = (
            f"val_normal={val_normal} must be at least 1 and less than the {len(train_normal)} normal training "
            f"images in {folder} (some must remain for training)."
        )
        raise ValueError(msg)
    if not 1 <= val_abnormal <= len(train_abnormal):
        msg = f"val_abnormal={val_abnormal} must be between 1 and the {len(train_abnormal)} pneumonia training images."
        raise ValueError(msg)
    val_normal_set = set(_draw(train_normal, val_normal, seed, NORMAL_CLASS))
    val_abnormal_list = sorted(_draw(train_abnormal, val_abnormal, seed, ABNORMAL_CLASS))
    num_train_normal = len(train_normal) - val_normal
    num_contaminants = contaminant_count(train_abnormal_fraction, num_train_normal)
    remaining_abnormal = sorted(set(train_abnormal) - set(val_abnormal_list))
    if num_contaminants > len(remaining_abnormal):
        msg = (
            f"train_abnormal_fraction={train_abnormal_fraction} needs {num_contaminants} pneumonia training images "
            f"besides the {val_abnormal} validation ones, but only {len(remaining_abnormal)} remain in {folder}."
        )
        raise ValueError(msg)
    contaminants = sorted(_draw(remaining_abnormal, num_contaminants, seed, "contamination"))

    rows: list[tuple[Path, int, str, str]] = []  # path, label index given to the model, class name, split
    rows += [(path, 0, NORMAL_CLASS, "train") for path in train_normal if path not in val_normal_set]
    rows += [(path, 0, NORMAL_CLASS, "train") for path in contaminants]  # unlabelled contamination
    rows += [(path, 0, NORMAL_CLASS, "val") for path in sorted(val_normal_set)]
    rows += [(path, 1, ABNORMAL_CLASS, "val") for path in val_abnormal_list]
    rows += [(path, 0, NORMAL_CLASS, "test") for path in listing["test"][NORMAL_CLASS]]
    rows += [(path, 1, ABNORMAL_CLASS, "test") for path in listing["test"][ABNORMAL_CLASS]]
    check_images((row[0] for row in rows), image_check)
    logger.info(
        "ChestXray split from %s: train %d normal + %d unlabelled pneumonia; val %d normal + %d pneumonia; "
        "test %d + %d; %d pneumonia training images unused.",
        folder,
        num_train_normal,
        num_contaminants,
        val_normal,
        val_abnormal,
        len(listing["test"][NORMAL_CLASS]),
        len(listing["test"][ABNORMAL_CLASS]),
        len(remaining_abnormal) - num_contaminants,
    )
    contaminant_set = set(contaminants)
    return make_samples_dataframe(
        image_paths=[row[0] for row in rows],
        label_indices=[row[1] for row in rows],
        labels=[row[2] for row in rows],
        splits=[row[3] for row in rows],
        extra_columns={
            "official_split": [row[0].relative_to(folder).parts[0] for row in rows],
            "contaminant": [row[3] == "train" and row[0] in contaminant_set for row in rows],
        },
    )


def _draw(paths: list[Path], count: int, seed: int, stream: str) -> list[Path]:
    """Draw ``count`` paths, reproducibly from their sorted relative order, the seed and a per-class stream."""
    return random.Random(f"chest_xray:{seed}:{stream}").sample(sorted(paths), count)


def _missing_data_message(root: Path, reason: str) -> str:
    """Explain where the user can put the data."""
    return (
        f"ChestXray data not found under {root}: {reason}. Either put the extracted folder at "
        f"{root / EXTRACTED_NAME} (it must contain train/ and test/, optionally val/), or pass as root a folder "
        f"that directly contains train/ and test/, or put the archive {ARCHIVE_NAME} (Kermany et al. 2018, "
        f"https://data.mendeley.com/datasets/rscbjbr9sj/2) at {root / ARCHIVE_NAME}."
    )


class ChestXrayDataset(FullDepthDataset):
    """ZhangLab chest X-ray dataset with SQUID's split (see the module docstring).

    Args:
        root: Folder holding ``chest_xray/{train,test}`` or directly ``train/`` and ``test/``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all three.
        augmentations: Transforms applied to each image.
        val_normal: Normal training images held out for validation.
        val_abnormal: Pneumonia training images used for validation.
        seed: Seed of the validation draw.
        expected_counts: Images per split and class to insist on (default: official); ``None`` accepts any.
        image_check: ``"header"`` (default), ``"decode"`` or ``"none"``.
        train_abnormal_fraction: Fraction of the training split made of unlabelled pneumonia images.

    Raises:
        FileNotFoundError: If ``root`` does not hold the data, or a class folder is missing or empty.

    """

    def __init__(
        self,
        root: str | Path,
        split: str | Split | None = None,
        augmentations: Transform | None = None,
        val_normal: int = 100,
        val_abnormal: int = 100,
        seed: int = 0,
        expected_counts: Mapping[str, Mapping[str, int]] | None = OFFICIAL_COUNTS,
        image_check: ImageCheck = "header",
        train_abnormal_fraction: float = 0.0,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.root = Path(root)
        self.split = split
        folder = find_chest_xray_folder(self.root)
        if folder is None:
            raise FileNotFoundError(_missing_data_message(self.root, "no train/ and test/ folders"))
        samples = make_chest_xray_samples(
            folder, val_normal, val_abnormal, seed, expected_counts, image_check, train_abnormal_fraction
        )
        if split is not None:
            samples = samples[samples.split == Split(split).value].reset_index(drop=True)
        self.samples = samples

    def subset(self, split: str | Split) -> ChestXrayDataset:
        """Return a copy holding only the samples of one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            The subset (a deep copy).

        """
        indices = np.flatnonzero((self.samples.split == Split(split).value).to_numpy())
        return self.subsample(indices.tolist())  # type: ignore[return-value]


class ChestXray(AnomalibDataModule):
    """ZhangLab paediatric pneumonia chest X-rays (Kermany et al. 2018), SQUID's one-class split.

    Trains on normal images (plus, with ``train_abnormal_fraction``, unlabelled pneumonia images); validates on
    ``val_normal`` + ``val_abnormal`` images held out of the official training set; tests on the official test set
    (234 normal / 390 pneumonia). Classification only (no masks). Details, download and checks: module docstring of
    :mod:`anomalib_medical.data.chest_xray`.

    Args:
        root: Folder that holds (or will hold) ``chest_xray/`` or ``ChestXRay2017.zip``, or directly contains
            ``train/`` and ``test/``.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        val_normal: Normal training images held out for validation (SQUID: 100).
        val_abnormal: Pneumonia training images used for validation (SQUID: 100).
        train_abnormal_fraction: Fraction of the training split made of pneumonia images of the official training
            set that are not used for validation, labelled normal (contamination for "true" unsupervised training;
            the papers' normal ratio is one minus it; SimSID's CheXpert and COVIDx configs use 0.1 and 0.3). The
            ``contaminant`` column of ``train_data.samples`` marks them. Must be in ``[0, 1)``; default ``0.0``.
        seed: Seed of the validation and contamination draws.
        download: Download the archive when ``root`` holds neither it nor the extracted folder.
        url: Where to download ``ChestXRay2017.zip`` from (``http(s)://`` or ``file://``).
        sha256: Expected SHA-256 of the archive (default :data:`CHEST_XRAY_SHA256`); ``None`` skips the check.
        timeout: Seconds a connection or read may block during the download.
        expected_counts: Images per official split (``train`` includes ``val/``) and class that the tree must
            have; default the official counts; ``None`` accepts a trimmed or modified copy.
        image_check: How images are checked at setup: ``"header"`` (cheap, default), ``"decode"`` or ``"none"``.

    Example:
        >>> datamodule = ChestXray(root="./datasets/chest_xray", download=False)  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/chest_xray",
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        val_normal: int = 100,
        val_abnormal: int = 100,
        train_abnormal_fraction: float = 0.0,
        seed: int = 0,
        download: bool = True,
        url: str = CHEST_XRAY_URL,
        sha256: str | None = CHEST_XRAY_SHA256,
        timeout: float = DEFAULT_TIMEOUT,
        expected_counts: dict[str, dict[str, int]] | None = OFFICIAL_COUNTS,
        image_check: ImageCheck = "header",
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
        if val_normal < 1 or val_abnormal < 1:
            msg = f"val_normal and val_abnormal must be at least 1, got {val_normal} and {val_abnormal}."
            raise ValueError(msg)
        if image_check not in {"none", "header", "decode"}:
            msg = f"image_check must be 'none', 'header' or 'decode', got {image_check!r}."
            raise ValueError(msg)
        contaminant_count(train_abnormal_fraction, 0)  # checks the fraction before any data is read
        self.root = Path(root)
        self.val_normal = val_normal
        self.val_abnormal = val_abnormal
        self.train_abnormal_fraction = train_abnormal_fraction
        self.download = download
        self.url = url
        self.sha256 = normalise_sha256(sha256) if sha256 is not None else None
        self.timeout = timeout
        self.expected_counts = expected_counts
        self.image_check = image_check

    def prepare_data(self) -> None:
        """Download, verify and extract the archive unless ``root`` already holds the extracted folder.

        Safe to call from several processes at once: they take turns on ``root/chest_xray.lock``, and a process
        that waited finds the folder the first one extracted.

        Raises:
            FileNotFoundError: If the data is absent and ``download`` is off, or the archive lacks the folders.
            DownloadError: If the download fails (the message says where to put the data by hand).
            ChecksumError: If the archive's SHA-256 differs from ``sha256`` (a downloaded archive is discarded, one
                placed by hand is kept).
            ArchiveError: If the archive is corrupt, has unsafe or encrypted members, or expands too much.
            ValueError: If the extracted image counts differ from ``expected_counts``.

        """
        if find_chest_xray_folder(self.root) is not None:
            return
        target = self.root / EXTRACTED_NAME
        if target.exists():
            msg = (
                f"{target} exists but does not contain both train/ and test/ folders; remove or complete it. "
                + _missing_data_message(self.root, "incomplete folder")
            )
            raise FileNotFoundError(msg)
        archive = self.root / ARCHIVE_NAME
        if not archive.is_file() and not self.download:
            raise FileNotFoundError(_missing_data_message(self.root, "download=False and no archive"))
        with preparation_lock(target):
            if find_chest_xray_folder(self.root) is not None:
                logger.info("ChestXray: %s was prepared by another process meanwhile; using it.", target)
                return
            for stale in [*find_stale_staging(self.root, EXTRACTED_NAME), *find_stale_downloads(archive)]:
                logger.warning("Removing %s, left by an interrupted extraction or download.", stale)
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
            self._download_and_extract(archive, target)

    def _download_and_extract(self, archive: Path, target: Path) -> None:
        """Fetch the archive unless it is in place (then check it), extract and publish it; under the lock."""
        downloaded = False
        if archive.is_file():
            if self.sha256 is not None:
                try:
                    verify_sha256(archive, self.sha256)
                except ChecksumError as err:
                    msg = (
                        f"{err} Replace {archive} with Kermany et al.'s {ARCHIVE_NAME}, or pass the right sha256 "
                        "(None skips the check)."
                    )
                    raise ChecksumError(msg) from err
        elif not self.download:  # the archive was there before the lock, but a failed run removed it since
            raise FileNotFoundError(_missing_data_message(self.root, "download=False and no archive"))
        else:
            logger.info("Downloading %s from %s to %s", ARCHIVE_NAME, self.url, archive)
            try:
                download_file(self.url, archive, sha256=self.sha256, timeout=self.timeout)
            except DownloadError as err:
                raise DownloadError(_missing_data_message(self.root, str(err).rstrip("."))) from err
            downloaded = True
        try:
            extract_archive_atomically(
                archive,
                target,
                locate=lambda staging: _locate_extracted(staging, archive),
                verify=self._verify_tree,
                exclude=is_os_metadata,
            )
        except (ArchiveError, FileNotFoundError, ValueError) as err:
            if downloaded:
                archive.unlink(missing_ok=True)
                msg = f"{err} The downloaded archive {archive} has been removed."
                raise type(err)(msg) from err
            raise

    def _verify_tree(self, folder: Path) -> None:
        """Check the folders and image counts of a freshly extracted tree."""
        verify_chest_xray_counts(scan_chest_xray_folder(folder), self.expected_counts, folder)

    def _setup(self, _stage: str | None = None) -> None:
        """Build the train/val/test datasets (SQUID's split)."""
        if find_chest_xray_folder(self.root) is None:
            reason = "no train/ and test/ folders (prepare_data has not been run or could not place them)"
            raise FileNotFoundError(_missing_data_message(self.root, reason))
        full = ChestXrayDataset(
            root=self.root,
            val_normal=self.val_normal,
            val_abnormal=self.val_abnormal,
            seed=self.seed if self.seed is not None else 0,
            expected_counts=self.expected_counts,
            image_check=self.image_check,
            train_abnormal_fraction=self.train_abnormal_fraction,
        )
        self.train_data = full.subset(Split.TRAIN)
        self.val_data = full.subset(Split.VAL)
        self.test_data = full.subset(Split.TEST)


def _locate_extracted(staging: Path, archive: Path) -> Path:
    """Find the folder with ``train/`` and ``test/`` in a freshly extracted archive (top level or one below)."""
    candidates = [staging, *sorted(p for p in staging.iterdir() if p.is_dir())]
    for candidate in candidates:
        folder = find_chest_xray_folder(candidate)
        if folder is not None:
            return folder
    msg = f"Archive {archive} contains no {EXTRACTED_NAME}/train and {EXTRACTED_NAME}/test folders."
    raise FileNotFoundError(msg)
