r"""Your own radiographs in folders: anomalib's ``Folder`` layout, read at full depth (DICOM, 16-bit PNG/TIFF).

anomalib's :class:`~anomalib.data.Folder` reads every image as 8-bit RGB (a 16-bit radiograph saturates) and
does not list DICOM files. :class:`RadiographFolder` takes the same arguments and folder layout (normal images
for training, optional abnormal, normal-test and mask folders) and reads every file with
:func:`~anomalib_medical.data.utils.reader.read_image_tensor`::

    anomalib train --model Squid --data RadiographFolder --data.name my_cxr --data.root ./my_cxr \\
        --data.normal_dir normal --data.abnormal_dir abnormal --data.mask_dir masks

Masks are images whose non-zero pixels are abnormal, matched to abnormal images as anomalib's ``Folder`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomalib.data import Folder
from anomalib.data.datasets.image.folder import make_folder_dataset
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from torchvision.transforms.v2 import Transform

from anomalib_medical.data.utils.dataset import FullDepthDataset
from anomalib_medical.data.utils.dicom import IntensityFallback
from anomalib_medical.data.utils.reader import READABLE_SUFFIXES

PathOrPaths = str | Path | Sequence[str | Path]


class RadiographFolderDataset(FullDepthDataset):
    """One split of a :class:`RadiographFolder` (anomalib's ``make_folder_dataset`` table, full-depth reading).

    Args:
        name: Data set name.
        normal_dir: Folder(s) of normal images.
        root: Folder the other paths are relative to.
        abnormal_dir: Folder(s) of abnormal images.
        normal_test_dir: Folder(s) of normal test images.
        mask_dir: Folder(s) of masks of the abnormal images.
        split: ``"train"``, ``"test"`` or ``None`` for both.
        extensions: File suffixes to include.
        augmentations: Transforms applied to each image (and mask).
        apply_window: For DICOM, apply the file's VOI LUT or window when it has one.
        intensity_fallback: For DICOM without a window: ``"minmax"`` or ``"bit_depth"``.

    """

    def __init__(
        self,
        name: str,
        normal_dir: PathOrPaths,
        root: str | Path | None = None,
        abnormal_dir: PathOrPaths | None = None,
        normal_test_dir: PathOrPaths | None = None,
        mask_dir: PathOrPaths | None = None,
        split: str | Split | None = None,
        extensions: tuple[str, ...] = READABLE_SUFFIXES,
        augmentations: Transform | None = None,
        apply_window: bool = True,
        intensity_fallback: IntensityFallback = "minmax",
    ) -> None:
        super().__init__(augmentations, apply_window, intensity_fallback)
        self._name = name
        self.samples = make_folder_dataset(
            root=root,
            normal_dir=normal_dir,
            abnormal_dir=abnormal_dir,
            normal_test_dir=normal_test_dir,
            mask_dir=mask_dir,
            split=split,
            extensions=extensions,
        )

    @property
    def name(self) -> str:
        """Data set name."""
        return self._name


class RadiographFolder(Folder):
    """anomalib's ``Folder`` datamodule for radiographs: same arguments and layout, full-depth reading, DICOM.

    Args:
        name: Data set name (result folders are named after it).
        normal_dir: Folder(s) of normal images (training, and the source of normal test images unless
            ``normal_test_dir`` is given).
        root: Folder the other paths are relative to.
        abnormal_dir: Folder(s) of abnormal images (test and validation).
        normal_test_dir: Folder(s) of normal test images.
        mask_dir: Folder(s) of the abnormal images' masks.
        normal_split_ratio: Share of the normal images moved to the test split when ``normal_test_dir`` is not
            given.
        extensions: File suffixes to include (default: PNG, JPEG, BMP, TIFF and DICOM).
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        test_split_mode: How the test split is made (anomalib's ``TestSplitMode``).
        test_split_ratio: Share of training images for a synthetic test split.
        val_split_mode: How the validation split is made (anomalib's ``ValSplitMode``).
        val_split_ratio: Share of the test split moved to validation.
        seed: Seed of the random splits.
        apply_window: For DICOM, apply the file's VOI LUT or window when it has one.
        intensity_fallback: For DICOM without a window: ``"minmax"`` or ``"bit_depth"``.

    """

    def __init__(
        self,
        name: str,
        normal_dir: PathOrPaths,
        root: str | Path | None = None,
        abnormal_dir: PathOrPaths | None = None,
        normal_test_dir: PathOrPaths | None = None,
        mask_dir: PathOrPaths | None = None,
        normal_split_ratio: float = 0.2,
        extensions: tuple[str, ...] = READABLE_SUFFIXES,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        apply_window: bool = True,
        intensity_fallback: IntensityFallback = "minmax",
    ) -> None:
        super().__init__(
            name=name,
            normal_dir=normal_dir,
            root=root,
            abnormal_dir=abnormal_dir,
            normal_test_dir=normal_test_dir,
            mask_dir=mask_dir,
            normal_split_ratio=normal_split_ratio,
            extensions=tuple(extensions),  # type: ignore[arg-type]
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.apply_window = apply_window
        self.intensity_fallback = intensity_fallback

    def _setup(self, _stage: str | None = None) -> None:
        """Build the train and test datasets (anomalib then splits validation off as configured)."""
        for split in (Split.TRAIN, Split.TEST):
            dataset = RadiographFolderDataset(
                name=self.name,
                normal_dir=self.normal_dir,
                root=self.root,
                abnormal_dir=self.abnormal_dir,
                normal_test_dir=self.normal_test_dir,
                mask_dir=self.mask_dir,
                split=split,
                extensions=tuple(self.extensions),
                apply_window=self.apply_window,
                intensity_fallback=self.intensity_fallback,
            )
            setattr(self, f"{split.value}_data", dataset)
