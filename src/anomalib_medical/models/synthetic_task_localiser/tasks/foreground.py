"""Foreground rules of the synthetic tasks: where anomalies may lie and where blending patches are cut from.

Baugh et al. place each anomaly so that at least half of it lies on the object and require a blending patch's
centre to lie on its source's object. Their brain-MRI object is ``binary_fill_holes(x != 0)`` of the z-scored
volume (background exactly 0); chest X-rays and ImageNet sources have none (the whole image).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

ForegroundRule = Literal["threshold", "nonzero"]
FOREGROUND_RULES: tuple[str, ...] = ("threshold", "nonzero")


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (face connectivity), 2-3 times faster on volumes.

    The background components (connected through faces) that touch the array's border stay background; every
    other pixel is foreground.
    """
    components, count = ndimage.label(~mask)
    border = np.zeros(count + 1, dtype=bool)
    for axis in range(mask.ndim):
        border[np.take(components, [0, -1], axis=axis)] = True
    border[0] = False  # label 0 is the mask itself
    return ~border[components]


def nonzero_foreground(image: np.ndarray) -> np.ndarray:
    """Return the non-zero voxels with their enclosed holes filled (the authors' brain rule)."""
    return fill_holes(image != 0)


def threshold_foreground(image: np.ndarray, threshold: float | None) -> np.ndarray | None:
    """Pixels above ``min + threshold * (max - min)`` (``None``: everywhere)."""
    if threshold is None:
        return None
    low, high = image.min(), image.max()
    return image > low + threshold * (high - low)


def check_foreground_rule(rule: str) -> None:
    """Raise a ``ValueError`` naming ``rule`` unless it is one of :data:`FOREGROUND_RULES`."""
    if rule not in FOREGROUND_RULES:
        msg = f"foreground_rule must be one of {FOREGROUND_RULES}, got {rule!r}"
        raise ValueError(msg)
