"""Apply synthetic tasks to batches and label the result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .base import SyntheticTask
from .foreground import ForegroundRule, check_foreground_rule, nonzero_foreground, threshold_foreground


class SyntheticSample(NamedTuple):
    """A corrupted image, its pixel labels and the mask of altered pixels."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray


class SyntheticAnomalyGenerator:
    """Corrupt each image with one task drawn uniformly from ``tasks`` and label it with the task's labels.

    The foreground of each image (target and intra-dataset source) follows ``foreground_rule``: anomalies keep the
    tasks' overlap rule with it and blending patches are centred on it.

    Args:
        tasks: Tasks to draw from.
        sigma: Standard deviation of the flipped-Gaussian labelling function (:func:`..labelling.flipped_gaussian`).
        foreground_threshold: With the ``"threshold"`` rule, the foreground is where the intensity exceeds this
            fraction of the image's range (``min + t * (max - min)``); ``None``: the whole image.
        foreground_rule: ``"threshold"`` (above) or ``"nonzero"``: ``binary_fill_holes(x != 0)``, the authors'
            brain-MRI rule for z-scored volumes with a zero background.

    Raises:
        ValueError: If ``tasks`` is empty or ``foreground_rule`` unknown.

    """

    def __init__(
        self,
        tasks: Sequence[SyntheticTask],
        sigma: float = 0.2,
        foreground_threshold: float | None = None,
        foreground_rule: ForegroundRule = "threshold",
    ) -> None:
        if not tasks:
            msg = "at least one task is needed"
            raise ValueError(msg)
        check_foreground_rule(foreground_rule)
        self.tasks = list(tasks)
        self.sigma = sigma
        self.foreground_threshold = foreground_threshold
        self.foreground_rule = foreground_rule

    def foreground(self, image: np.ndarray) -> np.ndarray | None:
        """Foreground mask of ``image`` (``None``: everywhere)."""
        if self.foreground_rule == "nonzero":
            return nonzero_foreground(image)
        return threshold_foreground(image, self.foreground_threshold)

    def corrupt(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        others: Sequence[np.ndarray] = (),
        other_foregrounds: Sequence[np.ndarray | None] | None = None,
    ) -> SyntheticSample:
        """Corrupt one single-channel image (any number of dimensions) with a random task.

        ``other_foregrounds`` defaults to the foreground rule applied to each of ``others``.
        """
        task = self.tasks[rng.integers(len(self.tasks))]
        if other_foregrounds is None:
            other_foregrounds = [self.foreground(other) for other in others]
        corrupted, mask = task(image, rng, self.foreground(image), others, other_foregrounds)
        return SyntheticSample(corrupted, task.label(corrupted, image, mask, self.sigma), mask)

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
        foregrounds = [self.foreground(image) for image in batch]
        samples = [
            self.corrupt(image, rng, [*batch[:i], *batch[i + 1 :]], [*foregrounds[:i], *foregrounds[i + 1 :]])
            for i, image in enumerate(batch)
        ]
        corrupted = torch.from_numpy(np.stack([s.image for s in samples])[:, None])
        labels = torch.from_numpy(np.stack([s.label for s in samples])[:, None])
        return corrupted.to(images), labels.to(images)
