"""Intra- and inter-dataset Poisson blending tasks (Baugh et al., 2023, Sec. 2.2).

A patch of another image is rotated (up to 45 degrees in every plane), rescaled (factor ``1 + Exp(0.1)`` or its
inverse) and blended into the target mask by Poisson image editing with mixed gradients, solved with the DST
solver of :mod:`.poisson`. The patch comes from another normal image of the data set (intra-dataset) or from an
external set of natural images (inter-dataset; ImageNet in the paper, scikit-image's bundled photographs by
default here, or any folder).
"""

from __future__ import annotations

import functools
import itertools
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import color, data, io, transform

from .base import Box, SyntheticTask, TaskOutput
from .poisson import poisson_blend
from .shapes import TargetShape, rotation_matrix

#: scikit-image's bundled natural photographs: the offline default for inter-dataset blending.
SKIMAGE_PHOTOGRAPHS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "page",
    "rocket",
    "text",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"}


def extract_source_patch(rng: np.random.Generator, source: np.ndarray, patch_shape: tuple[int, ...]) -> np.ndarray:
    """Cut a randomly rotated and rescaled region of ``source`` resampled to ``patch_shape``.

    The region spans at most 80 % of ``source`` along each axis; values are clipped to ``source``'s range.
    """
    ndim = source.ndim
    matrix = np.identity(ndim)
    for axes in itertools.combinations(range(ndim), 2):
        matrix = rotation_matrix(ndim, axes, rng.uniform(-np.pi / 4, np.pi / 4)) @ matrix

    corners = np.array(list(itertools.product(*[(0, n) for n in patch_shape]))).T

    def extent(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved = m @ corners
        low = np.floor(moved.min(axis=1))
        return low, np.ceil(moved.max(axis=1)) - low

    _, size = extent(matrix)
    change = 1 + rng.exponential(0.1)
    scale = min(change if rng.random() < 0.5 else 1 / change, float(np.min(0.8 * np.asarray(source.shape) / size)))
    matrix = matrix * scale
    low, size = extent(matrix)
    size = size.astype(int)
    corner = rng.integers(0, np.maximum(np.asarray(source.shape) - size, 0), endpoint=True)
    region = source[tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True))]
    patch = ndimage.affine_transform(region, matrix, offset=-low, output_shape=tuple(patch_shape), order=3)
    return np.clip(patch, source.min(), source.max())


class PoissonBlendingTask(SyntheticTask):
    """Blend a patch of a source image into the target mask by Poisson image editing.

    Args:
        mix_gradients: Keep the stronger of the target's and the patch's gradient on each edge (authors: yes).
        change_tolerance: Pixels changed by more than this are added to the anomaly mask, since the blend can
            alter pixels just outside the target mask (within its bounding box).
        **kwargs: Target-mask options of :class:`SyntheticTask`.

    """

    def __init__(self, mix_gradients: bool = True, change_tolerance: float = 1e-3, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.mix_gradients = mix_gradients
        self.change_tolerance = change_tolerance

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        foreground: np.ndarray | None = None,
        others: Sequence[np.ndarray] = (),
    ) -> TaskOutput:
        """Corrupt a copy of ``image`` (see :meth:`SyntheticTask.__call__`); the mask includes altered pixels."""
        output = super().__call__(image, rng, foreground, others)
        return TaskOutput(output.image, output.mask | (np.abs(output.image - image) > self.change_tolerance))

    @abstractmethod
    def source_image(self, image: np.ndarray, rng: np.random.Generator, others: Sequence[np.ndarray]) -> np.ndarray:
        """Return an image of ``image``'s shape and intensity units to cut the patch from."""

    def corrupt(
        self,
        image: np.ndarray,
        box: Box,
        shape: TargetShape,
        rng: np.random.Generator,
        others: Sequence[np.ndarray],
    ) -> np.ndarray:
        """Blend a source patch into the mask, clipped to the image's range."""
        patch = extract_source_patch(rng, self.source_image(image, rng, others), shape.grid_shape)
        corner = tuple(b.start for b in box)
        blended = poisson_blend(image, patch, shape.mask, corner, self.mix_gradients)[box]
        image[box] = np.clip(blended, image.min(), image.max())
        return shape.mask.copy()


class IntraDatasetBlendingTask(PoissonBlendingTask):
    """Poisson blending of a patch from another normal image of the same data set (task 1)."""

    def source_image(self, image: np.ndarray, rng: np.random.Generator, others: Sequence[np.ndarray]) -> np.ndarray:
        """One of ``others`` drawn at random (the image itself when there are none)."""
        return np.asarray(others[rng.integers(len(others))], dtype=np.float64) if len(others) else image.copy()


@functools.lru_cache(maxsize=64)
def load_source_image(source: str, shape: tuple[int, ...]) -> np.ndarray:
    """Load an external image (a scikit-image photograph name or a file), grey, resized to ``shape``, in [0, 1].

    Cached (64 entries): each source is read and resized once per shape.
    """
    if source in SKIMAGE_PHOTOGRAPHS:
        array = getattr(data, source)()
    elif source.endswith(".npy"):
        array = np.load(source)
    else:
        array = io.imread(source)
    if array.ndim == len(shape) + 1:  # colour (RGB or RGBA): keep the grey level
        array = color.rgb2gray(array[..., :3])
    array = np.asarray(array, dtype=np.float64)
    array = transform.resize(array, shape, anti_aliasing=True) if array.shape != shape else array
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if high > low else np.zeros(shape)


class InterDatasetBlendingTask(PoissonBlendingTask):
    """Poisson blending of a patch from an external image set (task 2).

    Args:
        source_images: Folder of images (``.png``, ``.jpg``, ``.tif``, ``.npy``...; grey or colour) or ``None`` for
            scikit-image's bundled photographs. Sources are resized to the target's shape and their intensities
            mapped onto the target's range.
        **kwargs: Options of :class:`PoissonBlendingTask`.

    """

    def __init__(self, source_images: str | Path | None = None, **kwargs: float) -> None:
        super().__init__(**kwargs)
        if source_images is None:
            self.sources: tuple[str, ...] = SKIMAGE_PHOTOGRAPHS
        else:
            folder = Path(source_images)
            self.sources = tuple(str(p) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.sources:
                msg = f"no images found under {folder}"
                raise FileNotFoundError(msg)

    def source_image(self, image: np.ndarray, rng: np.random.Generator, others: Sequence[np.ndarray]) -> np.ndarray:
        """Return a random external image resized to ``image``'s shape, its range mapped onto ``image``'s."""
        del others
        source = load_source_image(self.sources[rng.integers(len(self.sources))], image.shape)
        return image.min() + source * (image.max() - image.min())
