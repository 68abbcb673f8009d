"""Read radiographs stored as DICOM into grey-level arrays in ``[0, 1]``.

The display pipeline of the DICOM standard (PS3.3 C.11) is followed:

1. decode the stored values (compressed transfer syntaxes need a pixel-data handler: ``pylibjpeg``
   with its ``libjpeg``/``openjpeg`` plug-ins covers JPEG, JPEG-LS and JPEG 2000; RLE and deflate
   are built into pydicom);
2. the modality LUT or rescale slope/intercept;
3. the VOI LUT when the file has one, otherwise the window centre/width (``LINEAR``,
   ``LINEAR_EXACT`` or ``SIGMOID``), mapped to ``[0, 1]``; when the file has neither (or windowing is
   switched off) the values are scaled by their minimum and maximum, or by the stored bit depth;
4. ``MONOCHROME1`` images (where low values are displayed white) are inverted, so that the result is
   always ``MONOCHROME2``: bright bone, dark air.

:func:`read_dicom_values` stops after step 2 and returns the first window and the photometric interpretation
alongside, for preprocessing presets that use them their own way (Baugh et al.'s clips to the window before
equalising; :mod:`anomalib_medical.data.utils.baugh`).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi

IntensityFallback = Literal["minmax", "bit_depth"]

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_dicom(
    path: str | Path,
    apply_window: bool = True,
    fallback: IntensityFallback = "minmax",
) -> np.ndarray:
    """Read a single-frame greyscale DICOM image as a ``float32`` array in ``[0, 1]``.

    Args:
        path: DICOM file (``.dcm``, ``.dicom`` or any name).
        apply_window: Apply the file's VOI LUT or window centre/width when it has one.
        fallback: Scaling used when no VOI transform is applied: ``"minmax"`` maps the image's own
            minimum and maximum to 0 and 1; ``"bit_depth"`` maps the range of the stored bit depth
            (after the modality transform) to 0 and 1.

    Returns:
        ``(height, width)`` ``float32`` array, 0 = black, 1 = white, whatever the photometric
        interpretation of the file.

    Raises:
        ValueError: When the file is not DICOM, has no pixel data, is not a single-frame
            ``MONOCHROME1``/``MONOCHROME2`` image, or ``fallback`` is unknown.
        RuntimeError: When the pixel data cannot be decoded (e.g. no handler for its transfer syntax).

    """
    if fallback not in {"minmax", "bit_depth"}:
        msg = f"Unknown intensity fallback {fallback!r}: expected 'minmax' or 'bit_depth'."
        raise ValueError(msg)
    path = Path(path)
    ds, stored, photometric = _read_greyscale(path)
    values = apply_modality_lut(stored, ds)
    try:
        image = _apply_voi(values, ds) if apply_window else None
    except ValueError as error:
        msg = f"{path}: {error}; pass apply_window=False to scale the image without it."
        raise ValueError(msg) from error
    if image is None:
        image = _scale(values, ds, fallback)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return 1.0 - image if photometric == "MONOCHROME1" else image


@dataclass(frozen=True)
class DicomValues:
    """A DICOM image before any display transform (for presets that window it their own way).

    Args:
        values: ``(height, width)`` ``float64`` modality values (stored values after the modality LUT or rescale).
        window: ``(centre, width)`` of the file's first window, or ``None`` when it has none.
        monochrome1: Whether low values are displayed white (``MONOCHROME1``).

    """

    values: np.ndarray
    window: tuple[float, float] | None
    monochrome1: bool


def read_dicom_values(path: str | Path) -> DicomValues:
    """Read a single-frame greyscale DICOM's modality values, first window and photometric interpretation.

    Raises:
        ValueError: As :func:`read_dicom`.
        RuntimeError: When the pixel data cannot be decoded.

    """
    ds, stored, photometric = _read_greyscale(Path(path))
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    window = (_first(ds.WindowCenter), _first(ds.WindowWidth)) if has_window else None
    return DicomValues(values, window, photometric == "MONOCHROME1")


def _read_greyscale(path: Path) -> tuple[Dataset, np.ndarray, str]:
    """Read a DICOM file, check it is a single-frame greyscale image and decode it.

    Returns:
        The dataset, its stored values and its photometric interpretation (upper case).

    """
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as error:
        msg = f"{path}: not a DICOM file ({error})."
        raise ValueError(msg) from error
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        msg = f"{path}: the DICOM file has no pixel data (no (7FE0,0010) Pixel Data element)."
        raise ValueError(msg)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        msg = f"{path}: expected a greyscale (MONOCHROME1/2) radiograph, not {photometric!r}."
        raise ValueError(msg)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        msg = f"{path}: expected a single-frame image, found {ds.NumberOfFrames} frames."
        raise ValueError(msg)
    try:
        stored = ds.pixel_array
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        msg = (
            f"{path}: cannot decode the pixel data (transfer syntax {name}): {error}. Compressed DICOMs need "
            "a pixel-data handler, e.g. `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`."
        )
        raise RuntimeError(msg) from error
    return ds, stored, photometric


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Apply the first VOI LUT, else the first window, mapped to ``[0, 1]``; ``None`` if there is neither."""
    if ds.get("VOILUTSequence"):
        entries, first_mapped = ds.VOILUTSequence[0].LUTDescriptor[:2]
        table = apply_voi(np.arange(first_mapped, first_mapped + (entries or 2**16)), ds).astype(np.float64)
        mapped = apply_voi(np.round(values).astype(np.int64), ds).astype(np.float64)
        low, high = table.min(), table.max()
        return (mapped - low) / (high - low) if high > low else np.zeros_like(mapped)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center = _first(ds.WindowCenter)
    width = _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    values = values.astype(np.float64)
    if function == "SIGMOID" and width > 0:
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT" and width > 0:
        return (values - center) / width + 0.5
    if function == "LINEAR" and width >= 1:
        if width == 1:
            return (values > center - 0.5).astype(np.float64)
        return (values - (center - 0.5)) / (width - 1) + 0.5
    msg = f"unusable window (function {function!r}, centre {center}, width {width})"
    raise ValueError(msg)


def _scale(values: np.ndarray, ds: Dataset, fallback: IntensityFallback) -> np.ndarray:
    """Map ``values`` to ``[0, 1]`` by their own range or by the range of the stored bit depth."""
    values = values.astype(np.float64)
    if fallback == "bit_depth":
        bits = int(ds.BitsStored)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.PixelRepresentation) else (0, 2**bits - 1)
        if ds.get("ModalityLUTSequence"):
            low, high = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
        else:
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
            low, high = sorted((low * slope + intercept, high * slope + intercept))
    else:
        low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _first(value: object) -> float:
    """First value of a possibly multi-valued DICOM number (``DS`` with VM > 1)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        return float(value)  # type: ignore[arg-type]
    return float(value[0])  # type: ignore[index]
