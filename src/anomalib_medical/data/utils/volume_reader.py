"""One volume reader for every 3-D datamodule: NIfTI (``.nii``, ``.nii.gz``) and NumPy (``.npy``) at full depth.

:func:`read_volume` returns a ``float32`` array of shape ``(D, H, W)``:

- NIfTI files are read with nibabel's ``get_fdata``, so the header's intensity scaling (``scl_slope``,
  ``scl_inter``) is applied and nothing is clipped or rescaled. The axes are the file's voxel axes reversed,
  ``(k, j, i)``: the array SimpleITK's ``GetArrayFromImage`` gives, which is how Baugh et al.'s brain
  preprocessing reads its volumes (for an RAS/LAS brain: D superior, H anterior, W left-right).
- ``.npy`` files are taken as stored, already ``(D, H, W)`` (the layout this package writes).

A 4-D file holding one volume (``X x Y x Z x 1``, or ``1 x D x H x W`` for ``.npy``) is accepted; more volumes, fewer
than three axes, non-numeric or non-finite values, an unknown suffix, a missing file and a corrupt or truncated file
raise :class:`InvalidVolumeError` (or :class:`FileNotFoundError`) naming the file.

:func:`read_volume_with_geometry` also returns the voxel geometry (:class:`VolumeGeometry`: the affine of the returned
axes and the voxel spacing in mm), optionally after reorienting a NIfTI volume to given axis codes (``"LAS"``: HCP's
storage orientation).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations
from nibabel.filebasedimages import ImageFileError

__all__ = [
    "NIFTI_SUFFIXES",
    "VOLUME_SUFFIXES",
    "InvalidVolumeError",
    "VolumeGeometry",
    "read_volume",
    "read_volume_with_geometry",
    "volume_suffix",
]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
VOLUME_SUFFIXES: tuple[str, ...] = (*NIFTI_SUFFIXES, ".npy")
"""File suffixes :func:`read_volume` reads (matched case-insensitively)."""

_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, ValueError)


class InvalidVolumeError(ValueError):
    """A volume file cannot be read, or does not hold one 3-D volume of finite numbers.

    Args:
        path: The offending file.
        reason: What is wrong with it.

    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Invalid volume file {self.path}: {reason}")


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the voxels of a volume returned by :func:`read_volume_with_geometry` are.

    Attributes:
        affine: (4, 4) map from ``(d, h, w, 1)`` indices of the returned array to world coordinates in mm (for a
            ``.npy`` file, which stores none, a 1 mm grid at the origin).
        zooms: Voxel spacing along ``(D, H, W)`` in mm, rounded to 1e-6 mm (NIfTI stores float32: 0.7 mm reads
            0.69999999, and Baugh et al. resample HCP by exactly 0.7).

    """

    affine: np.ndarray
    zooms: tuple[float, float, float]


def volume_suffix(path: str | Path) -> str | None:
    """Return the volume suffix of ``path`` in lower case (``.nii.gz``, ``.nii``, ``.npy``), or ``None``."""
    name = Path(path).name.lower()
    return next((suffix for suffix in (".nii.gz", ".nii", ".npy") if name.endswith(suffix)), None)


def read_volume(path: str | Path) -> np.ndarray:
    """Read one volume as ``float32`` of shape ``(D, H, W)`` at full depth (see the module docstring).

    Args:
        path: ``.nii``, ``.nii.gz`` or ``.npy`` file.

    Returns:
        The volume.

    Raises:
        FileNotFoundError: If the file does not exist.
        InvalidVolumeError: If the suffix is unknown, the file is corrupt or truncated, or it does not hold exactly
            one 3-D volume of finite numbers.

    """
    return read_volume_with_geometry(path)[0]


def read_volume_with_geometry(
    path: str | Path,
    orientation: str | None = None,
) -> tuple[np.ndarray, VolumeGeometry]:
    """Read one volume and its voxel geometry.

    Args:
        path: ``.nii``, ``.nii.gz`` or ``.npy`` file.
        orientation: Three axis codes (e.g. ``"LAS"``, ``"RAS"``) the NIfTI voxel axes ``(i, j, k)`` are reoriented
            to (by flips and axis swaps from the affine, no interpolation) before they are reversed to ``(D, H, W)``;
            ``None`` keeps the stored order. ``.npy`` files store no orientation and refuse one.

    Returns:
        ``(volume, geometry)``: the ``float32`` ``(D, H, W)`` array and its :class:`VolumeGeometry`.

    Raises:
        FileNotFoundError: If the file does not exist.
        InvalidVolumeError: As :func:`read_volume`, or if an orientation is asked of a ``.npy`` file.
        ValueError: If ``orientation`` is not three distinct axis codes.

    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        expected = ", ".join(VOLUME_SUFFIXES)
        raise InvalidVolumeError(path, f"unknown suffix (expected one of {expected})")
    if not path.is_file():
        msg = f"Volume file {path} not found"
        raise FileNotFoundError(msg)
    if suffix == ".npy":
        if orientation is not None:
            raise InvalidVolumeError(path, f"a .npy file stores no orientation; cannot reorient it to {orientation}")
        volume = _single_volume(_load_npy(path), path, leading_channel=True)
        return volume, VolumeGeometry(affine=np.eye(4), zooms=(1.0, 1.0, 1.0))
    return _read_nifti(path, orientation)


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise InvalidVolumeError(path, f"not a readable .npy file ({error})") from error
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InvalidVolumeError(path, f"holds {array.dtype} values, expected numbers")
    return array


def _read_nifti(path: Path, orientation: str | None) -> tuple[np.ndarray, VolumeGeometry]:
    try:
        image = nib.load(path)
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise InvalidVolumeError(path, f"not a NIfTI image (nibabel read it as {type(image).__name__})")
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except InvalidVolumeError:
        raise
    except _READ_ERRORS as error:
        raise InvalidVolumeError(path, f"corrupt or truncated NIfTI file ({type(error).__name__}: {error})") from error
    data = _single_volume(data, path, leading_channel=False)  # (i, j, k)
    affine = np.asarray(image.affine, dtype=np.float64)
    if orientation is not None:
        target = _axis_codes(orientation)
        transform = orientations.ornt_transform(orientations.io_orientation(affine), target)
        data = np.ascontiguousarray(orientations.apply_orientation(data, transform))
        affine = affine @ orientations.inv_ornt_aff(transform, image.shape[:3])
    reverse = np.eye(4)[[2, 1, 0, 3]]  # (i, j, k, 1) = reverse @ (d, h, w, 1)
    affine = affine @ reverse
    zooms = tuple(round(float(z), 6) for z in np.linalg.norm(affine[:3, :3], axis=0))  # float32 header precision
    return np.ascontiguousarray(data.transpose(2, 1, 0)), VolumeGeometry(affine=affine, zooms=zooms)


def _axis_codes(orientation: str) -> np.ndarray:
    codes = tuple(orientation.upper())
    try:
        ornt = orientations.axcodes2ornt(codes)
    except ValueError as error:
        msg = f"orientation must be three axis codes such as 'LAS' or 'RAS', got {orientation!r}"
        raise ValueError(msg) from error
    if len(codes) != 3 or np.isnan(ornt).any() or len(set(ornt[:, 0])) != 3:
        msg = f"orientation must be three axis codes such as 'LAS' or 'RAS' (one per axis), got {orientation!r}"
        raise ValueError(msg)
    return ornt


def _single_volume(array: np.ndarray, path: Path, leading_channel: bool) -> np.ndarray:
    """Return the one 3-D volume of ``array`` as ``float32``; a singleton 4th axis (trailing, or leading) is dropped."""
    shape = array.shape
    if array.ndim > 3:
        extra = shape[:-3] if leading_channel else shape[3:]
        if int(np.prod(extra)) != 1:
            where = "leading" if leading_channel else "trailing"
            raise InvalidVolumeError(
                path, f"holds {int(np.prod(extra))} volumes (shape {shape}, {where} axes {extra}); expected one"
            )
        array = array.reshape(shape[-3:] if leading_channel else shape[:3])
    if array.ndim != 3:
        raise InvalidVolumeError(path, f"has shape {shape}; expected a 3-D volume (or 4-D with one volume)")
    if min(array.shape) < 1:
        raise InvalidVolumeError(path, f"is empty (shape {shape})")
    volume = np.asarray(array, dtype=np.float32)
    if not np.isfinite(volume).all():
        count = int((~np.isfinite(volume)).sum())
        raise InvalidVolumeError(path, f"holds {count} non-finite voxel values (NaN or infinity)")
    return volume
