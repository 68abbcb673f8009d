"""ISLES 2015 SISS (sub-acute ischaemic stroke lesion segmentation) T2 volumes: Baugh et al.'s stroke test set.

Data:
    Maier et al., *ISLES 2015 - A public evaluation benchmark for ischemic stroke lesion segmentation from
    multispectral MRI*, Medical Image Analysis 35, 2017; https://www.smir.ch/ISLES/Start2015 (registration). The SISS
    training set holds 28 subjects, skull-stripped, co-registered to the FLAIR and resampled to 1 mm, in the Virtual
    Skeleton Database's layout::

        SISS2015_Training/<n>/VSD.Brain.XX.O.MR_T2.<id>/VSD.Brain.XX.O.MR_T2.<id>.nii
        SISS2015_Training/<n>/VSD.Brain.XX.O.OT.<id>/VSD.Brain.XX.O.OT.<id>.nii          (the lesion mask)

    (also ``MR_T1``, ``MR_Flair``, ``MR_DWI``). ``root`` may be any folder above the subject folders: a subject is a
    folder with sub-folders whose names contain ``MR_T2`` and ``OT`` (the authors' ``isles_get_file``), each holding
    one ``.nii`` / ``.nii.gz`` file.

Preparation: :class:`~anomalib_medical.data.utils.brain.BrainPreprocessing`. Every subject is a test volume; with
``normal=HCP(...)`` the training and validation volumes come from HCP, as in the paper.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from anomalib_medical.data.utils.brain import BRAIN_INPUT_SIZE, BrainMRIDataModule, BrainSubject, missing_files_message
from anomalib_medical.data.utils.volume_reader import NIFTI_SUFFIXES, volume_suffix

__all__ = ["ISLES", "ISLES_MODALITIES", "find_isles_subjects"]

ISLES_MODALITIES = ("MR_T2", "OT")
"""Name parts of the SISS sub-folders read: the T2 volume and the lesion mask."""


def _only_volume(folder: Path) -> Path:
    files = [path for path in sorted(folder.iterdir()) if volume_suffix(path) in NIFTI_SUFFIXES]
    if len(files) != 1:
        msg = f"ISLES folder {folder} must hold one .nii / .nii.gz file, it holds {[path.name for path in files]}"
        raise FileNotFoundError(msg)
    return files[0]


def find_isles_subjects(root: str | Path) -> list[BrainSubject]:
    """List the ISLES 2015 SISS subjects under ``root`` with their T2 volume and lesion mask.

    Raises:
        FileNotFoundError: If no subject is found, or a subject lacks its ``MR_T2`` or ``OT`` folder or file.
        ValueError: If a subject has two folders of one modality.

    """
    root = Path(root)
    by_subject: dict[Path, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for folder in sorted(root.rglob("*")) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        for modality in ISLES_MODALITIES:
            if f".{modality}." in folder.name or folder.name.endswith(f".{modality}"):
                by_subject[folder.parent][modality].append(folder)
    if not by_subject:
        expected = "subject folders with VSD.Brain.XX.O.MR_T2.<id>/ and VSD.Brain.XX.O.OT.<id>/ (ISLES 2015 SISS)"
        raise FileNotFoundError(missing_files_message("ISLES", root, expected))
    subjects = []
    for subject, folders in sorted(by_subject.items()):
        missing = [modality for modality in ISLES_MODALITIES if modality not in folders]
        if missing:
            msg = f"ISLES subject {subject} has no {' or '.join(missing)} folder (VSD.Brain.XX.O.{missing[0]}.<id>)"
            raise FileNotFoundError(msg)
        for modality in ISLES_MODALITIES:
            if len(folders[modality]) > 1:
                names = [folder.name for folder in folders[modality]]
                msg = f"ISLES subject {subject} has {len(names)} {modality} folders: {names}"
                raise ValueError(msg)
        name = str(subject.relative_to(root)).replace("/", "_") if subject != root else subject.name
        image, mask = (_only_volume(folders[modality][0]) for modality in ISLES_MODALITIES)
        subjects.append(BrainSubject(subject=name, image=image, mask=mask))
    return subjects


class ISLES(BrainMRIDataModule):
    """ISLES 2015 SISS T2 volumes with stroke lesion masks, all in test (module docstring).

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
        seed: Seed. Defaults to ``0``.

    """

    healthy = False

    def __init__(
        self,
        root: str | Path = "./datasets/ISLES2015",
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
        """List the subjects (see :func:`find_isles_subjects`)."""
        return find_isles_subjects(self.root)
