"""Tests of the brain MRI preparation and the HCP, BraTS, ISLES and IXI loaders on tiny generated trees."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anomalib_medical.data.brats import BraTS, find_brats_subjects
from anomalib_medical.data.hcp import HCP, HCP_T2_FILE, find_hcp_subjects
from anomalib_medical.data.isles import ISLES, find_isles_subjects
from anomalib_medical.data.ixi import IXI, find_ixi_subjects
from anomalib_medical.data.utils.brain import (
    LOW_RES_SIZE,
    BrainPreprocessing,
    BrainSubject,
    downsample_half,
    foreground_box,
    head_mask,
    pad_centred,
    resize_preserve_edge,
    z_normalise,
)
from anomalib_medical.data.utils.download import ChecksumError, DownloadError
from anomalib_medical.data.utils.volume import VolumeBatch
from tests.unit.test_download import closed_port_url, serve_directory

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "make_brain_preprocessing_fixture", REPO / "benchmarks/reference/make_brain_preprocessing_fixture.py"
)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

LAS = np.diag([-1.0, 1.0, 1.0, 1.0])  # HCP's storage orientation
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS's


def _brain(shape: tuple[int, int, int], seed: int, lesion_at: tuple[float, float, float] | None = None):
    """A skull-stripped ellipsoid "brain" (NIfTI axes i, j, k) with random positive values, and a lesion mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    image = np.where(brain, 100 + 20 * rng.standard_normal(shape), 0.0).astype(np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    if lesion_at is not None:
        lesion = ((grid - np.array(lesion_at)[:, None, None, None]) ** 2).sum(0) < 0.1
        mask[lesion & brain] = 2
        image[lesion & brain] += 150
    return image, mask


def _save(path: Path, data: np.ndarray, affine: np.ndarray = LAS, zoom: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine @ np.diag([zoom, zoom, zoom, 1.0])), path)
    return path


# ------------------------------------------------------------------------------------- preparation


def test_z_normalise_pad_box_and_downsample() -> None:
    volume = np.zeros((5, 6, 7))
    volume[1:4, 2:5, 3:6] = np.arange(27).reshape(3, 3, 3) + 1
    mask = volume > 0
    normalised = z_normalise(volume, mask)
    assert normalised[mask].mean() == pytest.approx(0.0, abs=1e-9)
    assert normalised[mask].std() == pytest.approx(1.0, abs=1e-6)
    assert (normalised[~mask] == 0).all()
    assert foreground_box(mask) == (slice(1, 4), slice(2, 5), slice(3, 6))
    with pytest.raises(ValueError, match="no foreground"):
        foreground_box(np.zeros((2, 2, 2), dtype=bool))
    padded = pad_centred(np.ones((1, 2, 3)), (4, 4, 4))
    assert padded.shape == (4, 4, 4)
    assert [int(np.flatnonzero(padded.any(axis=tuple(a for a in range(3) if a != ax)))[0]) for ax in range(3)] == [
        1,
        1,
        0,
    ]  # (4 - 1) // 2, (4 - 2) // 2, (4 - 3) // 2 voxels before; the odd one after
    with pytest.raises(ValueError, match="does not fit"):
        pad_centred(np.ones((5, 1, 1)), (4, 4, 4))
    assert downsample_half(np.ones((5, 6, 7))).shape == (3, 3, 4)  # odd sides padded by one first
    labels = downsample_half(np.pad(np.full((4, 4, 4), 4.0), 2), labels=True)
    assert set(np.unique(labels)) == {0.0, 4.0}  # nearest: no blended labels


def test_edge_preserving_resize_keeps_the_brain_edge() -> None:
    ball = _brain((21, 21, 21), 0)[0] > 0
    volume = ball * 50.0
    plain = pad_centred(volume, (21, 21, 21))
    resized = resize_preserve_edge(plain, (15, 15, 15))
    inside = resized > 0
    np.testing.assert_allclose(resized[inside], 50.0, rtol=1e-6)  # no darkened rim (the authors' point)
    assert 0.8 < inside.sum() / (ball.sum() * (15 / 21) ** 3) < 1.2


def test_preprocessing_resamples_to_1mm_boxes_and_pads_to_the_paper_size() -> None:
    image, mask = _brain((60, 70, 50), 1, lesion_at=(0.3, 0.0, 0.0))
    volume = image.transpose(2, 1, 0)  # (D, H, W) as read_volume returns
    labels = mask.transpose(2, 1, 0)
    out, out_mask = BrainPreprocessing()(volume, (0.7, 0.7, 0.7), labels)
    assert out.shape == out_mask.shape == LOW_RES_SIZE
    assert out.dtype == np.float32 and out_mask.dtype == np.uint8
    brain = out != 0
    assert brain.any(axis=(1, 2)).sum() == pytest.approx(50 * 0.7 / 2, abs=2)  # 0.7 mm -> 1 mm, then halved
    assert abs(out[brain].mean()) < 0.1  # z-scored within the brain (edge voxels blur slightly)
    assert out_mask.sum() > 0
    assert out[out_mask.astype(bool)].mean() > out[brain & ~out_mask.astype(bool)].mean() + 1  # the lesion is bright
    full, _ = BrainPreprocessing(downsample=False)(volume, (1.0, 1.0, 1.0))
    assert full.shape == (160, 224, 160)
    with pytest.raises(ValueError, match=r"brain box \(50, 70, 170\) at 1 mm is larger than \(160, 224, 160\)"):
        BrainPreprocessing()(np.ones((50, 70, 170)), (1.0, 1.0, 1.0))


def test_preparation_matches_the_authors_code(tmp_path: Path) -> None:
    """Baugh et al.'s load_and_crop (fixture of benchmarks/reference/make_brain_preprocessing_fixture.py)."""
    fixture = np.load(REPO / "tests" / "fixtures" / "authors" / "brain_preprocessing.npz")
    for name, (image, mask) in reference.inputs().items():
        image_path = _save(tmp_path / f"{name}.nii.gz", image, reference.AFFINES[name])
        mask_path = _save(tmp_path / f"{name}_seg.nii.gz", mask, reference.AFFINES[name])
        ours, our_mask = BrainPreprocessing().load(BrainSubject(name, image_path, mask_path))
        theirs = pad_centred(fixture[f"{name}/t2"], LOW_RES_SIZE)  # their container's padding at loading
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(our_mask, pad_centred(fixture[f"{name}/seg"] != 0, LOW_RES_SIZE), err_msg=name)
        assert our_mask.any()
        # the test can fail: without the step that matters for each input, the volumes differ
        without = BrainPreprocessing(orientation=None) if name == "brats17" else BrainPreprocessing(spacing_tolerance=1)
        assert np.abs(without.load(BrainSubject(name, image_path, mask_path))[0] - theirs).max() > 1.0


def test_head_mask_drops_the_noisy_background() -> None:
    rng = np.random.default_rng(0)
    head = _brain((20, 22, 18), 2)[0] > 0
    image = np.where(head, 100.0, 0.0)
    image[9:11, 10:12, 8:10] = 0  # dark fluid inside the head: filled
    image[0, 0, 0] = 100  # a bright speck outside: not the largest component
    noisy = image + np.abs(5 * rng.standard_normal(image.shape))
    np.testing.assert_array_equal(head_mask(noisy), head)
    with pytest.raises(ValueError, match="constant"):
        head_mask(np.ones((3, 3, 3)))


# -------------------------------------------------------------------------------------------- HCP


def _hcp_tree(root: Path, count: int, flat: bool = False) -> None:
    for index in range(count):
        image, _ = _brain((40, 46, 36), index)
        folder = root / f"{100206 + index}"
        _save((folder if flat else folder / "T1w") / HCP_T2_FILE, image, zoom=0.7)


def test_hcp_layouts_and_missing_t2(tmp_path: Path) -> None:
    _hcp_tree(tmp_path / "package", 2)
    _hcp_tree(tmp_path / "flat", 2, flat=True)
    (tmp_path / "package" / "notes").mkdir()  # not a subject (not numeric)
    for layout in ("package", "flat"):
        subjects = find_hcp_subjects(tmp_path / layout)
        assert [s.subject for s in subjects] == ["100206", "100207"]
        assert all(s.image.is_file() and s.mask is None for s in subjects)
    (tmp_path / "package" / "100999" / "T1w").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"HCP subject 100999 has no T2w volume: neither .*T1w/T2w_acpc"):
        find_hcp_subjects(tmp_path / "package")
    with pytest.raises(FileNotFoundError, match=r"HCP: no subjects found under .*empty"):
        find_hcp_subjects(tmp_path / "empty")


def test_hcp_datamodule_splits_caches_and_rebuilds_stale_volumes(tmp_path: Path) -> None:
    _hcp_tree(tmp_path, 5)
    datamodule = HCP(root=tmp_path, eval_batch_size=2)
    datamodule.prepare_data()
    datamodule.setup()
    assert [len(datamodule.train_data), len(datamodule.val_data), len(datamodule.test_data)] == [4, 1, 0]
    batch = next(iter(datamodule.val_dataloader()))
    assert isinstance(batch, VolumeBatch)
    assert batch.image.shape == (1, 1, *LOW_RES_SIZE)
    assert not batch.gt_mask.any()
    cached = Path(datamodule.train_data.samples.image_path[0])
    stamp = cached.stat().st_mtime_ns
    datamodule.prepare_data()
    assert cached.stat().st_mtime_ns == stamp  # cached: not prepared again
    source = Path(datamodule.train_data.samples.source[0])
    os.utime(source, ns=(stamp + 10**9, stamp + 10**9))  # the source changed
    datamodule.prepare_data()
    assert cached.stat().st_mtime_ns != stamp
    with pytest.raises(ValueError, match="val_fraction and test_fraction"):
        HCP(root=tmp_path, val_fraction=0.6, test_fraction=0.5)


# ------------------------------------------------------------------------------------------ BraTS


def _brats_subject(folder: Path, seed: int, lps: bool = True, modalities: tuple[str, ...] = ("t1", "t2", "seg")):
    image, mask = _brain((36, 40, 30), seed, lesion_at=(0.0, 0.4, 0.0))
    affine = LPS if lps else LAS
    data = {"t1": image, "t2": image, "seg": mask}
    if not lps:  # the same subject stored the other way along j
        data = {name: np.ascontiguousarray(array[:, ::-1, :]) for name, array in data.items()}
    for modality in modalities:
        _save(folder / f"{folder.name}_{modality}.nii.gz", data[modality], affine)


def test_brats_2017_and_2021_layouts_and_missing_modalities(tmp_path: Path) -> None:
    _brats_subject(tmp_path / "2017" / "Brats17TrainingData" / "HGG" / "Brats17_2013_2_1", 0)
    _brats_subject(tmp_path / "2017" / "Brats17TrainingData" / "LGG" / "Brats17_TCIA_101_1", 1)
    _brats_subject(tmp_path / "2021" / "BraTS2021_00000", 2)
    assert [s.subject for s in find_brats_subjects(tmp_path / "2017")] == ["Brats17_2013_2_1", "Brats17_TCIA_101_1"]
    (subject,) = find_brats_subjects(tmp_path / "2021")
    assert subject.image.name == "BraTS2021_00000_t2.nii.gz"
    assert subject.mask.name == "BraTS2021_00000_seg.nii.gz"
    _brats_subject(tmp_path / "noseg" / "BraTS2021_00001", 3, modalities=("t1", "t2"))
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_00001 lacks its seg file.*holds \['t1', 't2'\]"):
        find_brats_subjects(tmp_path / "noseg")
    _brats_subject(tmp_path / "not2" / "BraTS2021_00002", 4, modalities=("t1", "seg"))
    with pytest.raises(FileNotFoundError, match="lacks its t2 file"):
        find_brats_subjects(tmp_path / "not2")
    _brats_subject(tmp_path / "twice" / "a" / "Brats17_X_1", 5)
    _brats_subject(tmp_path / "twice" / "b" / "Brats17_X_1", 6)
    with pytest.raises(ValueError, match="two BraTS subject folders are named Brats17_X_1"):
        find_brats_subjects(tmp_path / "twice")
    with pytest.raises(FileNotFoundError, match="BraTS: no subjects found"):
        find_brats_subjects(tmp_path / "nothing")


def test_brats_is_reoriented_like_the_authors_flip(tmp_path: Path) -> None:
    _brats_subject(tmp_path / "lps" / "Brats17_A_1", 7, lps=True)
    _brats_subject(tmp_path / "las" / "Brats17_A_1", 7, lps=False)
    volumes = []
    for layout in ("lps", "las"):
        datamodule = BraTS(root=tmp_path / layout)
        datamodule.setup()
        (row,) = datamodule.test_data.samples.itertuples()
        volumes.append((np.load(row.image_path), np.load(row.mask_path)))
        assert row.label_index == 1
    np.testing.assert_array_equal(volumes[0][0], volumes[1][0])  # LPS storage flipped along H = LAS storage
    np.testing.assert_array_equal(volumes[0][1], volumes[1][1])
    stored = nib.load(tmp_path / "lps" / "Brats17_A_1" / "Brats17_A_1_seg.nii.gz").get_fdata()
    lesion_j = np.nonzero(stored)[1].mean() / stored.shape[1]  # lesion in the upper half of j (LPS)
    _, mask = volumes[0]
    assert lesion_j > 0.5 > np.nonzero(mask)[1].mean() / mask.shape[1]  # lower half of H after the flip


def test_brats_trains_on_normal_volumes_and_refuses_to_train_alone(tmp_path: Path) -> None:
    _brats_subject(tmp_path / "brats" / "BraTS2021_00000", 0)
    _brats_subject(tmp_path / "brats" / "BraTS2021_00001", 1)
    _hcp_tree(tmp_path / "hcp", 3)
    alone = BraTS(root=tmp_path / "brats")
    alone.setup()
    assert [len(alone.train_data), len(alone.val_data), len(alone.test_data)] == [0, 0, 2]
    with pytest.raises(ValueError, match=r"BraTS has no training volumes.*--data.normal HCP"):
        alone.train_dataloader()
    box = (48, 56, 48)  # a small box for tiny trees: volumes of 24 x 28 x 24
    normal = HCP(root=tmp_path / "hcp", box_size=box)
    paired = BraTS(root=tmp_path / "brats", normal=normal, box_size=box, train_batch_size=2)
    paired.prepare_data()
    paired.setup()
    assert [len(paired.train_data), len(paired.val_data), len(paired.test_data)] == [2, 1, 2]
    assert all("/hcp/" in path for path in paired.train_data.samples.image_path)
    batch = next(iter(paired.test_dataloader()))
    assert batch.image.shape == (2, 1, 24, 28, 24)
    assert batch.gt_label.all() and batch.gt_mask.flatten(1).any(1).all()
    volume, mask = paired.train_data[0].image, paired.train_data[0].gt_mask
    assert volume.shape == (1, 24, 28, 24) and not mask.any()


def test_mismatched_shapes_name_both_files(tmp_path: Path) -> None:
    folder = tmp_path / "BraTS2021_00009"
    _brats_subject(folder, 0, modalities=("t2",))
    _save(folder / "BraTS2021_00009_seg.nii.gz", np.zeros((5, 5, 5), dtype=np.uint8), LPS)
    with pytest.raises(ValueError, match=r"BraTS2021_00009: mask .*_seg\.nii\.gz has shape \(5, 5, 5\), its image"):
        BraTS(root=tmp_path).prepare_data()


# ------------------------------------------------------------------------------------------ ISLES


def _isles_subject(root: Path, number: int, modalities: tuple[str, ...] = ("MR_T1", "MR_T2", "OT")) -> None:
    image, mask = _brain((34, 36, 30), number, lesion_at=(0.2, -0.2, 0.1))
    for offset, modality in enumerate(modalities):
        name = f"VSD.Brain.XX.O.{modality}.{70600 + 10 * number + offset}"
        data = mask if modality == "OT" else image
        _save(root / str(number) / name / f"{name}.nii", data, LAS)


def test_isles_layout_missing_modalities_and_datamodule(tmp_path: Path) -> None:
    root = tmp_path / "SISS2015_Training"
    _isles_subject(root, 1)
    _isles_subject(root, 2)
    subjects = find_isles_subjects(tmp_path)
    assert [s.subject for s in subjects] == ["SISS2015_Training_1", "SISS2015_Training_2"]
    assert ".MR_T2." in subjects[0].image.name and ".OT." in subjects[0].mask.name
    datamodule = ISLES(root=root)
    datamodule.setup()
    assert len(datamodule.test_data) == 2
    assert datamodule.test_data[0].gt_mask.any()
    _isles_subject(tmp_path / "noot", 3, modalities=("MR_T2",))
    with pytest.raises(FileNotFoundError, match=r"ISLES subject .*3 has no OT folder"):
        find_isles_subjects(tmp_path / "noot")
    _isles_subject(tmp_path / "twice", 4, modalities=("MR_T2", "MR_T2", "OT"))
    with pytest.raises(ValueError, match="has 2 MR_T2 folders"):
        find_isles_subjects(tmp_path / "twice")
    empty = tmp_path / "empty" / "5" / "VSD.Brain.XX.O.MR_T2.1"
    empty.mkdir(parents=True)
    _save(tmp_path / "empty" / "5" / "VSD.Brain.XX.O.OT.2" / "VSD.Brain.XX.O.OT.2.nii", np.zeros((2, 2, 2)))
    with pytest.raises(FileNotFoundError, match=r"MR_T2\.1 must hold one \.nii"):
        find_isles_subjects(tmp_path / "empty")


# -------------------------------------------------------------------------------------------- IXI


def _ixi_archive(folder: Path, count: int) -> Path:
    """A tiny IXI-T2.tar: heads (a bright ellipsoid) on a noisy background, 0.94 x 0.94 x 1.2 mm."""
    rng = np.random.default_rng(0)
    volumes = folder / "volumes"
    for index in range(count):
        image, _ = _brain((30, 32, 24), index)
        image = image + np.abs(5 * rng.standard_normal(image.shape)).astype(np.float32)
        affine = np.diag([-0.94, 0.94, 1.2, 1.0])
        nib.save(nib.Nifti1Image(image, affine), volumes / f"IXI{index + 2:03d}-Guys-{828 + index:04d}-T2.nii.gz")
    archive = folder / "served" / "IXI-T2.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as handle:
        for path in sorted(volumes.iterdir()):
            handle.add(path, arcname=path.name)
    return archive


@pytest.fixture
def ixi_archive(tmp_path: Path) -> Path:
    (tmp_path / "volumes").mkdir()
    return _ixi_archive(tmp_path, 3)


def test_ixi_downloads_verifies_extracts_and_prepares(tmp_path: Path, ixi_archive: Path) -> None:
    digest = hashlib.sha256(ixi_archive.read_bytes()).hexdigest()
    root = tmp_path / "ixi"
    with serve_directory(ixi_archive.parent) as base:
        datamodule = IXI(root=root, url=f"{base}/IXI-T2.tar", sha256=digest, expected_count=3, val_fraction=0.34)
        datamodule.prepare_data()
    assert sorted(p.name for p in (root / "IXI-T2").iterdir())[0] == "IXI002-Guys-0828-T2.nii.gz"
    assert (root / "IXI-T2.tar").is_file()
    datamodule.setup()
    assert [len(datamodule.train_data), len(datamodule.val_data)] == [2, 1]
    volume = datamodule.train_data[0].image
    assert volume.shape == (1, *LOW_RES_SIZE)
    assert (volume == 0).float().mean() > 0.5  # the noisy background is 0 (head mask)
    assert "_head_" in str(datamodule.cache.folder)


def test_ixi_download_failures_leave_nothing(tmp_path: Path, ixi_archive: Path) -> None:
    root = tmp_path / "ixi"
    with serve_directory(ixi_archive.parent) as base:
        with pytest.raises(ChecksumError, match="discarded"):
            IXI(root=root, url=f"{base}/IXI-T2.tar", sha256="0" * 64).prepare_data()
        assert not (root / "IXI-T2.tar").exists()
        with pytest.raises(ValueError, match=r"holds 3 T2 volumes, expected 578.*has been removed"):
            IXI(root=root, url=f"{base}/IXI-T2.tar").prepare_data()
        assert not (root / "IXI-T2.tar").exists() and not (root / "IXI-T2").exists()
    with pytest.raises(DownloadError, match=r"Put the archive IXI-T2\.tar .* at .*ixi/IXI-T2\.tar"):
        IXI(root=root, url=closed_port_url(), timeout=2).prepare_data()
    with pytest.raises(FileNotFoundError, match="download=False and no archive"):
        IXI(root=root, download=False).prepare_data()


def test_ixi_archive_placed_by_hand_and_brain_masks(tmp_path: Path, ixi_archive: Path) -> None:
    root = tmp_path / "ixi"
    root.mkdir()
    (root / "IXI-T2.tar").write_bytes(ixi_archive.read_bytes())
    with pytest.raises(ChecksumError, match="it was kept"):
        IXI(root=root, sha256="1" * 64, download=False).prepare_data()
    assert (root / "IXI-T2.tar").is_file()  # never deleted when placed by hand
    IXI(root=root, download=False, expected_count=None).prepare_data()
    masks = tmp_path / "masks"
    masks.mkdir()
    subjects = find_ixi_subjects(root / "IXI-T2")
    for subject in subjects[:2]:
        data = nib.load(subject.image)
        head = (np.asarray(data.dataobj) > 50).astype(np.uint8)
        nib.save(nib.Nifti1Image(head, data.affine), masks / f"{subject.subject}-T2_brain_mask.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"IXI subject IXI004-Guys-0830 has no brain mask"):
        find_ixi_subjects(root / "IXI-T2", masks)
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), dtype=np.uint8), np.eye(4)), masks / "IXI004-Guys-0830_mask.nii.gz")
    masked = find_ixi_subjects(root / "IXI-T2", masks)
    assert [s.brain_mask.name for s in masked][:2] == [
        "IXI002-Guys-0828-T2_brain_mask.nii.gz",
        "IXI003-Guys-0829-T2_brain_mask.nii.gz",
    ]
    datamodule = IXI(root=root, brain_mask_dir=masks, download=False, expected_count=None)
    with pytest.raises(ValueError, match=r"IXI004-Guys-0830: brain mask .* has shape \(2, 2, 2\)"):
        datamodule.prepare_data()
    assert "_head_" not in str(datamodule.cache.folder)
