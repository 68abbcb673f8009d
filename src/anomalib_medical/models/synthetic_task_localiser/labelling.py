"""Labels of synthetic anomalies: the flipped-Gaussian labelling function (Baugh et al., 2023, Sec. 2.3).

The label of a pixel grows with how much the task changed it: ``y = 1 - p(x) / p(0)`` with ``X ~ N(0, sigma^2)``,
i.e. ``y = 1 - exp(-x^2 / (2 sigma^2))``, where ``x`` is the absolute intensity change. It is 0 for no change,
continuous and flat near 0 (unlike NSA's logistic function), and tends to 1 for large changes. Each anomalous
region is then post-processed as in the authors' code: a grey closing, then the filling of regional minima not
connected to the region's bounding box (morphological reconstruction by erosion), so that unchanged pixels
surrounded by changed ones are labelled like their surroundings.

Müller et al.'s probabilistic PII (UNSURE 2023) labels its blends instead by the scaled absolute change,
``min(1, k |x|)`` with ``k = 10`` in the authors' ``batch_provider.py`` (:func:`probabilistic_labels`): linear,
not flat near 0, saturating at ``|x| = 1 / k``, and without the closing and filling (their blends are soft-edged
means over several raters' masks, so the label is soft too). The authors do not clip at 1; we do, so that labels
stay in the [0, 1] range of the localiser's output and metrics.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import morphology


def flipped_gaussian(change: np.ndarray | float, sigma: float = 0.2) -> np.ndarray:
    """Labelling function ``1 - exp(-x^2 / (2 sigma^2))`` of the absolute intensity change ``x``."""
    return 1 - np.exp(-np.square(change) / (2 * sigma**2))


def fill_region(labels: np.ndarray) -> np.ndarray:
    """Grey closing, then filling of the minima not connected to the array's border (reconstruction by erosion)."""
    footprint = ndimage.generate_binary_structure(labels.ndim, 2)
    closed = ndimage.grey_closing(labels, footprint=footprint)
    if min(closed.shape) < 3:
        return closed
    seed = closed.copy()
    seed[(slice(1, -1),) * labels.ndim] = closed.max()
    return morphology.reconstruction(seed, closed, method="erosion", footprint=footprint)


def label_anomalies(corrupted: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float = 0.2) -> np.ndarray:
    """Pixel labels of a corrupted image.

    Args:
        corrupted: Image after the synthetic task.
        original: Image before it.
        mask: Boolean mask of the pixels the task altered.
        sigma: Standard deviation of the labelling function, in intensity units (paper: 0.2 for images in [-1, 1]).

    Returns:
        Labels in [0, 1), zero outside the anomalous regions' bounding boxes.

    """
    labels = flipped_gaussian(np.abs(corrupted - original) * mask, sigma)
    regions, _ = ndimage.label(mask)
    for region in ndimage.find_objects(regions):
        labels[region] = fill_region(labels[region])
    return labels


def probabilistic_labels(
    corrupted: np.ndarray, original: np.ndarray, mask: np.ndarray, scale: float = 10.0
) -> np.ndarray:
    """P-PII labels ``min(1, scale * |corrupted - original|)`` inside ``mask``, zero outside."""
    return np.minimum(scale * np.abs(corrupted - original), 1.0) * mask
