"""Tests of the volume reader: NIfTI and .npy at full depth, axis order, geometry and clear errors."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anomalib_medical.data.utils.volume_reader import (
    InvalidVolumeError,
    read_volume,
    read_volume_with_geometry,
    volume_suffix,
)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, slope: float | None = None) -> Path:
    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if slope is not None:
        image.header.set_slope_inter(slope, 10.0)
    nib.save(image, path)
    return path


@pytest.fixture
def ijk() -> np.ndarray:
    """A (4, 5, 6) volume whose every voxel is distinct: i * 100 + j * 10 + k."""
    i, j, k = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    return (i * 100 + j * 10 + k).astype(np.int16)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".NII.GZ"])
def test_nifti_axes_are_reversed_like_simpleitk(tmp_path: Path, ijk: np.ndarray, suffix: str) -> None:
    volume = read_volume(_nifti(tmp_path / f"v{suffix}", ijk))
    assert volume.dtype == np.float32
    assert volume.shape == (6, 5, 4)
    np.testing.assert_array_equal(volume, ijk.transpose(2, 1, 0))


def test_nifti_intensity_scaling_and_full_depth_are_kept(tmp_path: Path) -> None:
    stored = np.array([0, 1, 30000, -30000], dtype=np.int16).reshape(1, 2, 2)
    volume = read_volume(_nifti(tmp_path / "scaled.nii.gz", stored, slope=0.5))
    np.testing.assert_array_equal(volume.ravel(), 0.5 * stored.transpose(2, 1, 0).ravel() + 10.0)


def test_geometry_maps_returned_indices_to_world(tmp_path: Path, ijk: np.ndarray) -> None:
    affine = np.diag([-0.7, 0.8, 0.9, 1.0])
    affine[:3, 3] = [90.0, -126.0, -72.0]
    volume, geometry = read_volume_with_geometry(_nifti(tmp_path / "g.nii.gz", ijk, affine))
    assert geometry.zooms == pytest.approx((0.9, 0.8, 0.7))
    d, h, w = 5, 3, 2
    np.testing.assert_allclose(geometry.affine @ [d, h, w, 1], affine @ [w, h, d, 1])
    assert volume[d, h, w] == ijk[w, h, d]


def test_reorientation_flips_from_the_affine(tmp_path: Path, ijk: np.ndarray) -> None:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS's storage orientation
    path = _nifti(tmp_path / "lps.nii.gz", ijk, lps)
    volume, geometry = read_volume_with_geometry(path, orientation="LAS")
    np.testing.assert_array_equal(volume, ijk[:, ::-1, :].transpose(2, 1, 0))  # the second axis (j) flipped
    stored, stored_geometry = read_volume_with_geometry(path)
    index = np.array([1, 2, 3, 1.0])
    flipped = np.array([1, ijk.shape[1] - 1 - 2, 3, 1.0])
    np.testing.assert_allclose(geometry.affine @ flipped, stored_geometry.affine @ index)
    assert volume[1, ijk.shape[1] - 1 - 2, 3] == stored[1, 2, 3]
    with pytest.raises(ValueError, match="three axis codes"):
        read_volume_with_geometry(path, orientation="LA")
    with pytest.raises(ValueError, match="three axis codes"):
        read_volume_with_geometry(path, orientation="LLS")


def test_npy_is_taken_as_stored_with_one_leading_channel_allowed(tmp_path: Path, ijk: np.ndarray) -> None:
    np.save(tmp_path / "v.npy", ijk)
    np.save(tmp_path / "c.npy", ijk[None])
    np.testing.assert_array_equal(read_volume(tmp_path / "v.npy"), ijk)
    np.testing.assert_array_equal(read_volume(tmp_path / "c.npy"), ijk)
    _, geometry = read_volume_with_geometry(tmp_path / "v.npy")
    assert geometry.zooms == (1.0, 1.0, 1.0)
    with pytest.raises(InvalidVolumeError, match=r"v\.npy.*stores no orientation"):
        read_volume_with_geometry(tmp_path / "v.npy", orientation="RAS")


def test_single_volume_4d_nifti_is_accepted_and_several_are_refused(tmp_path: Path, ijk: np.ndarray) -> None:
    np.testing.assert_array_equal(read_volume(_nifti(tmp_path / "one.nii.gz", ijk[..., None])), ijk.T)
    with pytest.raises(InvalidVolumeError, match=r"series\.nii\.gz: holds 2 volumes"):
        read_volume(_nifti(tmp_path / "series.nii.gz", np.stack([ijk, ijk], axis=-1)))
    np.save(tmp_path / "three.npy", np.stack([ijk] * 3))  # the authors' (T1, T2, seg) arrays
    with pytest.raises(InvalidVolumeError, match=r"three\.npy: holds 3 volumes"):
        read_volume(tmp_path / "three.npy")


def test_two_dimensional_and_non_numeric_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidVolumeError, match=r"flat\.nii: has shape \(4, 5\)"):
        read_volume(_nifti(tmp_path / "flat.nii", np.zeros((4, 5), dtype=np.float32)))
    np.save(tmp_path / "text.npy", np.array([["a"]]))
    with pytest.raises(InvalidVolumeError, match=r"text\.npy: holds <U1 values"):
        read_volume(tmp_path / "text.npy")


def test_non_finite_values_are_counted(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3), dtype=np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    with pytest.raises(InvalidVolumeError, match=r"nan\.nii\.gz: holds 2 non-finite"):
        read_volume(_nifti(tmp_path / "nan.nii.gz", data))


def test_missing_unknown_and_corrupt_files_are_named(tmp_path: Path, ijk: np.ndarray) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.nii\.gz not found"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(InvalidVolumeError, match=r"scan\.mha: unknown suffix"):
        read_volume(tmp_path / "scan.mha")
    (tmp_path / "page.nii.gz").write_bytes(gzip.compress(b"<html>Sign in</html>"))
    with pytest.raises(InvalidVolumeError, match=r"page\.nii\.gz: corrupt or truncated"):
        read_volume(tmp_path / "page.nii.gz")
    whole = _nifti(tmp_path / "whole.nii.gz", ijk.astype(np.float32)).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidVolumeError, match=r"cut\.nii\.gz: corrupt or truncated"):
        read_volume(tmp_path / "cut.nii.gz")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InvalidVolumeError, match=r"bad\.npy: not a readable \.npy"):
        read_volume(tmp_path / "bad.npy")


def test_volume_suffix() -> None:
    assert volume_suffix("a/B.NII.GZ") == ".nii.gz"
    assert volume_suffix("b.nii") == ".nii"
    assert volume_suffix("c.npy") == ".npy"
    assert volume_suffix("d.nii.zip") is None
