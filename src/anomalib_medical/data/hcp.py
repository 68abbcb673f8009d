"""Human Connectome Project (HCP Young Adult) T2-weighted volumes: the healthy training set of Baugh et al.

Data:
    Van Essen et al., *The WU-Minn Human Connectome Project: an overview*, NeuroImage 80, 2013;
    https://www.humanconnectome.org/study/hcp-young-adult (ConnectomeDB registration, data use terms). The
    "Structural Preprocessed" package of each subject holds the skull-stripped, distortion-corrected T2w volume at
    0.7 mm in ACPC space::

        <root>/<subject id>/T1w/T2w_acpc_dc_restore_brain.nii.gz     (the package's layout)
        <root>/<subject id>/T2w_acpc_dc_restore_brain.nii.gz         (the flattened layout of Baugh et al.)

    Subjects are the folders whose name is a number (the authors' rule).

Preparation: :class:`~anomalib_medical.data.utils.brain.BrainPreprocessing` (resampled to 1 mm, z-scored in the
brain, boxed, downsampled to 80 x 112 x 80), cached under ``<root>/preprocessed``.

Split: every subject is healthy; ``val_fraction`` of them (default one fifth, the authors' held-out partition) are
validation volumes, on which the localiser validates with held-out synthetic tasks, and ``test_fraction`` (default
0) are test volumes; the rest train. The paper tests on BraTS 2017 and ISLES 2015:
``BraTS(root=..., normal=HCP(root=...))`` trains and validates on HCP and tests on BraTS.
"""

from __future__ import annotations

from pathlib import Path

from anomalib_medical.data.utils.brain import BRAIN_INPUT_SIZE, BrainMRIDataModule, BrainSubject, missing_files_message

__all__ = ["HCP", "HCP_T2_FILE", "find_hcp_subjects"]

HCP_T2_FILE = "T2w_acpc_dc_restore_brain.nii.gz"
"""The authors' HCP input (``hcp_t2_file`` in their ``brain_preproc.py``)."""


def find_hcp_subjects(root: str | Path, image_name: str = HCP_T2_FILE) -> list[BrainSubject]:
    """List the HCP subjects of ``root`` (numeric folders) with their T2w volume.

    Raises:
        FileNotFoundError: If ``root`` has no numeric subject folder, or a subject lacks the T2w volume (naming the
            subject and both places looked at).

    """
    root = Path(root)
    folders = (
        sorted(path for path in root.iterdir() if path.is_dir() and path.name.isnumeric()) if root.is_dir() else []
    )
    if not folders:
        expected = f"numeric subject folders holding T1w/{image_name} (HCP's structural preprocessed packages)"
        raise FileNotFoundError(missing_files_message("HCP", root, expected))
    subjects = []
    for folder in folders:
        candidates = [folder / "T1w" / image_name, folder / image_name]
        image = next((path for path in candidates if path.is_file()), None)
        if image is None:
            msg = f"HCP subject {folder.name} has no T2w volume: neither {candidates[0]} nor {candidates[1]} exists"
            raise FileNotFoundError(msg)
        subjects.append(BrainSubject(subject=folder.name, image=image))
    return subjects


class HCP(BrainMRIDataModule):
    """HCP Young Adult T2w volumes, all healthy (module docstring): the paper's training data.

    Args:
        root: Folder of the subject folders.
        val_fraction: Fraction of the subjects held out for validation. Defaults to ``0.2``.
        test_fraction: Fraction of the subjects held out for testing. Defaults to ``0.0``.
        downsample: 80 x 112 x 80 (the paper) or 160 x 224 x 160 at 1 mm. Defaults to ``True``.
        box_size: Size at 1 mm the brain box must fit in and is padded to (halved by ``downsample``).
            Defaults to ``(160, 224, 160)``, the authors'.
        flip_left_right: Mirror training volumes left-right with probability 0.5. Defaults to ``True``.
        cache_dir: Folder of the preprocessed volumes. Defaults to ``<root>/preprocessed``.
        image_name: File name of the T2w volume. Defaults to :data:`HCP_T2_FILE`.
        train_batch_size: Training batch size. Defaults to ``8`` (the authors').
        eval_batch_size: Validation and test batch size. Defaults to ``8``.
        num_workers: Data loader workers. Defaults to ``0``.
        seed: Seed of the subject split. Defaults to ``0``.

    """

    def __init__(
        self,
        root: str | Path = "./datasets/HCP",
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        downsample: bool = True,
        box_size: tuple[int, int, int] = BRAIN_INPUT_SIZE,
        flip_left_right: bool = True,
        cache_dir: str | Path | None = None,
        image_name: str = HCP_T2_FILE,
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
        self.image_name = image_name

    def subjects(self) -> list[BrainSubject]:
        """List the subjects (see :func:`find_hcp_subjects`)."""
        return find_hcp_subjects(self.root, self.image_name)
