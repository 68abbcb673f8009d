"""BraTS (brain tumour segmentation challenge) T2 volumes with whole-tumour masks: Baugh et al.'s glioma test set.

Data:
    BraTS 2017: Menze et al., IEEE TMI 34(10), 2015; Bakas et al., Scientific Data 4, 2017;
    https://www.med.upenn.edu/sbia/brats2017/registration.html. BraTS 2021: Baid et al., arXiv:2107.02314;
    https://www.synapse.org/brats2021. Skull-stripped, co-registered to SRI24 at 1 mm (240 x 240 x 155), one folder
    per subject::

        Brats17TrainingData/{HGG,LGG}/<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz       (2017)
        BraTS2021_Training_Data/<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz              (2021)

    ``root`` may be any folder above the subject folders: every folder holding a ``*_<modality>.nii[.gz]`` file is a
    subject (modalities ``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``; BraTS 2023's ``-t2w`` / ``-seg`` names are
    read too), and each must have its ``t2`` and ``seg`` files (the training data; the validation sets have no
    ``seg``).

Labels: the mask is the whole tumour, every non-zero ``seg`` label (1 necrotic core, 2 oedema, 4 enhancing; 3 from
2023), as Baugh et al. Preparation: :class:`~anomalib_medical.data.utils.brain.BrainPreprocessing` (their BraTS 2017
flip along H is our reorientation to LAS from the affine). Every subject is a test volume; with downsampling to
80 x 112 x 80 a few small tumours can vanish from the mask, and those volumes are counted normal.

Training: BraTS holds no healthy volume. ``normal=HCP(...)`` (or ``IXI``) supplies the training and validation
volumes, as in the paper (train on HCP, test on BraTS)::

    anomalib train --model SyntheticTaskLocaliser --data BraTS --data.root ./datasets/BraTS2017 \
        --data.normal HCP --data.normal.root ./datasets/HCP
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from anomalib_medical.data.utils.brain import BRAIN_INPUT_SIZE, BrainMRIDataModule, BrainSubject, missing_files_message
from anomalib_medical.data.utils.volume_reader import NIFTI_SUFFIXES, volume_suffix

__all__ = ["BRATS_MODALITIES", "BraTS", "find_brats_subjects"]

BRATS_MODALITIES: dict[str, str] = {
    "t1": "t1",
    "t1ce": "t1ce",
    "t1c": "t1ce",
    "t1n": "t1",
    "t2": "t2",
    "t2w": "t2",
    "t2f": "flair",
    "flair": "flair",
    "seg": "seg",
}
"""File name endings (after the last ``_`` or ``-``) of the BraTS releases and the modality they name."""


def _modality(path: Path) -> str | None:
    suffix = volume_suffix(path)
    if suffix not in NIFTI_SUFFIXES:
        return None
    stem = path.name[: -len(suffix)]
    return BRATS_MODALITIES.get(re.split(r"[_-]", stem)[-1].lower())


def find_brats_subjects(root: str | Path) -> list[BrainSubject]:
    """List the BraTS subjects under ``root`` with their T2 volume and segmentation.

    Raises:
        FileNotFoundError: If no subject folder is found, or a subject lacks its ``t2`` or ``seg`` file (naming the
            folder and what it holds).
        ValueError: If a folder holds two files of one modality, or two folders have the same name.

    """
    root = Path(root)
    by_folder: dict[Path, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.nii*")) if root.is_dir() else []:
        modality = _modality(path)
        if modality is not None:
            by_folder[path.parent][modality].append(path)
    if not by_folder:
        expected = "subject folders with <subject>_t2.nii.gz and <subject>_seg.nii.gz (BraTS training data)"
        raise FileNotFoundError(missing_files_message("BraTS", root, expected))
    subjects, seen = [], {}
    for folder, files in sorted(by_folder.items()):
        for modality, paths in files.items():
            if len(paths) > 1:
                msg = f"BraTS subject folder {folder} holds {len(paths)} {modality} files: {[p.name for p in paths]}"
                raise ValueError(msg)
        missing = [modality for modality in ("t2", "seg") if modality not in files]
        if missing:
            msg = (
                f"BraTS subject folder {folder} lacks its {' and '.join(missing)} file(s) (*_{missing[0]}.nii.gz); "
                f"it holds {sorted(files)}. Only the training data has segmentations."
            )
            raise FileNotFoundError(msg)
        if folder.name in seen:
            msg = f"two BraTS subject folders are named {folder.name}: {seen[folder.name]} and {folder}"
            raise ValueError(msg)
        seen[folder.name] = folder
        subjects.append(BrainSubject(subject=folder.name, image=files["t2"][0], mask=files["seg"][0]))
    return subjects


class BraTS(BrainMRIDataModule):
    """BraTS 2017 / 2021 T2 volumes with whole-tumour masks, all in test (module docstring).

    Args:
        root: Folder above the subject folders.
        normal: Datamodule of the healthy training and validation volumes (``HCP``, ``IXI``); ``None``: test only.
        downsample: 80 x 112 x 80 (the paper) or 160 x 224 x 160 at 1 mm. Defaults to ``True``.
        box_size: Size at 1 mm the brain box must fit in and is padded to (halved by ``downsample``).
            Defaults to ``(160, 224, 160)``, the authors'.
        flip_left_right: Mirror training volumes left-right with probability 0.5. Defaults to ``True``.
        cache_dir: Folder of the preprocessed volumes. Defaults to ``<root>/preprocessed``.
        train_batch_size: Training batch size. Defaults to ``8``.
        eval_batch_size: Validation and test batch size. Defaults to ``8``.
        num_workers: Data loader workers. Defaults to ``0``.
        seed: Seed (of ``normal``'s split when it has none of its own). Defaults to ``0``.

    """

    healthy = False

    def __init__(
        self,
        root: str | Path = "./datasets/BraTS",
        normal: BrainMRIDataModule | None = None,
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
            root=root,
            normal=normal,
            downsample=downsample,
            box_size=box_size,
            flip_left_right=flip_left_right,
            cache_dir=cache_dir,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
        )

    def subjects(self) -> list[BrainSubject]:
        """List the subjects (see :func:`find_brats_subjects`)."""
        return find_brats_subjects(self.root)
