"""Base class of the synthetic tasks: draw target masks, place them, corrupt the image inside them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ..labelling import label_anomalies
from .shapes import TargetShape, place_shape, sample_target_shape

Box = tuple[slice, ...]


class Source(NamedTuple):
    """An image to cut blending patches from, and its foreground (``None``: everywhere)."""

    image: np.ndarray
    foreground: np.ndarray | None = None


class TaskOutput(NamedTuple):
    """A corrupted image and the mask of the pixels the task altered."""

    image: np.ndarray
    mask: np.ndarray


class SyntheticTask(ABC):
    """A self-supervised task that turns a normal image into one with synthetic anomalies (Baugh et al., Sec. 2).

    One anomaly is always added; after each one, another follows with probability ``continue_probability``, up to
    ``max_anomalies``. Tasks work on single-channel images with any number of spatial dimensions.

    Args:
        min_size: Smallest target-mask axis as a fraction of the image's extent.
        max_size: Largest target-mask extent as a fraction of the image's extent.
        max_anomalies: Maximum number of anomalies per image.
        continue_probability: Probability of adding another anomaly after each one.
        min_foreground_overlap: Fraction of each mask that must lie on the foreground, when one is given.
        placement_attempts: Shapes drawn for one anomaly before giving up when none can meet the foreground rule.

    """

    def __init__(
        self,
        min_size: float = 0.06,
        max_size: float = 0.8,
        max_anomalies: int = 4,
        continue_probability: float = 0.5,
        min_foreground_overlap: float = 0.5,
        placement_attempts: int = 10,
    ) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self.max_anomalies = max_anomalies
        self.continue_probability = continue_probability
        self.min_foreground_overlap = min_foreground_overlap
        self.placement_attempts = placement_attempts

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        foreground: np.ndarray | None = None,
        others: Sequence[np.ndarray] = (),
        other_foregrounds: Sequence[np.ndarray | None] = (),
    ) -> TaskOutput:
        """Corrupt a copy of ``image``.

        Args:
            image: Normal single-channel image.
            rng: Random generator; the output is a deterministic function of the image and the generator's state.
            foreground: Optional boolean mask; each anomaly keeps at least ``min_foreground_overlap`` on it.
            others: Other normal images of the same shape (sources for intra-dataset blending).
            other_foregrounds: Foregrounds of ``others`` (empty: everywhere); a blending patch's centre lies in its
                source's foreground (the authors' rule).

        Returns:
            The corrupted image (float64) and the boolean mask of altered pixels. When no shape finds a position
            satisfying the foreground rule in ``placement_attempts`` draws, no further anomaly is added (an image
            without any foreground comes back unchanged with an empty mask).

        """
        sources = as_sources(others, other_foregrounds)
        corrupted = np.array(image, dtype=np.float64)
        mask = np.zeros(image.shape, dtype=bool)
        for shape, box in self.anomalies(image.shape, rng, foreground):
            mask[box] |= self.corrupt(corrupted, box, shape, rng, sources)
        return TaskOutput(corrupted, mask)

    def anomalies(
        self,
        image_shape: tuple[int, ...],
        rng: np.random.Generator,
        foreground: np.ndarray | None,
    ) -> Iterator[tuple[TargetShape, Box]]:
        """Draw the target shapes and their boxes: one, then another with ``continue_probability``, ..."""
        for _ in range(self.max_anomalies):
            placed = self._place(image_shape, rng, foreground)
            if placed is None:
                return
            shape, corner = placed
            yield shape, tuple(slice(int(c), int(c) + n) for c, n in zip(corner, shape.grid_shape, strict=True))
            if rng.random() >= self.continue_probability:
                return

    def label(self, corrupted: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
        """Pixel labels of this task's output: the flipped Gaussian of the change (see ``label_anomalies``)."""
        return label_anomalies(corrupted, original, mask, sigma)

    def _place(
        self,
        image_shape: tuple[int, ...],
        rng: np.random.Generator,
        foreground: np.ndarray | None,
    ) -> tuple[TargetShape, np.ndarray] | None:
        for _ in range(self.placement_attempts):
            shape = sample_target_shape(rng, image_shape, self.min_size, self.max_size)
            corner = place_shape(rng, shape.mask, image_shape, foreground, self.min_foreground_overlap)
            if corner is not None:
                return shape, corner
        return None

    @abstractmethod
    def corrupt(
        self,
        image: np.ndarray,
        box: Box,
        shape: TargetShape,
        rng: np.random.Generator,
        sources: Sequence[Source],
    ) -> np.ndarray:
        """Corrupt ``image`` in place inside ``shape`` placed at ``box``; return the altered pixels of the box."""


def as_sources(others: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray | None] = ()) -> list[Source]:
    """Pair the other images with their foregrounds (none given: everywhere)."""
    if len(foregrounds) not in {0, len(others)}:
        msg = f"other_foregrounds has {len(foregrounds)} masks for {len(others)} other images"
        raise ValueError(msg)
    masks = foregrounds or [None] * len(others)
    return [Source(np.asarray(o, dtype=np.float64), f) for o, f in zip(others, masks, strict=True)]
