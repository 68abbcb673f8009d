"""Target masks of the synthetic tasks: random ellipses/rectangles (ellipsoids/cuboids in 3-D) and their placement.

Follows Baugh et al. (2023, Sec. 2.2) and the authors' code: each axis length is drawn from a shifted gamma
distribution as in NSA (Schlüter et al., 2022), clipped to [6 %, 80 %] of the image; the shape is sheared and
rotated in every plane, then scaled back inside the size bound. A shape is placed so that at least half of it
lies on the image foreground.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import numpy as np
from scipy import signal

ShapeKind = Literal["ellipse", "rectangle"]


@dataclass(frozen=True)
class TargetShape:
    """A sheared, rotated hyper-ellipse or hyper-rectangle rasterised on its bounding grid.

    Attributes:
        kind: ``"ellipse"`` or ``"rectangle"``.
        half_size: Half axis lengths in the shape's own (aligned) frame, shape ``(D,)``.
        inverse_transform: Maps grid offsets from the centre to the aligned frame, shape ``(D, D)``.
        centre: Grid index of the shape's centre, shape ``(D,)``.
        grid_shape: Shape of the bounding grid.

    """

    kind: ShapeKind
    half_size: np.ndarray
    inverse_transform: np.ndarray
    centre: np.ndarray
    grid_shape: tuple[int, ...]

    @cached_property
    def mask(self) -> np.ndarray:
        """Boolean rasterisation of the shape on its bounding grid."""
        points = np.indices(self.grid_shape).reshape(len(self.grid_shape), -1).astype(float)
        return self.contains(points).reshape(self.grid_shape)

    def _aligned(self, points: np.ndarray) -> np.ndarray:
        return self.inverse_transform @ (points - self.centre[:, None])

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether grid points ``(D, N)`` lie inside the shape."""
        scaled = self._aligned(points) / self.half_size[:, None]
        if self.kind == "ellipse":
            return np.sum(scaled**2, axis=0) <= 1
        return np.all(np.abs(scaled) <= 1, axis=0)

    def boundary_distance(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Distance from interior grid points ``(D, N)`` to the shape's edge along unit ``directions`` ``(D, N)``."""
        origin = self._aligned(origins) / self.half_size[:, None]
        step = (self.inverse_transform @ directions) / self.half_size[:, None]
        if self.kind == "ellipse":
            a = np.sum(step**2, axis=0)
            b = 2 * np.sum(origin * step, axis=0)
            c = np.sum(origin**2, axis=0) - 1
            return (-b + np.sqrt(np.maximum(b**2 - 4 * a * c, 0))) / (2 * a)
        with np.errstate(divide="ignore", invalid="ignore"):
            exits = np.where(step != 0, (np.sign(step) - origin) / step, np.inf)
        return np.min(exits, axis=0)


def rotation_matrix(ndim: int, axes: tuple[int, int], angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) in the plane of ``axes``."""
    rotation = np.identity(ndim)
    first, second = axes
    rotation[first, first] = rotation[second, second] = np.cos(angle)
    rotation[first, second] = -np.sin(angle)
    rotation[second, first] = np.sin(angle)
    return rotation


def _grid_bounds(transform: np.ndarray, half_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(list(itertools.product(*[(-h, h) for h in half_size]))).T
    moved = transform @ corners
    return np.floor(moved.min(axis=1)).astype(int), np.ceil(moved.max(axis=1)).astype(int)


def size_bounds(image_shape: tuple[int, ...], min_size: float, max_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds in pixels of the target mask's extent along each axis."""
    dims = np.asarray(image_shape, dtype=float)
    lower = np.maximum(np.round(min_size * dims), 1).astype(int)
    upper = np.maximum(np.round(max_size * dims).astype(int), lower)
    return lower, upper


def sample_target_shape(
    rng: np.random.Generator,
    image_shape: tuple[int, ...],
    min_size: float = 0.06,
    max_size: float = 0.8,
    kind: ShapeKind | None = None,
) -> TargetShape:
    """Draw a random target shape for an image of ``image_shape``.

    Args:
        rng: Random generator (all randomness comes from it).
        image_shape: Spatial shape of the image.
        min_size: Smallest axis length as a fraction of the image's.
        max_size: Largest bounding-grid extent as a fraction of the image's.
        kind: Force an ellipse or a rectangle; by default each is drawn with probability 1/2.

    Returns:
        The shape, whose bounding grid fits within ``max_size`` of the image along every axis.

    """
    ndim = len(image_shape)
    lower, upper = size_bounds(image_shape, min_size, max_size)
    dims = np.asarray(image_shape, dtype=float)
    lengths = np.clip(((0.03 + rng.gamma(2, 0.1, size=ndim)) * dims).astype(int), lower, upper)
    kind = kind or ("ellipse" if rng.random() < 0.5 else "rectangle")
    half_size = lengths / 2

    transform = np.identity(ndim)
    for axis in range(ndim):
        other = rng.choice([a for a in range(ndim) if a != axis])
        transform[axis, other] = rng.normal(scale=0.2)
    for axes in itertools.combinations(range(ndim), 2):
        transform = rotation_matrix(ndim, axes, rng.uniform(-np.pi / 2, np.pi / 2)) @ transform

    low, high = _grid_bounds(transform, half_size)
    while np.any(high - low + 1 > upper):
        transform = transform * min(np.min(upper / (high - low + 1)), 0.98)
        low, high = _grid_bounds(transform, half_size)

    return TargetShape(
        kind, half_size, np.linalg.inv(transform), -low.astype(float), tuple(int(n) for n in high - low + 1)
    )


def valid_corners(mask: np.ndarray, foreground: np.ndarray, min_overlap: float) -> np.ndarray:
    """Corners ``(N, D)`` at which at least ``min_overlap`` of ``mask`` lies on ``foreground``."""
    overlap = signal.fftconvolve(
        foreground.astype(float), mask[tuple(slice(None, None, -1) for _ in mask.shape)], "valid"
    )
    # Both arrays are binary: the overlap is an integer count up to FFT round-off.
    return np.argwhere(np.round(overlap) >= min_overlap * mask.sum())


def place_shape(
    rng: np.random.Generator,
    mask: np.ndarray,
    image_shape: tuple[int, ...],
    foreground: np.ndarray | None = None,
    min_overlap: float = 0.5,
    rejection_draws: int = 32,
) -> np.ndarray | None:
    """Draw a corner for ``mask`` in the image, uniformly among those meeting the foreground-overlap rule.

    Up to ``rejection_draws`` uniform corners are tried first (each accepted one is uniform among the valid
    corners, as in the authors' loop, and costs one window sum); only when all are rejected is the overlap of
    every corner computed (one FFT convolution over the image), so that rare valid corners are still found and
    impossible cases end.

    Returns:
        The corner index, or ``None`` if no position satisfies the rule.

    """
    high = np.asarray(image_shape) - mask.shape
    if foreground is None:
        return rng.integers(0, high, endpoint=True)
    needed = min_overlap * mask.sum()
    for _ in range(rejection_draws):
        corner = rng.integers(0, high, endpoint=True)
        window = foreground[tuple(slice(c, c + n) for c, n in zip(corner, mask.shape, strict=True))]
        if np.count_nonzero(window & mask) >= needed:
            return corner
    corners = valid_corners(mask, foreground, min_overlap)
    if len(corners) == 0:
        return None
    return corners[rng.integers(len(corners))]


def jitter_shape(rng: np.random.Generator, shape: TargetShape, centre_spread: float = 1 / 12) -> TargetShape:
    """Draw a rater's version of ``shape`` on the same grid (Müller et al.'s P-PII).

    The centre moves by ``N(0, (centre_spread * extent)^2)`` along each axis and each half axis by ``N(0, 1/4)``
    pixels, as the per-rater masks of the authors' ``batch_provider.py`` (centre spread a twelfth of the patch,
    radius spread half a pixel).
    """
    extent = np.asarray(shape.grid_shape, dtype=float)
    centre = shape.centre + rng.normal(scale=centre_spread * extent)
    half_size = np.maximum(shape.half_size + rng.normal(scale=0.5, size=len(extent)), 0.5)
    return replace(shape, centre=centre, half_size=half_size)
