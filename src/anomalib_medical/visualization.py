"""anomalib's image visualiser, showing radiographs as the model read them (DICOM, 16-bit) instead of re-reading them.

anomalib's :class:`~anomalib.visualization.ImageVisualizer` re-opens every input file with Pillow as 8-bit RGB to
draw it: a DICOM cannot be opened at all (``anomalib predict`` on DICOMs crashes in the visualiser) and a 16-bit
PNG is drawn saturated. :class:`RadiographVisualizer` draws the file read by
:func:`~anomalib_medical.data.utils.reader.read_image_tensor` (full resolution, full depth, DICOM display
pipeline) and is otherwise anomalib's: same fields, overlays, sizes and output file names (a DICOM input
``scan.dcm`` gives ``scan.dcm.png``). It is the default visualiser of this package's models.

When the batch carries reconstructions (Squid and SimSID add ``reconstruction`` and, with distillation,
``teacher_reconstruction`` to test and predict batches), each is drawn as one more panel to the right of anomalib's,
titled "Reconstruction" / "Teacher Reconstruction", at the model's input resolution resized to ``field_size``.

Volumes (:class:`~anomalib_medical.data.utils.volume.VolumeBatch`): each volume is saved as a montage
(:func:`volume_montage`), one row per slice along ``D`` drawn with anomalib's item visualiser (the same fields and
overlays: image, ground-truth mask, image + anomaly map, image + predicted mask), the intensities min-max scaled
over the whole volume; the slices are spread evenly over the extent of the ground-truth mask (or, without one, of
the volume's non-zero voxels), its first and last slices included. ``brain.nii.gz`` gives ``brain.nii.gz.png``
under ``images/``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from anomalib.data import ImageItem
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image, visualize_image
from anomalib.visualization.image.item_visualizer import DEFAULT_TEXT_CONFIG, visualize_image_item
from PIL import Image

from anomalib_medical.data.utils.reader import DICOM_SUFFIXES, read_image_tensor
from anomalib_medical.data.utils.volume import VolumeBatch, VolumeItem

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from anomalib.models import AnomalibModule
    from lightning.pytorch import Trainer

# Extra batch fields drawn as panels after anomalib's, with their titles (see the module docstring).
RECONSTRUCTION_PANELS = {"reconstruction": "Reconstruction", "teacher_reconstruction": "Teacher Reconstruction"}
# zlib level of the saved PNGs (Pillow's default is 6). A 1536 x 256 six-panel picture: 16 ms and 91 KiB at
# level 1 against 31 ms and 72 KiB at 6; the main job saves 500 of them (about 15 s at level 6 on a slow core).
PNG_COMPRESS_LEVEL = 1


class RadiographVisualizer(ImageVisualizer):
    """Draw predictions over the input read at full depth, volumes as slice montages (see the module docstring).

    Args:
        num_slices: Rows of a volume's montage.
        **kwargs: anomalib's :class:`~anomalib.visualization.ImageVisualizer` arguments.

    """

    def __init__(self, num_slices: int = 6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_slices = num_slices

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: AnomalibModule,
        outputs: ImageBatch,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save one picture per item of the batch under ``<default_root_dir>/images``, named as anomalib does."""
        del pl_module, outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(batch, VolumeBatch):
            for item in batch:
                picture = volume_montage(item, self.num_slices, self._item_options())
                filename = generate_output_filename(
                    input_path=item.image_path or "",
                    output_path=self.output_dir,
                    dataset_name=getattr(datamodule, "name", None),
                    category=getattr(datamodule, "category", None),
                )
                picture.save(filename.with_name(f"{filename.name}.png"), compress_level=PNG_COMPRESS_LEVEL)
            return
        reconstructions = {
            title: value
            for field, title in RECONSTRUCTION_PANELS.items()
            if (value := getattr(batch, field, None)) is not None
        }
        for index, item in enumerate(batch):
            picture = visualize_image_item(_displayed(item), **self._item_options())
            panels = {title: value[index] for title, value in reconstructions.items()}
            if picture is not None and panels:
                picture = self._with_panels(picture, panels)
            if picture is not None:
                filename = generate_output_filename(
                    input_path=item.image_path or "",
                    output_path=self.output_dir,
                    dataset_name=getattr(datamodule, "name", None),
                    category=getattr(datamodule, "category", None),
                )
                if filename.suffix.lower() in DICOM_SUFFIXES:  # Pillow cannot write DICOM: scan.dcm -> scan.dcm.png
                    filename = filename.with_name(f"{filename.name}.png")
                picture.save(filename, compress_level=PNG_COMPRESS_LEVEL)  # other formats ignore it

    def _item_options(self) -> dict[str, Any]:
        """Keyword arguments of anomalib's ``visualize_image_item`` from this visualiser's settings."""
        return {
            "fields": self.fields,
            "overlay_fields": self.overlay_fields,
            "field_size": self.field_size,
            "fields_config": self.fields_config,
            "overlay_fields_config": self.overlay_fields_config,
            "text_config": self.text_config,
        }

    def _with_panels(self, picture: Image.Image, panels: dict[str, torch.Tensor]) -> Image.Image:
        """Append one ``field_size`` panel per image ``(C, H, W)`` in ``[0, 1]``, titled as anomalib titles fields."""
        text_config = {**DEFAULT_TEXT_CONFIG, **(self.text_config or {})}
        add_text = text_config.pop("enable", True)
        images = [picture]
        for title, image in panels.items():
            panel = visualize_image(image.detach().float().clamp(0, 1).cpu()).convert("RGB").resize(self.field_size)
            images.append(add_text_to_image(panel, title, **text_config) if add_text else panel)
        width = sum(image.width for image in images)
        row = Image.new("RGB", (width, picture.height), color="white")
        left = 0
        for image in images:
            row.paste(image, (left, 0))
            left += image.width
        return row


def montage_slices(item: VolumeItem, num_slices: int) -> list[int]:
    """Return the indices along ``D`` of the slices to show: spread over the mask's extent, else the volume's."""
    image = item.image.detach().cpu()
    region = item.gt_mask if item.gt_mask is not None and bool(item.gt_mask.any()) else image.abs().sum(0) > 0
    occupied = torch.nonzero(region.flatten(1).any(dim=1)).flatten()
    first, last = (int(occupied[0]), int(occupied[-1])) if len(occupied) else (0, image.shape[1] - 1)
    return sorted({round(float(d)) for d in np.linspace(first, last, min(num_slices, last - first + 1))})


def volume_montage(item: VolumeItem, num_slices: int, options: dict[str, Any]) -> Image.Image:
    """One picture of a volume: a row per slice (:func:`montage_slices`), each drawn by ``visualize_image_item``.

    Args:
        item: The volume with its predictions.
        num_slices: Number of rows.
        options: ``visualize_image_item`` keyword arguments (fields, overlays, sizes, text).

    """
    volume = item.image.detach().float().cpu().mean(dim=0)
    low, high = volume.min(), volume.max()
    scaled = (volume - low) / (high - low) if high > low else torch.zeros_like(volume)
    rows = []
    for index in montage_slices(item, num_slices):
        fields = {
            name: value[index].detach().cpu()
            for name in ("gt_mask", "anomaly_map", "pred_mask")
            if (value := getattr(item, name)) is not None
        }
        picture = visualize_image_item(
            ImageItem(image=scaled[index].expand(3, -1, -1), gt_label=item.gt_label, **fields), **options
        )
        text_config = {**DEFAULT_TEXT_CONFIG, **options["text_config"]}
        if text_config.pop("enable", True):
            picture = add_text_to_image(picture, f"slice {index}", **{**text_config, "position": (10, 40)})
        rows.append(picture)
    montage = Image.new("RGB", (max(row.width for row in rows), sum(row.height for row in rows)), color="white")
    top = 0
    for row in rows:
        montage.paste(row, (0, top))
        top += row.height
    return montage


def _displayed(item: ImageItem) -> ImageItem:
    """Copy ``item`` with its file read at full depth as the image (the batch image when there is no file)."""
    shown = copy.copy(item)
    if item.image_path and Path(item.image_path).is_file():
        shown.image = read_image_tensor(item.image_path)
    shown.image_path = None
    return shown


class RadiographVisualizerDefault:
    """Mixin for an ``AnomalibModule``: ``visualizer=True`` gives a :class:`RadiographVisualizer`."""

    @classmethod
    def configure_visualizer(cls) -> RadiographVisualizer:
        """Return the default visualiser: anomalib's, drawing inputs read at full depth."""
        return RadiographVisualizer()
