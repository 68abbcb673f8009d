r"""Your own volumes in folders: anomalib's ``Folder`` layout for 3-D scans (``.npy``, ``.nii``, ``.nii.gz``).

:class:`VolumeFolder` takes the folder arguments of anomalib's :class:`~anomalib.data.Folder` (normal volumes
for training, optional abnormal, normal-test and mask folders) and serves :class:`~anomalib_medical.data.utils.
volume.VolumeBatch` batches::

    anomalib train --model SyntheticTaskLocaliser --model.spatial_dims 3 --data VolumeFolder \
        --data.name my_mri --data.root ./my_mri --data.normal_dir normal --data.abnormal_dir abnormal \
        --data.mask_dir masks --data.normalisation zscore

A mask belongs to the abnormal volume whose name (without the volume suffix) it equals or extends after a
separator (``case1.nii.gz`` takes ``case1.nii.gz``, ``case1_seg.nii.gz`` or ``case1-mask.npy``); every abnormal
volume needs exactly one mask when ``mask_dir`` is given. Without ``normal_test_dir``, anomalib's split modes
move a fraction of the normal volumes into the test split (``test_split_ratio``), and validation takes half of
the test volumes, normal and abnormal (``val_split_mode="from_test"``), as ``Folder`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from pandas import DataFrame

from anomalib_medical.data.utils.images import is_os_metadata, make_samples_dataframe
from anomalib_medical.data.utils.volume import Normalisation, VolumeAugmentation, VolumeDataModule
from anomalib_medical.data.utils.volume_reader import VOLUME_SUFFIXES, volume_suffix

__all__ = ["VolumeFolder", "list_volumes", "match_masks"]

PathOrPaths = str | Path | Sequence[str | Path]
_SEPARATORS = ("_", "-", ".")


def list_volumes(directory: str | Path) -> list[Path]:
    """List the volume files (``.npy``, ``.nii``, ``.nii.gz``) of a folder, sorted; OS metadata ignored.

    Raises:
        FileNotFoundError: If the folder does not exist or holds no volume (naming what it holds instead).

    """
    directory = Path(directory)
    if not directory.is_dir():
        msg = f"Volume folder {directory} does not exist or is not a folder."
        raise FileNotFoundError(msg)
    files = [path for path in sorted(directory.iterdir()) if path.is_file() and not is_os_metadata(path.name)]
    volumes = [path for path in files if volume_suffix(path) is not None]
    if not volumes:
        shown = ", ".join(path.name for path in files[:3]) or "nothing"
        msg = f"Volume folder {directory} holds no volume ({', '.join(VOLUME_SUFFIXES)}); it holds {shown}."
        raise FileNotFoundError(msg)
    return volumes


def _stem(path: Path) -> str:
    suffix = volume_suffix(path) or ""
    return path.name[: len(path.name) - len(suffix)]


def match_masks(volumes: Sequence[Path], masks: Sequence[Path]) -> list[Path]:
    """Return the mask of each volume: the one whose stem equals the volume's or extends it after ``_``, ``-``, ``.``.

    Raises:
        ValueError: If a volume has no mask or several (naming the volume and the candidates).

    """
    matched = []
    for volume in volumes:
        stem = _stem(volume)
        prefixes = tuple(stem + separator for separator in _SEPARATORS)
        candidates = [mask for mask in masks if _stem(mask) == stem or _stem(mask).startswith(prefixes)]
        exact = [mask for mask in candidates if _stem(mask) == stem]
        if len(exact) == 1 or len(candidates) == 1:
            matched.append(exact[0] if len(exact) == 1 else candidates[0])
            continue
        found = ", ".join(mask.name for mask in candidates) or "none"
        msg = f"Abnormal volume {volume} needs exactly one mask named {stem}[_-.]*; found {found}."
        raise ValueError(msg)
    return matched


class VolumeFolder(VolumeDataModule):
    """Volumes in normal / abnormal / mask folders, as anomalib's ``Folder`` (see the module docstring).

    Args:
        name: Data set name (logs and result folders).
        normal_dir: Folder(s) of normal volumes (training; some move to test/validation, see the split modes).
        root: Folder the other paths are relative to.
        abnormal_dir: Folder(s) of abnormal volumes (test).
        normal_test_dir: Folder(s) of normal test volumes.
        mask_dir: Folder(s) of voxel masks of the abnormal volumes (non-zero = abnormal).
        normalisation: ``"none"`` (as stored) or ``"zscore"`` (within each volume's non-zero foreground, the
            authors' brain-MRI rule; the localiser's 3-D task space).
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        train_augmentations: Augmentation of training volumes ``f(volume, mask) -> (volume, mask)``.
        val_augmentations: Augmentation of validation volumes.
        test_augmentations: Augmentation of test volumes.
        augmentations: Augmentation for every split without its own.
        test_split_mode: anomalib's test split mode (``from_dir``: normal test volumes from ``normal_test_dir``,
            or ``test_split_ratio`` of the normal ones).
        test_split_ratio: Fraction of normal volumes moved to test when there is no normal test folder.
        val_split_mode: anomalib's validation split mode (``from_test``: half of the test split).
        val_split_ratio: Fraction moved into validation.
        seed: Seed of the split draws.

    Raises:
        FileNotFoundError: If a folder is missing or holds no volume.
        ValueError: If an abnormal volume has no mask, or several, in ``mask_dir``.

    """

    def __init__(
        self,
        name: str,
        normal_dir: PathOrPaths,
        root: str | Path | None = None,
        abnormal_dir: PathOrPaths | None = None,
        normal_test_dir: PathOrPaths | None = None,
        mask_dir: PathOrPaths | None = None,
        normalisation: Normalisation = "none",
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        train_augmentations: VolumeAugmentation | None = None,
        val_augmentations: VolumeAugmentation | None = None,
        test_augmentations: VolumeAugmentation | None = None,
        augmentations: VolumeAugmentation | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_TEST,
        val_split_ratio: float = 0.5,
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
            normalisation=normalisation,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            seed=seed,
        )
        self._name = name
        self.root = Path(root) if root is not None else None
        self.normal_dir = normal_dir
        self.abnormal_dir = abnormal_dir
        self.normal_test_dir = normal_test_dir
        self.mask_dir = mask_dir

    @property
    def name(self) -> str:
        """Data set name."""
        return self._name

    def _folders(self, paths: PathOrPaths | None) -> list[Path]:
        if paths is None:
            return []
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        return [self.root / path if self.root is not None else Path(path) for path in paths]

    def _volumes(self, paths: PathOrPaths | None) -> list[Path]:
        return [volume for folder in self._folders(paths) for volume in list_volumes(folder)]

    def samples(self) -> DataFrame:
        """Return the table: normal volumes in train, abnormal and normal-test volumes in test, masks matched."""
        normal, abnormal = self._volumes(self.normal_dir), self._volumes(self.abnormal_dir)
        normal_test = self._volumes(self.normal_test_dir)
        masks = match_masks(abnormal, self._volumes(self.mask_dir)) if self.mask_dir is not None else []
        return make_samples_dataframe(
            image_paths=[*normal, *abnormal, *normal_test],
            label_indices=[0] * len(normal) + [1] * len(abnormal) + [0] * len(normal_test),
            splits=[Split.TRAIN] * len(normal) + [Split.TEST] * (len(abnormal) + len(normal_test)),
            mask_paths=[""] * len(normal) + (masks or [""] * len(abnormal)) + [""] * len(normal_test),
        )
