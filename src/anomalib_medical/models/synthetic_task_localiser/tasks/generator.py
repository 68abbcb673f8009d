"""Apply synthetic tasks to batches and label the result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..labelling import label_anomalies
from .base import SyntheticTask


class SyntheticSample(NamedTuple):
    """A corrupted image, its pixel labels and the mask of altered pixels."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray


class SyntheticAnomalyGenerator:
    """Corrupt each image with one task drawn uniformly from ``tasks`` and label it with the flipped Gaussian.

    Args:
        tasks: Tasks to draw from.
        sigma: Standard deviation of the labelling function (:func:`..labelling.flipped_gaussian`).
        foreground_threshold: If given, the foreground of an image is where its intensity exceeds this fraction of
            its range (``min + t * (max - min)``) and anomalies keep the tasks' overlap rule with it; if ``None``
            the whole image is foreground.

    """

    def __init__(
        self,
        tasks: Sequence[SyntheticTask],
        sigma: float = 0.2,
        foreground_threshold: float | None = None,
    ) -> None:
        if not tasks:
            msg = "at least one task is needed"
            raise ValueError(msg)
        self.tasks = list(tasks)
        self.sigma = sigma
        self.foreground_threshold = foreground_threshold

    def foreground(self, image: np.ndarray) -> np.ndarray | None:
        """Foreground mask of ``image`` (``None``: everywhere)."""
        if self.foreground_threshold is None:
            return None
        low, high = image.min(), image.max()
        return image > low + self.foreground_threshold * (high - low)

    def corrupt(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        others: Sequence[np.ndarray] = (),
    ) -> SyntheticSample:
        """Corrupt one single-channel image (any number of dimensions) with a random task."""
        task = self.tasks[rng.integers(len(self.tasks))]
        corrupted, mask = task(image, rng, self.foreground(image), others)
        return SyntheticSample(corrupted, label_anomalies(corrupted, image, mask, self.sigma), mask)

    def __call__(self, images: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrupt a batch ``(B, 1, *spatial)``; the other images of the batch are the intra-dataset sources.

        Returns:
            Corrupted images and labels, both of the batch's shape, dtype and device.

        Raises:
            ValueError: If an image holds NaN or infinite pixels (the labelling's morphological reconstruction, in
                scikit-image, crashes the process on NaN).

        """
        finite = torch.isfinite(images.flatten(1)).all(dim=1)
        if not bool(finite.all()):
            items = (~finite).nonzero().flatten().tolist()
            msg = f"Images {items} of the batch hold NaN or infinite pixels: synthetic tasks need finite intensities."
            raise ValueError(msg)
        batch = images.detach().to("cpu", torch.float64).numpy()[:, 0]
        samples = [
            self.corrupt(image, rng, [other for j, other in enumerate(batch) if j != i])
            for i, image in enumerate(batch)
        ]
        corrupted = torch.from_numpy(np.stack([s.image for s in samples])[:, None])
        labels = torch.from_numpy(np.stack([s.label for s in samples])[:, None])
        return corrupted.to(images), labels.to(images)
