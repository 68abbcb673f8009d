"""Smooth intensity change task (Baugh et al., 2023, Sec. 2.2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .base import Box, Source, SyntheticTask
from .shapes import TargetShape


class SmoothIntensityChangeTask(SyntheticTask):
    """Add or subtract an intensity over the mask, ramped up from its edge over a random margin.

    The change is ``(scale / 2 + Gamma(3, scale)) * (+1 or -1)``; it grows linearly with the distance to the
    mask's edge up to a margin of ``(0.02 + Gamma(3, 0.01))`` of the image's smallest extent (at most the mask's
    largest inner distance), and the result is clipped to the image's intensity range.

    Args:
        scale: Intensity scale, in the image's units (the paper uses 0.2 for images in [-1, 1]).
        **kwargs: Target-mask options of :class:`SyntheticTask`.

    """

    def __init__(self, scale: float = 0.2, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.scale = scale

    def corrupt(
        self,
        image: np.ndarray,
        box: Box,
        shape: TargetShape,
        rng: np.random.Generator,
        sources: Sequence[Source],
    ) -> np.ndarray:
        """Add the damped intensity change inside the mask."""
        del sources
        # Pad so that the distance falls to zero at the edge of the bounding grid too.
        distance = ndimage.distance_transform_edt(np.pad(shape.mask, 1))[(slice(1, -1),) * image.ndim]
        margin = min(min(image.shape) * (0.02 + rng.gamma(3, 0.01)), distance.max())
        ramp = np.minimum(distance / margin, 1.0)
        change = (self.scale / 2 + rng.gamma(3, self.scale)) * rng.choice([-1.0, 1.0])
        low, high = image.min(), image.max()
        image[box] = np.clip(image[box] + ramp * change, low, high)
        return shape.mask.copy()
