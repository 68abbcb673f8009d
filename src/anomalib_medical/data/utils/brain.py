"""Brain MRI preparation as Baugh et al. (MICCAI 2023) and the datamodule base of the real brain data sets.

Baugh et al.'s ``multitask_method/preprocessing/brain_preproc.py`` prepares HCP, BraTS 2017 and ISLES 2015 alike
(:class:`BrainPreprocessing` is that pipeline, one volume at a time):

1. read the volume as SimpleITK's array, ``(D, H, W)`` = the file's voxel axes reversed (:func:`read_volume`);
2. HCP only (0.7 mm): resample to 1 mm with linear interpolation, correcting the blurred brain edge by the resampled
   foreground fraction (:func:`resize_preserve_edge`), labels with nearest neighbours. We resample every volume whose
   spacing differs from 1 mm (``spacing_tolerance``) by its header's zooms, which for HCP is their factor 0.7;
3. z-score within the brain, ``v > 0`` (:func:`z_normalise`), the background stays 0;
4. crop to the brain's bounding box (:func:`foreground_box`), which must fit in 160 x 224 x 160
   (:data:`BRAIN_INPUT_SIZE`); theirs is the box of T1 and T2 together, ours that of the modality read (T2), the
   same box for co-registered skull-stripped pairs;
5. their BraTS 2017 arrays are flipped along H (``[:, ::-1, :]``) to face HCP's way. We reorient every NIfTI volume
   to HCP's storage orientation, LAS, from its affine (:data:`BRAIN_ORIENTATION`), which is that flip for BraTS's LPS
   volumes and keeps HCP as stored;
6. pad each side to an even length at its end and downsample by two (linear with scikit-image's anti-aliasing for
   the image, nearest for the labels), and at loading pad centred to 80 x 112 x 80 (:data:`LOW_RES_SIZE`, the
   ``data_size`` of their brain experiments), as their ``PreprocessedMRIDatasetContainer``.
   ``downsample=False`` keeps 1 mm and pads to 160 x 224 x 160 (their ``fullres`` arrays).

The lesion mask (BraTS ``seg`` labels 1, 2, 4: the whole tumour; ISLES ``OT``) follows the image's geometry and is
stored as ``uint8`` (non-zero abnormal). Results are cached as ``.npy`` (:class:`PreprocessedBrainCache`), keyed on
the settings, rebuilt when a source file changes.
"""

from __future__ import annotations

import json
import logging
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anomalib.data.utils import LabelName, Split
from scipy import ndimage
from skimage import filters, transform
from torch.utils.data import DataLoader

from anomalib_medical.data.utils.download import preparation_lock
from anomalib_medical.data.utils.splits import draw_disjoint
from anomalib_medical.data.utils.volume import VolumeDataModule
from anomalib_medical.data.utils.volume_reader import read_volume_with_geometry

__all__ = [
    "BRAIN_INPUT_SIZE",
    "BRAIN_ORIENTATION",
    "LOW_RES_SIZE",
    "BrainMRIDataModule",
    "BrainPreprocessing",
    "BrainSubject",
    "LeftRightFlip",
    "PreprocessedBrainCache",
    "downsample_half",
    "foreground_box",
    "head_mask",
    "missing_files_message",
    "pad_centred",
    "resize_preserve_edge",
    "z_normalise",
]

logger = logging.getLogger(__name__)

BRAIN_INPUT_SIZE: tuple[int, int, int] = (160, 224, 160)
"""Largest brain box at 1 mm, ``(D, H, W)`` (the authors' ``brain_input_size``); boxes are padded to it."""

LOW_RES_SIZE: tuple[int, int, int] = (80, 112, 80)
"""Volume size after downsampling by two (the authors' ``data_size`` for HCP, BraTS and ISLES)."""

BRAIN_ORIENTATION = "LAS"
"""Axis codes of the NIfTI voxel axes ``(i, j, k)`` every volume is reoriented to (HCP's storage orientation)."""

FORMAT_VERSION = 1  # bump when the preprocessing's output changes: cached volumes are keyed on it


def z_normalise(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score ``volume`` within ``mask`` (the authors' ``z_norm``: std + 1e-8); voxels outside are kept."""
    output = volume.copy()
    values = volume[mask]
    output[mask] = (values - values.mean()) / (values.std() + 1e-8)
    return output


def resize_preserve_edge(volume: np.ndarray, shape: Sequence[float]) -> np.ndarray:
    """Resize linearly, dividing by the resized foreground fraction so the brain edge is not blurred (authors').

    Voxels whose resized foreground fraction (of ``volume > 0``) is below 0.5 become background (0).
    """
    foreground = (volume > 0).astype(np.float64)
    resized = transform.resize(volume, shape, order=1, preserve_range=True)
    fraction = transform.resize(foreground, shape, order=1, preserve_range=True)
    inside = fraction >= 0.5
    resized[~inside] = 0
    resized[inside] /= fraction[inside]
    return resized


def _resize_labels(labels: np.ndarray, shape: Sequence[float]) -> np.ndarray:
    return transform.resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False)


def foreground_box(foreground: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the ``True`` voxels (``scipy.ndimage.find_objects``).

    Raises:
        ValueError: If no voxel is ``True``.

    """
    boxes = ndimage.find_objects(foreground.astype(np.int8))
    if not boxes or boxes[0] is None:
        msg = "the volume has no foreground voxel (no value > 0)"
        raise ValueError(msg)
    return boxes[0]


def pad_centred(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad to ``shape``, half on each side, the odd voxel at the end (the authors' padding at loading).

    Raises:
        ValueError: If the volume is larger than ``shape`` along an axis.

    """
    if any(s > t for s, t in zip(volume.shape, shape, strict=True)):
        msg = f"a volume of shape {volume.shape} does not fit in {tuple(shape)}"
        raise ValueError(msg)
    widths = [((t - s) // 2, (t - s) // 2 + (t - s) % 2) for t, s in zip(shape, volume.shape, strict=True)]
    return np.pad(volume, widths)


def downsample_half(volume: np.ndarray, labels: bool = False) -> np.ndarray:
    """Pad every odd side by one voxel at its end, then halve it (authors': linear with anti-aliasing, or nearest)."""
    volume = np.pad(volume, [(0, s % 2) for s in volume.shape])
    shape = [s // 2 for s in volume.shape]
    if labels:
        return _resize_labels(volume, shape)
    return transform.resize(volume, shape, order=1, preserve_range=True)


def head_mask(volume: np.ndarray) -> np.ndarray:
    """Return the head of a volume that is not skull-stripped: above Otsu's threshold, largest component, filled.

    Raises:
        ValueError: If the volume is constant.

    """
    if volume.min() == volume.max():
        msg = "a constant volume has no head to mask"
        raise ValueError(msg)
    labels, count = ndimage.label(volume > filters.threshold_otsu(volume))
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1 if count else 0
    return ndimage.binary_fill_holes(labels == largest)


class LeftRightFlip:
    """Mirror a volume and its mask left-right (the last axis) with probability ``p`` (the authors' training flip).

    Args:
        p: Probability of the flip.

    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, volume: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the volume ``(C, D, H, W)`` and mask ``(D, H, W)``, both flipped or both as they are."""
        if torch.rand(()) < self.p:
            return volume.flip(-1), mask.flip(-1)
        return volume, mask


@dataclass(frozen=True)
class BrainSubject:
    """The files of one subject.

    Attributes:
        subject: Subject id (the cached files' name).
        image: T2-weighted volume.
        mask: Lesion mask (``None``: a healthy subject).
        brain_mask: Non-zero inside the brain, applied to an image that is not skull-stripped (``None``: it is).

    """

    subject: str
    image: Path
    mask: Path | None = None
    brain_mask: Path | None = None

    @property
    def sources(self) -> list[Path]:
        """The subject's files."""
        return [path for path in (self.image, self.mask, self.brain_mask) if path is not None]


@dataclass(frozen=True)
class BrainPreprocessing:
    """Baugh et al.'s brain MRI preparation (module docstring), one volume at a time.

    Attributes:
        spacing: Voxel spacing to resample to, in mm.
        box_size: Size the brain box must fit in and is padded to at ``spacing``.
        downsample: Halve the resolution (the paper's 80 x 112 x 80), or keep it (160 x 224 x 160).
        orientation: Axis codes NIfTI volumes are reoriented to; ``None`` keeps the stored order.
        spacing_tolerance: Spacings within this of ``spacing`` (mm) are not resampled.
        head_mask: For volumes that are not skull-stripped and have no brain mask: keep only the head
            (:func:`head_mask`) so that the background is 0 (the skull stays; not the paper's preparation).

    """

    spacing: float = 1.0
    box_size: tuple[int, int, int] = BRAIN_INPUT_SIZE
    downsample: bool = True
    orientation: str | None = BRAIN_ORIENTATION
    spacing_tolerance: float = 0.01
    head_mask: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of every preprocessed volume."""
        return tuple(s // 2 for s in self.box_size) if self.downsample else tuple(self.box_size)  # type: ignore[return-value]

    @property
    def key(self) -> str:
        """Name of the cache folder of these settings."""
        size = "x".join(map(str, self.box_size))
        head = "_head" if self.head_mask else ""
        resolution = "half" if self.downsample else "full"
        return f"s{self.spacing:g}_box{size}_{resolution}_{self.orientation}{head}_v{FORMAT_VERSION}"

    def __call__(
        self, image: np.ndarray, zooms: Sequence[float], mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Prepare a skull-stripped image ``(D, H, W)`` with voxel spacing ``zooms`` and its optional lesion mask.

        Returns:
            ``(image, mask)``: float32 of :attr:`shape` (z-scored brain, background 0) and uint8 (or ``None``).

        Raises:
            ValueError: If the image has no voxel > 0 or its brain box does not fit in :attr:`box_size`.

        """
        image = image.astype(np.float64)
        if self.head_mask:
            image = np.where(head_mask(image), image, 0.0)
        if any(abs(zoom - self.spacing) > self.spacing_tolerance for zoom in zooms):
            # a fractional shape, as the authors' (``shape * 0.7``): scikit-image rounds the output size but derives
            # its anti-aliasing from the exact factor
            shape = np.array(image.shape) * np.array(zooms) / self.spacing
            image = resize_preserve_edge(image, shape)
            mask = None if mask is None else _resize_labels(mask, shape)
        foreground = image > 0
        box = foreground_box(foreground)
        image = z_normalise(image, foreground)[box]
        if any(s > t for s, t in zip(image.shape, self.box_size, strict=True)):
            msg = f"the brain box {image.shape} at {self.spacing:g} mm is larger than {self.box_size}"
            raise ValueError(msg)
        if mask is not None:
            mask = mask[box]
        if self.downsample:
            image = downsample_half(image)
            mask = None if mask is None else downsample_half(mask, labels=True)
        image = pad_centred(image, self.shape).astype(np.float32)
        return image, None if mask is None else (pad_centred(mask, self.shape) != 0).astype(np.uint8)

    def load(self, subject: BrainSubject) -> tuple[np.ndarray, np.ndarray | None]:
        """Read and prepare a subject's files (the brain mask applied first).

        Raises:
            FileNotFoundError, InvalidVolumeError: If a file is missing or unreadable.
            ValueError: If the files' shapes differ, or as :meth:`__call__` (each naming the files).

        """
        image, geometry = read_volume_with_geometry(subject.image, self.orientation)
        extra = {}
        for name in ("mask", "brain_mask"):
            path = getattr(subject, name)
            if path is not None:
                extra[name] = read_volume_with_geometry(path, self.orientation)[0]
                if extra[name].shape != image.shape:
                    msg = (
                        f"{subject.subject}: {name.replace('_', ' ')} {path} has shape {extra[name].shape}, its image "
                        f"{subject.image} has shape {image.shape}"
                    )
                    raise ValueError(msg)
        if "brain_mask" in extra:
            image = np.where(extra["brain_mask"] != 0, image, 0)
        try:
            return self(image, geometry.zooms, extra.get("mask"))
        except ValueError as error:
            msg = f"{subject.subject} ({subject.image}): {error}"
            raise ValueError(msg) from error


class PreprocessedBrainCache:
    """Preprocessed volumes as ``.npy`` under ``<folder>/<settings key>/{images,masks}/<subject>.npy``.

    Each subject has a ``<subject>.json`` record of its source files (path, size, modification time); a volume whose
    sources changed is rebuilt. Files are written to a temporary name and renamed, so an interrupted run leaves no
    half-written volume; :meth:`build` holds a lock on the folder, so several processes preparing it take turns.
    """

    def __init__(self, folder: str | Path, preprocessing: BrainPreprocessing) -> None:
        self.preprocessing = preprocessing
        self.folder = Path(folder) / preprocessing.key

    def image_path(self, subject: BrainSubject) -> Path:
        """Return the cached image file of a subject."""
        return self.folder / "images" / f"{subject.subject}.npy"

    def mask_path(self, subject: BrainSubject) -> Path | None:
        """Return the cached lesion mask file of a subject (``None`` for a healthy subject)."""
        return None if subject.mask is None else self.folder / "masks" / f"{subject.subject}.npy"

    def _record(self, subject: BrainSubject) -> Path:
        return self.folder / "records" / f"{subject.subject}.json"

    @staticmethod
    def _versions(subject: BrainSubject) -> list[list[object]]:
        return [[str(path), path.stat().st_size, path.stat().st_mtime_ns] for path in subject.sources]

    def is_current(self, subject: BrainSubject) -> bool:
        """Whether the subject's cached files exist and were made from its current sources."""
        record, mask = self._record(subject), self.mask_path(subject)
        if not (record.is_file() and self.image_path(subject).is_file() and (mask is None or mask.is_file())):
            return False
        return json.loads(record.read_text()) == self._versions(subject)

    def build(self, subjects: Sequence[BrainSubject]) -> None:
        """Preprocess every subject whose cached files are missing or stale (logged every 10 subjects)."""
        todo = [subject for subject in subjects if not self.is_current(subject)]
        if not todo:
            return
        with preparation_lock(self.folder):
            todo = [subject for subject in todo if not self.is_current(subject)]
            for done, subject in enumerate(todo, 1):
                image, mask = self.preprocessing.load(subject)
                _save(self.image_path(subject), image)
                mask_path = self.mask_path(subject)
                if mask_path is not None and mask is not None:
                    _save(mask_path, mask)
                record = self._record(subject)
                record.parent.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps(self._versions(subject)))
                if done % 10 == 0 or done == len(todo):
                    logger.info("Preprocessed %d of %d brain volumes into %s", done, len(todo), self.folder)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(partial, array)
    os.replace(partial, path)


class BrainMRIDataModule(VolumeDataModule):
    """Base of the real brain MRI datamodules: provider files -> :class:`BrainPreprocessing` -> cached samples.

    A subclass lists its subjects (:meth:`subjects`) from ``root``. Healthy data sets (HCP, IXI) split their subjects
    into train / val / test under ``seed``; lesion data sets (BraTS, ISLES) put every subject in test (a volume is
    abnormal when its mask has a lesion voxel) and take their training and validation volumes from ``normal``,
    another brain datamodule (the paper: train on HCP, test on BraTS and ISLES).

    Args:
        root: Folder of the provider's files.
        normal: For lesion data sets: the datamodule whose train and val splits are used (e.g. ``HCP``).
        val_fraction: Healthy data sets: fraction of the subjects held out for validation (the authors hold out one
            fifth of HCP).
        test_fraction: Healthy data sets: fraction of the subjects held out for testing.
        downsample: Halve the resolution to 80 x 112 x 80 (the paper), or keep 160 x 224 x 160 at 1 mm.
        box_size: Size at 1 mm the brain box must fit in and is padded to (the authors' 160 x 224 x 160; smaller for
            tiny trees).
        flip_left_right: Mirror training volumes left-right with probability 0.5 (the authors' training transform).
        cache_dir: Folder of the preprocessed volumes; default ``<root>/preprocessed``.
        train_batch_size: Training batch size (authors: 8).
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        seed: Seed of the subject split.

    """

    healthy: bool = True

    def __init__(
        self,
        root: str | Path,
        normal: BrainMRIDataModule | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        downsample: bool = True,
        box_size: tuple[int, int, int] = BRAIN_INPUT_SIZE,
        flip_left_right: bool = True,
        cache_dir: str | Path | None = None,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=LeftRightFlip() if flip_left_right else None,
            seed=seed,
        )
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            msg = (
                f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, "
                f"got {val_fraction} and {test_fraction}"
            )
            raise ValueError(msg)
        self.root = Path(root)
        self.normal = normal
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.preprocessing = BrainPreprocessing(box_size=tuple(box_size), downsample=downsample)
        self.cache = PreprocessedBrainCache(
            Path(cache_dir) if cache_dir else self.root / "preprocessed", self.preprocessing
        )

    @property
    def name(self) -> str:
        """Data set name (the class name)."""
        return type(self).__name__

    @abstractmethod
    def subjects(self) -> list[BrainSubject]:
        """List the subjects of ``root`` (sorted), checking that every file is there.

        Raises:
            FileNotFoundError: If ``root`` holds no subject or a subject lacks a modality or its mask.

        """

    def prepare_data(self) -> None:
        """Preprocess the subjects (and those of ``normal``) into the cache, where missing or stale."""
        self.cache.build(self.subjects())
        if self.normal is not None:
            self.normal.prepare_data()

    def samples(self) -> pd.DataFrame:
        """Return the samples of the cached volumes: healthy subjects split by ``seed``, lesion subjects in test."""
        subjects = self.subjects()
        self.cache.build(subjects)  # no-op when prepared
        names = [subject.subject for subject in subjects]
        split_of = dict.fromkeys(names, Split.TEST.value)
        if self.healthy:
            num_val, num_test = round(self.val_fraction * len(names)), round(self.test_fraction * len(names))
            rng = np.random.default_rng(self.seed)
            counts = [("validation subjects", num_val), ("test subjects", num_test), ("training subjects", None)]
            for split, chosen in zip(
                (Split.VAL, Split.TEST, Split.TRAIN), draw_disjoint(names, counts, rng), strict=True
            ):
                split_of.update(dict.fromkeys(chosen, split.value))
        rows = []
        for subject in subjects:
            mask_path = self.cache.mask_path(subject)
            abnormal = mask_path is not None and bool(np.load(mask_path, mmap_mode="r").any())
            rows.append(
                {
                    "subject": subject.subject,
                    "image_path": str(self.cache.image_path(subject)),
                    "mask_path": str(mask_path) if abnormal else "",
                    "label": "abnormal" if abnormal else "normal",
                    "label_index": int(LabelName.ABNORMAL if abnormal else LabelName.NORMAL),
                    "split": split_of[subject.subject],
                    "source": str(subject.image),
                }
            )
        samples = pd.DataFrame(rows)
        if self.normal is not None:
            normal = self.normal.samples()
            samples = pd.concat([normal[normal.split != Split.TEST.value], samples], ignore_index=True)
        samples.attrs["task"] = "segmentation"
        return samples

    def train_dataloader(self) -> DataLoader:
        """Training loader; a lesion data set without ``normal`` has no training volumes and says so."""
        if len(self.train_data) == 0:
            msg = (
                f"{self.name} has no training volumes: lesion data sets train on another data set's healthy volumes; "
                f"pass normal= (e.g. --data.normal HCP --data.normal.root DIR, as in the paper)"
                if not self.healthy
                else f"{self.name} under {self.root} has no training subjects left after the val/test fractions"
            )
            raise ValueError(msg)
        return super().train_dataloader()


def missing_files_message(dataset: str, root: Path, expected: str) -> str:
    """Message for a provider folder without the expected layout."""
    return f"{dataset}: no subjects found under {root}; expected {expected}"
