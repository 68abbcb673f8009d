"""IXI T2-weighted volumes of healthy adults: a public, downloadable healthy training set for brain MRI.

Data:
    IXI data set, Imperial College London, https://brain-development.org/ixi-dataset/ (CC BY-SA 3.0): 578 T2-weighted
    volumes of healthy subjects from three London hospitals (Guy's, Hammersmith, Institute of Psychiatry), about
    0.94 x 0.94 x 1.2 mm, in one archive ``IXI-T2.tar`` of files ``IXI<nnn>-<hospital>-<id>-T2.nii.gz``.
    :meth:`IXI.prepare_data` downloads it (:data:`IXI_T2_URL`, about 4 GB) through a ``.part`` file, checks the
    SHA-256 when one is given (the site publishes none: pass ``sha256`` or pin :data:`IXI_T2_SHA256` once a download
    is verified), extracts it safely into a staging folder, checks the number of volumes (``expected_count``) and
    only then moves it to ``<root>/IXI-T2``. An archive placed by hand at ``<root>/IXI-T2.tar``, or the extracted
    folder, is used as it is; a downloaded archive that fails its checks is removed, one placed by hand is kept.
    Several processes preparing one ``root`` take turns on a lock file.

Skull stripping: IXI volumes show the whole head, while Baugh et al.'s preparation z-scores and boxes a
skull-stripped brain (HCP's ``_brain`` volumes, BraTS, ISLES). Pass ``brain_mask_dir``, a folder of brain masks named
``<subject>*.nii.gz`` (e.g. from SynthStrip or HD-BET), for that preparation. Without masks a head mask is used
(Otsu threshold, largest component, holes filled): the skull stays, unlike in the lesion test sets, so a model
trained on it meets an unfamiliar intensity layout there.

Split: every subject is healthy; ``val_fraction`` (default one fifth) are validation volumes, ``test_fraction``
test volumes; ``BraTS(normal=IXI(...))`` trains on IXI and tests on BraTS.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from anomalib_medical.data.utils.brain import BRAIN_INPUT_SIZE, BrainMRIDataModule, BrainPreprocessing, BrainSubject
from anomalib_medical.data.utils.download import (
    DEFAULT_TIMEOUT,
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
from anomalib_medical.data.utils.images import is_os_metadata
from anomalib_medical.data.utils.volume_reader import volume_suffix

__all__ = ["IXI", "IXI_T2_COUNT", "IXI_T2_SHA256", "IXI_T2_URL", "find_ixi_folder", "find_ixi_subjects"]

logger = logging.getLogger(__name__)

IXI_T2_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T2.tar"
"""Where brain-development.org's IXI page links ``IXI-T2.tar``."""

IXI_T2_SHA256: str | None = None
"""SHA-256 of ``IXI-T2.tar``: pinned once a release has verified a download (the site publishes none)."""

IXI_T2_COUNT = 578
"""T2-weighted volumes in ``IXI-T2.tar``."""

ARCHIVE_NAME = "IXI-T2.tar"
EXTRACTED_NAME = "IXI-T2"
_T2_ENDING = "-T2.nii.gz"


def _t2_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob(f"IXI*{_T2_ENDING}") if path.is_file()) if folder.is_dir() else []


def find_ixi_folder(root: str | Path) -> Path | None:
    """Return the folder holding ``IXI*-T2.nii.gz`` files: ``root/IXI-T2`` or ``root``, else ``None``."""
    root = Path(root)
    return next((folder for folder in (root / EXTRACTED_NAME, root) if _t2_files(folder)), None)


def find_ixi_subjects(folder: str | Path, brain_mask_dir: str | Path | None = None) -> list[BrainSubject]:
    """List the IXI subjects of ``folder`` (``IXI<nnn>-<hospital>-<id>-T2.nii.gz``), with their brain masks.

    Raises:
        FileNotFoundError: If the folder holds no IXI T2 volume, or ``brain_mask_dir`` lacks a subject's mask.
        ValueError: If ``brain_mask_dir`` holds two masks of one subject.

    """
    folder = Path(folder)
    files = _t2_files(folder)
    if not files:
        msg = f"IXI: no IXI*{_T2_ENDING} volume in {folder}"
        raise FileNotFoundError(msg)
    mask_files = []
    if brain_mask_dir is not None:
        mask_dir = Path(brain_mask_dir)
        mask_files = sorted(p for p in mask_dir.iterdir() if volume_suffix(p) is not None) if mask_dir.is_dir() else []
    subjects = []
    for path in files:
        subject = path.name.removesuffix(_T2_ENDING)
        brain_mask = None
        if brain_mask_dir is not None:
            found = [p for p in mask_files if p.name.startswith(subject) and p.name[len(subject)] in "-_."]
            if len(found) != 1:
                problem = "no brain mask" if not found else f"{len(found)} brain masks ({[p.name for p in found]})"
                msg = f"IXI subject {subject} has {problem} in {brain_mask_dir} (expected {subject}*.nii.gz)"
                raise (FileNotFoundError if not found else ValueError)(msg)
            brain_mask = found[0]
        subjects.append(BrainSubject(subject=subject, image=path, brain_mask=brain_mask))
    return subjects


class IXI(BrainMRIDataModule):
    """IXI T2 volumes of healthy adults, downloadable (module docstring).

    Args:
        root: Folder that holds (or will hold) ``IXI-T2.tar`` or ``IXI-T2/``, or directly the volumes.
        brain_mask_dir: Folder of brain masks ``<subject>*.nii.gz``; ``None``: head masks (the skull stays).
        val_fraction: Fraction of the subjects held out for validation. Defaults to ``0.2``.
        test_fraction: Fraction of the subjects held out for testing. Defaults to ``0.0``.
        downsample: 80 x 112 x 80 (the paper) or 160 x 224 x 160 at 1 mm. Defaults to ``True``.
        box_size: Size at 1 mm the brain box must fit in and is padded to (halved by ``downsample``).
            Defaults to ``(160, 224, 160)``, the authors'.
        flip_left_right: Mirror training volumes left-right with probability 0.5. Defaults to ``True``.
        cache_dir: Folder of the preprocessed volumes. Defaults to ``<root>/preprocessed``.
        download: Download the archive when ``root`` holds neither it nor the volumes. Defaults to ``True``.
        url: Where to download ``IXI-T2.tar`` from (``http(s)://`` or ``file://``). Defaults to :data:`IXI_T2_URL`.
        sha256: Expected SHA-256 of the archive; ``None`` skips the check. Defaults to :data:`IXI_T2_SHA256`.
        timeout: Seconds a connection or read may block during the download.
        expected_count: Volumes the extracted archive must hold; ``None`` accepts any. Defaults to ``578``.
        train_batch_size: Training batch size. Defaults to ``8``.
        eval_batch_size: Validation and test batch size. Defaults to ``8``.
        num_workers: Data loader workers. Defaults to ``0``.
        seed: Seed of the subject split. Defaults to ``0``.

    """

    def __init__(
        self,
        root: str | Path = "./datasets/IXI",
        brain_mask_dir: str | Path | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        downsample: bool = True,
        box_size: tuple[int, int, int] = BRAIN_INPUT_SIZE,
        flip_left_right: bool = True,
        cache_dir: str | Path | None = None,
        download: bool = True,
        url: str = IXI_T2_URL,
        sha256: str | None = IXI_T2_SHA256,
        timeout: float = DEFAULT_TIMEOUT,
        expected_count: int | None = IXI_T2_COUNT,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root=root,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            downsample=downsample,
            box_size=box_size,
            flip_left_right=flip_left_right,
            cache_dir=cache_dir,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
        )
        self.brain_mask_dir = Path(brain_mask_dir) if brain_mask_dir is not None else None
        self.download = download
        self.url = url
        self.sha256 = normalise_sha256(sha256) if sha256 is not None else None
        self.timeout = timeout
        self.expected_count = expected_count
        if self.brain_mask_dir is None:  # skull stripping by a head mask: its own preparation and cache
            self.preprocessing = BrainPreprocessing(box_size=tuple(box_size), downsample=downsample, head_mask=True)
            self.cache = type(self.cache)(self.cache.folder.parent, self.preprocessing)

    def _missing_message(self, reason: str) -> str:
        return (
            f"IXI T2 data not found under {self.root}: {reason}. Put the archive {ARCHIVE_NAME} "
            f"(https://brain-development.org/ixi-dataset/) at {self.root / ARCHIVE_NAME}, or its extracted volumes in "
            f"{self.root / EXTRACTED_NAME}, or pass download=True."
        )

    def subjects(self) -> list[BrainSubject]:
        """List the subjects (see :func:`find_ixi_subjects`).

        Raises:
            FileNotFoundError: If the volumes are not in place (``prepare_data`` places them).

        """
        folder = find_ixi_folder(self.root)
        if folder is None:
            raise FileNotFoundError(self._missing_message("no IXI*-T2.nii.gz volumes (run prepare_data)"))
        return find_ixi_subjects(folder, self.brain_mask_dir)

    def prepare_data(self) -> None:
        """Download, verify and extract ``IXI-T2.tar`` unless the volumes are in place, then preprocess them.

        Raises:
            FileNotFoundError: If the data is absent and ``download`` is off.
            DownloadError: If the download fails (the message says where to put the data by hand).
            ChecksumError: If the archive's SHA-256 differs from ``sha256``.
            ArchiveError: If the archive is corrupt or unsafe.
            ValueError: If the archive holds another number of volumes than ``expected_count``.

        """
        if find_ixi_folder(self.root) is None:
            archive, target = self.root / ARCHIVE_NAME, self.root / EXTRACTED_NAME
            if not archive.is_file() and not self.download:
                raise FileNotFoundError(self._missing_message("download=False and no archive"))
            with preparation_lock(target):
                if find_ixi_folder(self.root) is None:
                    for stale in [*find_stale_staging(self.root, EXTRACTED_NAME), *find_stale_downloads(archive)]:
                        logger.warning("Removing %s, left by an interrupted extraction or download.", stale)
                        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
                    self._fetch_and_extract(archive, target)
        super().prepare_data()

    def _fetch_and_extract(self, archive: Path, target: Path) -> None:
        downloaded = not archive.is_file()
        if downloaded:
            logger.info("Downloading %s from %s to %s", ARCHIVE_NAME, self.url, archive)
            try:
                download_file(self.url, archive, sha256=self.sha256, timeout=self.timeout)
            except DownloadError as error:
                raise DownloadError(self._missing_message(str(error).rstrip("."))) from error
        elif self.sha256 is not None:
            try:
                verify_sha256(archive, self.sha256)
            except ChecksumError as error:
                msg = f"{error} Replace {archive} with IXI's {ARCHIVE_NAME}, or pass the right sha256 (None skips it)."
                raise ChecksumError(msg) from error
        try:
            extract_archive_atomically(
                archive, target, locate=self._locate, verify=self._verify, exclude=is_os_metadata
            )
        except (OSError, ValueError) as error:
            if downloaded:
                archive.unlink(missing_ok=True)
                msg = f"{error} The downloaded archive {archive} has been removed."
                raise type(error)(msg) from error
            raise

    @staticmethod
    def _locate(staging: Path) -> Path:
        for candidate in (staging, *sorted(path for path in staging.iterdir() if path.is_dir())):
            if _t2_files(candidate):
                return candidate
        msg = f"the archive holds no IXI*{_T2_ENDING} volume"
        raise FileNotFoundError(msg)

    def _verify(self, folder: Path) -> None:
        count = len(_t2_files(folder))
        if self.expected_count is not None and count != self.expected_count:
            msg = (
                f"IXI archive holds {count} T2 volumes, expected {self.expected_count}; "
                "a partial copy can be used with expected_count=None."
            )
            raise ValueError(msg)
