"""Volumes (3-D scans) through anomalib's engine: item and batch types, a dataset and a datamodule base.

anomalib's ``ImageItem`` / ``ImageBatch`` validators insist on ``(C, H, W)`` images with three channels and
``(H, W)`` masks, so a volume cannot travel in them. :class:`VolumeItem` and :class:`VolumeBatch` are the same
dataclasses (anomalib's generic fields, descriptors, ``update``, iteration and ``collate``) with validators for one
more spatial axis:

=================  ==============================  ======================================
field              item                            batch
=================  ==============================  ======================================
``image``          ``(C, D, H, W)`` float32        ``(N, C, D, H, W)`` float32
``gt_mask``        ``(D, H, W)`` bool              ``(N, D, H, W)`` bool
``anomaly_map``    ``(D, H, W)`` float32           ``(N, D, H, W)`` float32
``pred_mask``      ``(D, H, W)`` bool              ``(N, D, H, W)`` bool
``gt_label`` ...   as anomalib's images            as anomalib's images
=================  ==============================  ======================================

Everything downstream that reads fields by name (anomalib's ``PostProcessor``, ``Evaluator`` metrics, Lightning's
device transfer) works on them unchanged. A volume's intensities are those of its file (one channel), or z-scored
within its foreground (``normalisation="zscore"``, the authors' brain-MRI preparation): the localiser's 3-D model
takes them as they come (no [0, 1] mapping).

:class:`VolumeDataset` reads a samples table (anomalib's columns) of ``.npy`` / NIfTI volumes and masks;
:class:`VolumeDataModule` is an :class:`~anomalib.data.AnomalibDataModule` whose subclasses only return that table
(:meth:`VolumeDataModule.samples`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from anomalib import TaskType
from anomalib.data import AnomalibDataModule
from anomalib.data.dataclasses.generic import BatchIterateMixin, _ImageInputFields
from anomalib.data.dataclasses.torch.base import Batch, DatasetItem
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode
from anomalib.data.validators.torch.image import ImageBatchValidator, ImageValidator
from pandas import DataFrame
from scipy import ndimage
from torch.utils.data import default_collate
from torchvision.tv_tensors import Image, Mask

from anomalib_medical.data.utils.volume_reader import read_volume

__all__ = [
    "SAMPLES_COLUMNS",
    "Normalisation",
    "VolumeAugmentation",
    "VolumeBatch",
    "VolumeDataModule",
    "VolumeDataset",
    "VolumeItem",
    "zscore_in_foreground",
]

#: Columns a samples table must have (anomalib's; ``make_samples_dataframe`` builds them).
SAMPLES_COLUMNS: tuple[str, ...] = ("image_path", "label", "label_index", "mask_path", "split")

Normalisation = Literal["none", "zscore"]

#: An augmentation of a volume ``(C, D, H, W)`` and its mask ``(D, H, W)``, returning both.
VolumeAugmentation = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _spatial(name: str, tensor: torch.Tensor, ranks: set[int], layout: str, *, channel_at: int | None) -> torch.Tensor:
    """Check a mask-like tensor's rank, squeezing a single channel at ``channel_at`` to ``layout``."""
    if not isinstance(tensor, torch.Tensor):
        msg = f"{name} must be a torch.Tensor, got {type(tensor)}."
        raise TypeError(msg)
    if tensor.ndim not in ranks:
        msg = f"{name} of a volume must have shape {layout} (or with a channel of 1), got shape {tuple(tensor.shape)}."
        raise ValueError(msg)
    if channel_at is not None and tensor.ndim == max(ranks):
        if tensor.shape[channel_at] != 1:
            msg = f"{name} of a volume must have 1 channel, got shape {tuple(tensor.shape)}."
            raise ValueError(msg)
        tensor = tensor.squeeze(channel_at)
    return tensor


class VolumeValidator(ImageValidator):
    """Validators of one volume: image ``(C, D, H, W)``, masks and maps ``(D, H, W)``; labels as images."""

    @staticmethod
    def validate_image(image: torch.Tensor) -> Image:
        """Image ``(C, D, H, W)`` (any number of channels) as float32."""
        image = _spatial("Image", image, {4}, "(C, D, H, W)", channel_at=None)
        return Image(image, dtype=torch.float32)

    @staticmethod
    def validate_gt_mask(mask: torch.Tensor | None) -> Mask | None:
        """Mask ``(D, H, W)`` or ``(1, D, H, W)`` as bool ``(D, H, W)``."""
        if mask is None:
            return None
        return Mask(_spatial("Mask", mask, {3, 4}, "(D, H, W)", channel_at=0), dtype=torch.bool)

    @staticmethod
    def validate_anomaly_map(anomaly_map: torch.Tensor | None) -> Mask | None:
        """Anomaly map ``(D, H, W)`` or ``(1, D, H, W)`` as float32 ``(D, H, W)``."""
        if anomaly_map is None:
            return None
        return Mask(_spatial("Anomaly map", anomaly_map, {3, 4}, "(D, H, W)", channel_at=0), dtype=torch.float32)

    @staticmethod
    def validate_pred_mask(pred_mask: torch.Tensor | None) -> Mask | None:
        """Predicted mask, as ``gt_mask``."""
        return VolumeValidator.validate_gt_mask(pred_mask)


class VolumeBatchValidator(ImageBatchValidator):
    """Validators of a batch of volumes: images ``(N, C, D, H, W)``, masks and maps ``(N, D, H, W)``."""

    @staticmethod
    def validate_image(image: torch.Tensor) -> Image:
        """Images ``(N, C, D, H, W)`` (a single ``(C, D, H, W)`` gets a batch axis) as float32."""
        image = _spatial("Image", image, {4, 5}, "(N, C, D, H, W)", channel_at=None)
        return Image(image if image.ndim == 5 else image.unsqueeze(0), dtype=torch.float32)

    @staticmethod
    def validate_gt_mask(gt_mask: torch.Tensor | None) -> Mask | None:
        """Masks ``(N, D, H, W)`` or ``(N, 1, D, H, W)`` as bool ``(N, D, H, W)``."""
        if gt_mask is None:
            return None
        return Mask(_spatial("Mask", gt_mask, {4, 5}, "(N, D, H, W)", channel_at=1), dtype=torch.bool)

    @staticmethod
    def validate_anomaly_map(anomaly_map: torch.Tensor | None) -> Mask | None:
        """Anomaly maps ``(N, D, H, W)`` or ``(N, 1, D, H, W)`` as float32 ``(N, D, H, W)``."""
        if anomaly_map is None:
            return None
        anomaly_map = torch.as_tensor(anomaly_map)
        return Mask(_spatial("Anomaly map", anomaly_map, {4, 5}, "(N, D, H, W)", channel_at=1), dtype=torch.float32)

    @staticmethod
    def validate_pred_mask(pred_mask: torch.Tensor | None) -> Mask | None:
        """Predicted masks, as ``gt_mask``."""
        return VolumeBatchValidator.validate_gt_mask(pred_mask)


@dataclass
class VolumeItem(VolumeValidator, _ImageInputFields[str], DatasetItem[Image]):
    """One volume: anomalib's item fields with volume shapes (see the module's table).

    ``image``, ``gt_label``, ``gt_mask``, ``image_path``, ``mask_path`` and the prediction fields.
    """


@dataclass
class VolumeBatch(BatchIterateMixin[VolumeItem], VolumeBatchValidator, _ImageInputFields[list[str]], Batch[Image]):
    """A batch of volumes: anomalib's batch fields with volume shapes (see the module's table).

    Iterating gives :class:`VolumeItem` objects; ``update`` and dictionary access work as for ``ImageBatch``.
    """

    item_class: ClassVar[Callable] = VolumeItem

    @classmethod
    def collate(cls, items: list[VolumeItem]) -> VolumeBatch:
        """Stack items into a batch; volumes of different shapes raise instead of being resized.

        Raises:
            ValueError: If the volumes differ in shape (naming the first two files that differ).

        """
        first = items[0]
        for item in items[1:]:
            if item.image.shape != first.image.shape:
                msg = (
                    f"Volumes of one batch must have the same shape: {first.image_path} has "
                    f"{tuple(first.image.shape)}, {item.image_path} has {tuple(item.image.shape)}. Resample or pad "
                    "them to one shape when preparing the data set, or use a batch size of 1."
                )
                raise ValueError(msg)
        keys = [key for key, value in asdict(first).items() if value is not None]
        return cls(**{key: default_collate([getattr(item, key) for item in items]) for key in keys})


def zscore_in_foreground(volume: np.ndarray) -> np.ndarray:
    """Z-score a volume within its foreground ``binary_fill_holes(v != 0)``, background set to 0 (authors' rule).

    Raises:
        ValueError: If the volume has no non-zero voxel.

    """
    foreground = ndimage.binary_fill_holes(volume != 0)
    values = volume[foreground]
    if values.size == 0:
        msg = "cannot z-score a volume without non-zero voxels"
        raise ValueError(msg)
    std = float(values.std())
    out = np.zeros_like(volume, dtype=np.float32)
    out[foreground] = (values - values.mean()) / (std if std > 0 else 1.0)
    return out


class VolumeDataset(AnomalibDataset):
    """An anomalib dataset over a samples table of volumes (``.npy``, ``.nii``, ``.nii.gz``).

    Each item is a :class:`VolumeItem`: the volume ``(1, D, H, W)`` (float32, full precision), its mask
    ``(D, H, W)`` (non-zero voxels of ``mask_path`` are abnormal; zeros for normal volumes of a segmentation
    task), its label and paths.

    Args:
        name: Data set name (logs and result folders).
        samples: Samples table with the columns of :data:`SAMPLES_COLUMNS` and ``attrs["task"]`` (as built by
            :func:`~anomalib_medical.data.utils.images.make_samples_dataframe`).
        augmentations: Called as ``augmentations(volume, mask)`` on tensors ``(1, D, H, W)``, ``(D, H, W)``
            and returning both (torchvision's 2-D transforms do not apply to volumes).
        normalisation: ``"none"`` (intensities as stored) or ``"zscore"`` (:func:`zscore_in_foreground`).

    Raises:
        ValueError: If a column is missing or ``normalisation`` is unknown.

    """

    def __init__(
        self,
        name: str,
        samples: DataFrame,
        augmentations: VolumeAugmentation | None = None,
        normalisation: Normalisation = "none",
    ) -> None:
        super().__init__(augmentations=augmentations)
        missing = [column for column in SAMPLES_COLUMNS if column not in samples.columns]
        if missing:
            msg = f"{name}: the samples table lacks the column(s) {missing} (has {list(samples.columns)})."
            raise ValueError(msg)
        if normalisation not in {"none", "zscore"}:
            msg = f"normalisation must be 'none' or 'zscore', got {normalisation!r}"
            raise ValueError(msg)
        self._name = name
        self.normalisation = normalisation
        self.samples = samples

    @property
    def name(self) -> str:
        """Data set name."""
        return self._name

    def read(self, path: str) -> np.ndarray:
        """Read one volume ``(D, H, W)`` as float32, normalised as configured."""
        volume = read_volume(path)
        if self.normalisation == "zscore":
            try:
                volume = zscore_in_foreground(volume)
            except ValueError as error:
                msg = f"{path}: {error}"
                raise ValueError(msg) from error
        return volume

    def __getitem__(self, index: int) -> VolumeItem:
        """Load one volume, its mask (segmentation task) and label.

        Raises:
            FileNotFoundError: If an abnormal volume of a segmentation task has no mask file.
            ValueError: If a mask's shape differs from its volume's (naming both files).

        """
        row = self.samples.iloc[index]
        image = torch.from_numpy(np.ascontiguousarray(self.read(row.image_path), dtype=np.float32)).unsqueeze(0)
        gt_mask = None
        if self.task == TaskType.SEGMENTATION:
            gt_mask = torch.zeros(image.shape[1:], dtype=torch.bool)
            if row.label_index == LabelName.ABNORMAL:
                gt_mask = torch.from_numpy(_read_mask(row.mask_path, row.image_path, tuple(image.shape[1:])))
        if self.augmentations is not None:
            mask = gt_mask if gt_mask is not None else torch.zeros(image.shape[1:], dtype=torch.bool)
            image, mask = self.augmentations(image, mask)
            gt_mask = mask if gt_mask is not None else None
        gt_label = None if row.label_index == LabelName.UNKNOWN else torch.tensor(row.label_index)
        return VolumeItem(
            image=image, gt_mask=gt_mask, gt_label=gt_label, image_path=row.image_path, mask_path=row.mask_path
        )

    @property
    def collate_fn(self) -> Callable[[list[VolumeItem]], VolumeBatch]:
        """Collate into a :class:`VolumeBatch`."""
        return VolumeBatch.collate


def _read_mask(mask_path: str, image_path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read a voxel mask (non-zero = abnormal), checking that it exists and matches the volume's shape."""
    if not mask_path or not Path(mask_path).is_file():
        msg = f"Abnormal volume {image_path} has no mask file (mask_path={mask_path!r})."
        raise FileNotFoundError(msg)
    mask = read_volume(mask_path) != 0
    if mask.shape != shape:
        msg = f"Mask {mask_path} has shape {mask.shape} but its volume {image_path} has shape {shape}."
        raise ValueError(msg)
    return mask


class VolumeDataModule(AnomalibDataModule, ABC):
    """Base datamodule of volume data sets: a subclass returns the samples table of every split.

    The splits come from the table's ``split`` column (``"train"``, ``"val"``, ``"test"``); anomalib's split modes
    then apply as for images (e.g. ``val_split_mode="from_test"`` moves half of the test volumes, normal and
    abnormal, into validation). The localiser validates on synthetic anomalies of the validation split's normal
    volumes, so that split should hold some.

    Args:
        train_batch_size: Training batch size (authors' brain MRI: 8).
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        train_augmentations: Augmentation of training volumes (see :class:`VolumeDataset`).
        val_augmentations: Augmentation of validation volumes.
        test_augmentations: Augmentation of test volumes.
        augmentations: Augmentation for every split without its own.
        normalisation: Intensities as stored (``"none"``) or z-scored within each volume's foreground.
        val_split_mode: anomalib's validation split mode.
        val_split_ratio: Fraction moved into validation by ``val_split_mode``.
        test_split_mode: anomalib's test split mode.
        test_split_ratio: Fraction of normal training volumes moved into the test split when it has none.
        seed: Seed of the split draws.

    """

    def __init__(
        self,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        train_augmentations: VolumeAugmentation | None = None,
        val_augmentations: VolumeAugmentation | None = None,
        test_augmentations: VolumeAugmentation | None = None,
        augmentations: VolumeAugmentation | None = None,
        normalisation: Normalisation = "none",
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_DIR,
        val_split_ratio: float = 0.5,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            seed=seed,
        )
        self.normalisation = normalisation

    @abstractmethod
    def samples(self) -> DataFrame:
        """Return the samples table of all splits (columns :data:`SAMPLES_COLUMNS`, ``attrs["task"]``).

        Generate or prepare the data here (or in ``prepare_data``) if needed; paths must exist.
        """

    def _setup(self, _stage: str | None = None) -> None:
        """Build the train, val and test :class:`VolumeDataset` of the samples table."""
        samples = self.samples()
        for split in Split:
            subset = samples[samples.split == split.value].reset_index(drop=True)
            subset.attrs = dict(samples.attrs)
            setattr(self, f"{split.value}_data", VolumeDataset(self.name, subset, normalisation=self.normalisation))

    def _update_augmentations(self) -> None:
        """Give each split its augmentation (anomalib's version adds the model's 2-D resize, not for volumes)."""
        for split in ("train", "val", "test"):
            subset = getattr(self, f"{split}_data", None)
            if subset is not None:
                subset.augmentations = getattr(self, f"{split}_augmentations", None)
