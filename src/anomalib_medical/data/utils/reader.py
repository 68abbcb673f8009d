"""One image reader for every datamodule, the cache and prediction, keeping the file's full bit depth.

anomalib's ``read_image`` converts every file to 8-bit RGB: a 16-bit radiograph saturates (a stored 1,000 of
65,535 comes out white) and a float TIFF is clipped. :func:`read_grey_or_rgb` instead maps the stored values to
``float32`` in ``[0, 1]`` by the range of their type:

========================================  =============================================================
stored as                                 becomes
========================================  =============================================================
8-bit grey / palette / 1-bit (PNG, JPEG…)  value / 255
16-bit grey, either byte order (PNG, TIFF) value / 65,535
32-bit integer (Pillow mode ``I``)         value / 65,535 when every value is in 0…65,535 (how Pillow
                                           opens some 16-bit files); otherwise min-max (logged)
float (TIFF mode ``F``)                    kept when every value is in [0, 1]; otherwise min-max (logged)
DICOM (``.dcm``, ``.dicom``)               :func:`~anomalib_medical.data.utils.dicom.read_dicom`: modality
                                           LUT, VOI LUT or window, MONOCHROME1 inverted
colour (RGB, RGBA, CMYK, YCbCr)            8-bit RGB / 255, three channels
========================================  =============================================================

:func:`read_image_tensor` returns what anomalib's datasets hand to a model: a 3-channel
:class:`torchvision.tv_tensors.Image` (grey levels replicated). Files that cannot be read, multi-frame files and
images with non-finite pixels raise :class:`~anomalib_medical.data.utils.images.InvalidImageError` naming the
file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.tv_tensors import Image as ImageTensor

from anomalib_medical.data.utils.dicom import IntensityFallback, read_dicom
from anomalib_medical.data.utils.images import IMAGE_EXTENSIONS, InvalidImageError

logger = logging.getLogger(__name__)

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""File suffixes read as DICOM; every other file is read with Pillow."""

READABLE_SUFFIXES: tuple[str, ...] = (*IMAGE_EXTENSIONS, *DICOM_SUFFIXES)
"""Every suffix :func:`read_grey_or_rgb` reads (lower case)."""

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_UINT16_MAX = 65535.0


def read_grey_or_rgb(
    path: str | Path,
    apply_window: bool = True,
    fallback: IntensityFallback = "minmax",
) -> np.ndarray:
    """Read an image file as ``float32`` in ``[0, 1]`` at its full depth (see the module's table).

    Args:
        path: Image file: PNG, JPEG, BMP, TIFF (8/16-bit either byte order, 32-bit integer, float) or DICOM.
        apply_window: For DICOM, apply the file's VOI LUT or window when it has one.
        fallback: For DICOM without a window: ``"minmax"`` or ``"bit_depth"`` (see ``read_dicom``).

    Returns:
        ``(height, width)`` for grey images, ``(height, width, 3)`` for colour images.

    Raises:
        FileNotFoundError: If the file does not exist.
        InvalidImageError: If the file cannot be decoded, holds several frames or has non-finite pixels.

    """
    path = Path(path)
    if not path.is_file():
        msg = f"Image file {path} does not exist."
        raise FileNotFoundError(msg)
    if path.suffix.lower() in DICOM_SUFFIXES:
        try:
            array = read_dicom(path, apply_window=apply_window, fallback=fallback)
        except (ValueError, RuntimeError) as error:
            raise InvalidImageError(path, str(error).removeprefix(f"{path}: ")) from error
    else:
        array = _read_with_pillow(path)
    if not np.isfinite(array).all():
        raise InvalidImageError(path, f"{int((~np.isfinite(array)).sum())} pixel(s) are NaN or infinite")
    return array


def read_image_tensor(
    path: str | Path,
    apply_window: bool = True,
    fallback: IntensityFallback = "minmax",
) -> ImageTensor:
    """Read an image file as anomalib's datasets do, but at full depth: a ``(3, height, width)`` float image.

    Args:
        path: Image file (see :func:`read_grey_or_rgb`).
        apply_window: For DICOM, apply the file's VOI LUT or window when it has one.
        fallback: For DICOM without a window: ``"minmax"`` or ``"bit_depth"``.

    Returns:
        A ``float32`` image in ``[0, 1]``; grey levels are replicated over the three channels.

    """
    array = read_grey_or_rgb(path, apply_window=apply_window, fallback=fallback)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    tensor = tensor.expand(3, *tensor.shape) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return ImageTensor(tensor.contiguous())


def _read_with_pillow(path: Path) -> np.ndarray:
    """Decode a non-DICOM file with Pillow and scale it by the range of its stored type."""
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise InvalidImageError(path, f"holds {image.n_frames} frames; expected a single image")
            if image.mode in _GREY_MODES:
                grey = image if image.mode.startswith(("I", "F")) else image.convert("L")
                array = np.asarray(grey)
            else:
                array = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as error:
        raise InvalidImageError(path, f"too many pixels to decode safely ({error})") from error
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise InvalidImageError(path, f"cannot be decoded ({error})") from error
    return _scale_to_unit(array, path)


def _scale_to_unit(array: np.ndarray, path: Path) -> np.ndarray:
    """Map stored values to ``[0, 1]`` by the range of their type (see the module's table)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return array.astype(np.float32) / _UINT16_MAX
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        return values.astype(np.float32)  # reported by the caller
    low, high = float(values.min()), float(values.max())
    if array.dtype.kind in "iu" and low >= 0 and high <= _UINT16_MAX:
        return (values / _UINT16_MAX).astype(np.float32)
    if array.dtype.kind == "f" and low >= 0 and high <= 1:
        return values.astype(np.float32)
    logger.warning(
        "%s: values %.6g..%.6g (%s) are outside the type's range; scaled by min-max", path, low, high, array.dtype
    )
    return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)
