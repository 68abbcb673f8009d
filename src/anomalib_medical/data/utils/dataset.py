"""anomalib datasets that read their images at full depth.

:class:`FullDepthDataset` is an :class:`~anomalib.data.datasets.base.image.AnomalibDataset` whose items are read
with :func:`~anomalib_medical.data.utils.reader.read_image_tensor` instead of anomalib's 8-bit RGB reader; every
datamodule of this package builds its datasets on it. :class:`RadiographPredictDataset` is the same for
``anomalib predict``: a file or a folder of DICOMs, 16-bit PNGs, TIFFs or JPEGs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from anomalib import TaskType
from anomalib.data import ImageBatch, ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import LabelName
from anomalib.data.utils.image import read_mask
from torchvision.transforms.v2 import Transform
from torchvision.tv_tensors import Mask

from anomalib_medical.data.utils.dicom import IntensityFallback
from anomalib_medical.data.utils.images import InvalidImageError, list_images
from anomalib_medical.data.utils.reader import READABLE_SUFFIXES, read_image_tensor


class FullDepthDataset(AnomalibDataset):
    """An anomalib dataset over a samples table whose images are read at full depth (16-bit, float, DICOM).

    Subclasses set ``samples`` (``image_path``, ``mask_path``, ``label_index``, ...) as for anomalib's datasets.
    Masks are read with anomalib's reader (any non-zero pixel is abnormal).

    Args:
        augmentations: Transforms applied to each image (and mask).
        apply_window: For DICOM, apply the file's VOI LUT or window when it has one.
        intensity_fallback: For DICOM without a window: ``"minmax"`` or ``"bit_depth"``.

    """

    def __init__(
        self,
        augmentations: Transform | None = None,
        apply_window: bool = True,
        intensity_fallback: IntensityFallback = "minmax",
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.apply_window = apply_window
        self.intensity_fallback = intensity_fallback

    def __getitem__(self, index: int) -> ImageItem:
        """Load one sample: image at full depth, mask (zeros for normal images of a segmentation task), label."""
        row = self.samples.iloc[index]
        image = read_image_tensor(row.image_path, apply_window=self.apply_window, fallback=self.intensity_fallback)
        gt_mask = None
        if self.task == TaskType.SEGMENTATION:
            if row.label_index == LabelName.NORMAL:
                gt_mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
            elif row.label_index == LabelName.ABNORMAL:
                gt_mask = _read_mask(row.mask_path, row.image_path)
        if self.augmentations:
            if self.task == TaskType.SEGMENTATION:
                mask = gt_mask if gt_mask is not None else Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
                image, mask = self.augmentations(image, mask)
                gt_mask = mask if gt_mask is not None else None
            else:
                image = self.augmentations(image)
        gt_label = None if row.label_index == LabelName.UNKNOWN else torch.tensor(row.label_index)
        return ImageItem(
            image=image, gt_mask=gt_mask, gt_label=gt_label, image_path=row.image_path, mask_path=row.mask_path
        )


class RadiographPredictDataset(torch.utils.data.Dataset):
    r"""Images to score with ``anomalib predict``: one file or a folder (searched recursively) at full depth.

    anomalib's own predict dataset reads 8-bit RGB and does not list DICOMs; this one reads every suffix in
    :data:`~anomalib_medical.data.utils.reader.READABLE_SUFFIXES` through the package's reader::

        anomalib predict --model Squid --ckpt_path model.ckpt --config <training config> \\
            --data RadiographPredictDataset --data.path scans/

    Args:
        path: An image file (DICOM, PNG, TIFF, JPEG, BMP) or a folder of them.
        transform: Transform applied to each image (the model's pre-processor already resizes).
        apply_window: For DICOM, apply the file's VOI LUT or window when it has one.
        intensity_fallback: For DICOM without a window: ``"minmax"`` or ``"bit_depth"``.

    Raises:
        FileNotFoundError: If ``path`` does not exist or the folder holds no readable image.
        InvalidImageError: If ``path`` is a file with a suffix the reader does not know.

    """

    def __init__(
        self,
        path: str | Path,
        transform: Transform | None = None,
        apply_window: bool = True,
        intensity_fallback: IntensityFallback = "minmax",
    ) -> None:
        super().__init__()
        path = Path(path)
        if path.is_dir():
            self.image_paths = list_images(path, extensions=READABLE_SUFFIXES, recursive=True)
        elif path.is_file():
            if path.suffix.lower() not in READABLE_SUFFIXES:
                raise InvalidImageError(path, f"unknown suffix; readable: {', '.join(READABLE_SUFFIXES)}")
            self.image_paths = [path]
        else:
            msg = f"RadiographPredictDataset: {path} does not exist."
            raise FileNotFoundError(msg)
        self.transform = transform
        self.apply_window = apply_window
        self.intensity_fallback = intensity_fallback

    def __len__(self) -> int:
        """Return the number of images."""
        return len(self.image_paths)

    def __getitem__(self, index: int) -> ImageItem:
        """Read one image at full depth."""
        path = self.image_paths[index]
        image = read_image_tensor(path, apply_window=self.apply_window, fallback=self.intensity_fallback)
        if self.transform is not None:
            image = self.transform(image)
        return ImageItem(image=image, image_path=str(path))

    @property
    def collate_fn(self) -> Callable[[list[ImageItem]], ImageBatch]:
        """Collate items into an anomalib ``ImageBatch`` (the CLI wraps the dataset in a loader with it)."""
        return ImageBatch.collate


def _read_mask(mask_path: str, image_path: str) -> Mask:
    """Read a ground-truth mask, naming the image when the file is missing or unreadable."""
    if not mask_path or not Path(mask_path).is_file():
        msg = f"Abnormal image {image_path} has no mask file (mask_path={mask_path!r})."
        raise FileNotFoundError(msg)
    try:
        return read_mask(mask_path, as_tensor=True)
    except OSError as error:
        raise InvalidImageError(mask_path, f"mask cannot be decoded ({error})") from error
