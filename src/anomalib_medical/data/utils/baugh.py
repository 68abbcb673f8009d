"""Baugh et al.'s radiograph preprocessing (MICCAI 2023) as a cache preset, and the choice of preset.

The authors' VinDr-CXR preprocessing (``multitask_method/preprocessing/vindr_cxr_preproc.py`` of
matt-baugh/many-tasks-make-light-work), in their order:

1. cubic resize of the DICOM values to 512 x 512 (``skimage.transform.resize``, ``order=3``, anti-aliasing,
   range preserved; aspect ratio not kept);
2. clip to the DICOM window ``[centre - width / 2, centre + width / 2]`` when the file has one;
3. ``skimage.exposure.equalize_hist`` with 256 bins;
4. ``MONOCHROME1``: ``max - x``;
5. min-max to ``[-1, 1]``;
6. cubic resize to 256 x 256 (``image_size``), as in step 1.

What differs from the default ``"display"`` preset (:class:`~anomalib_medical.data.utils.cache.Preprocessing`):
the display pipeline maps the window linearly to ``[0, 1]`` at full size, resizes bilinearly and (optionally)
equalises the resized image; this preset equalises at 512 x 512 between two cubic resizes.

Two details of ours: the values are the modality values (rescale slope/intercept applied, as the DICOM standard
defines the window on them; the authors clip the stored values, the same thing for files without a rescale),
and a VOI LUT sequence is ignored, as by the authors. Non-DICOM sources (PNG, JPEG) go through the same steps
without window and inversion.

Storage: the model maps its ``[0, 1]`` inputs to ``[-1, 1]`` by ``2 x - 1``, so the cache stores ``(x + 1) / 2``
as a 16-bit PNG: within half a step (1.5e-5 on ``[-1, 1]``) of the authors' float arrays. Nothing is clipped:
``skimage.transform.resize`` clips its output to its input's range, so the cubic resizes cannot leave ``[-1, 1]``.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from skimage.exposure import equalize_hist
from skimage.transform import resize

from anomalib_medical.data.utils.cache import Preprocessing
from anomalib_medical.data.utils.dicom import IntensityFallback, read_dicom_values
from anomalib_medical.data.utils.reader import DICOM_SUFFIXES

PreprocessingPreset = Literal["display", "baugh"]
"""``"display"``: DICOM display pipeline, bilinear resize, optional equalisation; ``"baugh"``: Baugh et al.'s."""

BAUGH_INTERMEDIATE_SIZE = 512
"""Side of the authors' first resize (their ``full_res``)."""


def baugh_preprocess(
    values: np.ndarray,
    window: tuple[float, float] | None,
    monochrome1: bool,
    image_size: tuple[int, int] = (256, 256),
    intermediate_size: int = BAUGH_INTERMEDIATE_SIZE,
) -> np.ndarray:
    """Baugh et al.'s steps 1-6 (module docstring) on a ``(height, width)`` image.

    Args:
        values: Source values (DICOM modality values, or a grey image).
        window: ``(centre, width)`` to clip to after the first resize, or ``None``.
        monochrome1: Invert after equalising (``max - x``).
        image_size: Output ``(height, width)``.
        intermediate_size: Side of the first resize.

    Returns:
        ``float64`` image in ``[-1, 1]``; zeros for a constant image.

    """
    spline = {"order": 3, "anti_aliasing": True, "preserve_range": True}
    full = resize(np.asarray(values, dtype=np.float64), (intermediate_size, intermediate_size), **spline)
    if window is not None:
        centre, width = window
        full = np.clip(full, centre - width / 2, centre + width / 2)
    if full.max() == full.min():
        return np.zeros(image_size)
    equalised = equalize_hist(full, nbins=256)
    if monochrome1:
        equalised = equalised.max() - equalised
    low, high = equalised.min(), equalised.max()
    centred = (equalised - low) / (high - low) * 2 - 1
    return resize(centred, image_size, **spline)


@dataclass(frozen=True)
class BaughPreprocessing(Preprocessing):
    """Cache preset with Baugh et al.'s preprocessing (module docstring); cached as ``(x + 1) / 2``.

    Args:
        image_size: Output ``(height, width)`` (or one int), 256 in the paper.
        apply_window: Clip DICOMs to their window (step 2).
        intensity_fallback: Unused (the preset scales by min-max); kept for the common signature.
        histogram_equalisation: Must be ``False``: the preset equalises itself (step 3).
        intermediate_size: Side of the first resize (512 in the paper).

    """

    intermediate_size: int = BAUGH_INTERMEDIATE_SIZE
    preset: str = field(default="baugh", init=False)

    def __post_init__(self) -> None:
        """Check the settings."""
        super().__post_init__()
        if self.histogram_equalisation:
            msg = "histogram_equalisation=True applies to preprocessing='display'; the 'baugh' preset equalises itself."
            raise ValueError(msg)
        if self.intermediate_size < 1:
            msg = f"intermediate_size must be a positive integer, got {self.intermediate_size!r}."
            raise ValueError(msg)

    def preprocess(self, source: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """Read a source (DICOM: values, window, photometric) and return the cached ``uint16`` and its size."""
        if source.suffix.lower() in DICOM_SUFFIXES:
            dicom = read_dicom_values(source)
            values, window, monochrome1 = dicom.values, dicom.window, dicom.monochrome1
        else:
            values, window, monochrome1 = self.load(source), None, False
        image = baugh_preprocess(
            values, window if self.apply_window else None, monochrome1, self.image_size, self.intermediate_size
        )
        stored = np.round((image + 1) / 2 * 65535.0).astype(np.uint16)
        return stored, (int(values.shape[0]), int(values.shape[1]))


def make_preprocessing(
    preset: PreprocessingPreset,
    image_size: int | tuple[int, int],
    apply_window: bool = True,
    intensity_fallback: IntensityFallback = "minmax",
    histogram_equalisation: bool = False,
) -> Preprocessing:
    """Return the cache settings of a datamodule's ``preprocessing`` argument (``"display"`` or ``"baugh"``)."""
    if preset == "display":
        return Preprocessing(image_size, apply_window, intensity_fallback, histogram_equalisation)
    if preset == "baugh":
        return BaughPreprocessing(image_size, apply_window, intensity_fallback, histogram_equalisation)
    msg = f"preprocessing must be 'display' or 'baugh', got {preset!r}."
    raise ValueError(msg)
