"""Sink and source deformation tasks (Baugh et al., 2023, Sec. 2.2, Eq. 1 and 2).

A centre ``c`` is drawn inside the mask. Each mask pixel at distance ``d`` from ``c`` takes the intensity found
at distance ``d'`` along the same ray, where ``d_max`` is the distance from ``c`` to the mask's edge on that ray:

* sink (Eq. 1): ``d' = d_max - (d_max - d)^f / d_max^(f - 1)``: content is pulled towards the centre;
* source (Eq. 2): ``d' = d^f / d_max^(f - 1)``: content is pushed away from the centre.

Both leave the mask's edge in place (``d = d_max`` maps to itself), so the change stays inside the mask. As in the
authors' configuration, the exponent ``f > 1`` is chosen so that the point half-way along the diagonal moves by
a push distance drawn in pixels from ``push_distance``, bounded by 10-90 % of what the mask's size allows.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .base import Box, Source, SyntheticTask
from .shapes import TargetShape


class RadialDeformationTask(SyntheticTask):
    """Radial displacement field inside the mask; subclasses define the distance mapping.

    Args:
        push_distance: Range, in pixels, of the displacement of the mid-diagonal point (authors: 0.5 to 10).
        **kwargs: Target-mask options of :class:`SyntheticTask`.

    """

    def __init__(self, push_distance: tuple[float, float] = (0.5, 10.0), **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.push_distance = push_distance

    @staticmethod
    @abstractmethod
    def new_distance(distance: np.ndarray, max_distance: np.ndarray, exponent: float) -> np.ndarray:
        """Distance along the ray from which the pixel at ``distance`` takes its intensity."""

    @staticmethod
    @abstractmethod
    def exponent(push: float, mean_radius: float) -> float:
        """Exponent ``f`` that moves the mid-diagonal point by ``push`` in a mask of radius ``mean_radius``."""

    def _sample_push(self, rng: np.random.Generator, mean_radius: float) -> float:
        largest = np.sqrt(mean_radius**2 / 2)
        low, high = 0.1 * largest, 0.9 * largest
        wanted_low, wanted_high = self.push_distance
        if wanted_low >= high:
            return high
        if wanted_high <= low:
            return low
        return rng.uniform(max(low, wanted_low), min(high, wanted_high))

    def corrupt(
        self,
        image: np.ndarray,
        box: Box,
        shape: TargetShape,
        rng: np.random.Generator,
        sources: Sequence[Source],
    ) -> np.ndarray:
        """Resample the image inside the mask along rays from a random centre."""
        del sources
        mask = shape.mask
        inside = np.argwhere(mask).T.astype(float)
        centre = inside[:, rng.integers(inside.shape[1])][:, None]
        edge = np.argwhere(mask & ~ndimage.binary_erosion(mask)).T
        mean_radius = float(np.mean(np.linalg.norm(edge - centre, axis=0)))
        if mean_radius <= 0:
            return np.zeros_like(mask)
        exponent = self.exponent(self._sample_push(rng, mean_radius), mean_radius)

        offsets = inside - centre
        distance = np.linalg.norm(offsets, axis=0)
        moving = distance > 0
        directions = offsets[:, moving] / distance[moving]
        max_distance = np.maximum(shape.boundary_distance(inside[:, moving], directions) + distance[moving], 1e-6)
        coordinates = inside.copy()
        coordinates[:, moving] = centre + directions * self.new_distance(distance[moving], max_distance, exponent)
        patch = image[box]
        patch[mask] = ndimage.map_coordinates(patch, coordinates, order=3, mode="nearest")
        return mask.copy()


class SinkDeformationTask(RadialDeformationTask):
    """Pull the content of the mask towards a centre (Eq. 1)."""

    @staticmethod
    def new_distance(distance: np.ndarray, max_distance: np.ndarray, exponent: float) -> np.ndarray:
        """``d' = d_max - (d_max - d)^f / d_max^(f - 1)``."""
        return max_distance - (max_distance - distance) ** exponent / max_distance ** (exponent - 1)

    @staticmethod
    def exponent(push: float, mean_radius: float) -> float:
        """Solve Eq. 1 for ``f`` so that ``M/2 - p/sqrt(2)`` maps to ``M/2 + p/sqrt(2)``."""
        before = mean_radius / 2 - push / np.sqrt(2)
        after = mean_radius / 2 + push / np.sqrt(2)
        return float(np.log(1 - after / mean_radius) / np.log(1 - before / mean_radius))


class SourceDeformationTask(RadialDeformationTask):
    """Push the content of the mask away from a centre (Eq. 2)."""

    @staticmethod
    def new_distance(distance: np.ndarray, max_distance: np.ndarray, exponent: float) -> np.ndarray:
        """``d' = d^f / d_max^(f - 1)``."""
        return distance**exponent / max_distance ** (exponent - 1)

    @staticmethod
    def exponent(push: float, mean_radius: float) -> float:
        """Solve Eq. 2 for ``f`` so that ``M/2 + p/sqrt(2)`` maps to ``M/2 - p/sqrt(2)``."""
        before = mean_radius / 2 + push / np.sqrt(2)
        after = mean_radius / 2 - push / np.sqrt(2)
        return float(np.log(after / mean_radius) / np.log(before / mean_radius))
