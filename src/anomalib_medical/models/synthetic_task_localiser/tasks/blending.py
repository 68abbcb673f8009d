"""Intra- and inter-dataset Poisson blending tasks (Baugh et al., 2023, Sec. 2.2), and Müller et al.'s P-PII.

A patch of another image is rotated (up to 45 degrees in every plane), rescaled (factor ``1 + Exp(0.1)`` or its
inverse) and blended into the target mask by Poisson image editing with mixed gradients, solved with the DST
solver of :mod:`.poisson`. The patch comes from another normal image of the data set (intra-dataset) or from an
external set (inter-dataset; ImageNet in the paper, scikit-image's bundled photographs by default here, or any
folder; for 3-D targets a folder of volumes). As in the authors' code, the patch's centre lies in its source's
foreground, and external sources are brought into the model's intensity space the way the authors prepare theirs:
histogram-equalised (256 bins) and mapped to [-1, 1] (their ImageNet subset), or z-scored within the foreground
(their volumes).

With ``probabilistic=True`` the task is Müller et al.'s probabilistic PII (UNSURE 2023, authors' code
``ividja/Probabilistic-PII``, ``batch_provider.py``): the source patch is multiplied by an integer factor drawn from
``gradient_scale`` (their 10-19), which up-scales its gradients in the guidance field; each anomaly is blended
under several raters' masks (1-9 jittered copies of the target shape); the corrupted image is the mean of all
these single blends of the normal image, so that boundaries become soft; and the label is ``min(1, label_scale *
|change|)`` (their factor 10) instead of the flipped Gaussian.
"""

from __future__ import annotations

import functools
import itertools
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage import color, data, exposure, io, transform

from ..labelling import probabilistic_labels
from .base import Box, Source, SyntheticTask, TaskOutput, as_sources
from .foreground import nonzero_foreground
from .poisson import blend_box
from .shapes import TargetShape, jitter_shape, rotation_matrix

#: scikit-image's bundled natural photographs: the offline default for inter-dataset blending of 2-D images.
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
SourceIntensity = Literal["equalise", "zscore"]
SOURCE_INTENSITIES: tuple[str, ...] = ("equalise", "zscore")


def _source_corner(
    rng: np.random.Generator, source_shape: tuple[int, ...], size: np.ndarray, foreground: np.ndarray | None
) -> np.ndarray:
    """Corner of a ``size`` region, uniform among those whose centre ``corner + size // 2`` is on the foreground.

    Without a foreground, or when no allowed centre is on it, any corner that fits is drawn.
    """
    high = np.maximum(np.asarray(source_shape) - size, 0)
    if foreground is not None:
        half = size // 2
        centres = foreground[tuple(slice(h, h + n + 1) for h, n in zip(half, high, strict=True))]
        allowed = np.flatnonzero(centres)
        if len(allowed):
            return np.asarray(np.unravel_index(allowed[rng.integers(len(allowed))], centres.shape))
    return rng.integers(0, high, endpoint=True)


def extract_source_patch(
    rng: np.random.Generator,
    source: np.ndarray,
    patch_shape: tuple[int, ...],
    foreground: np.ndarray | None = None,
) -> np.ndarray:
    """Cut a randomly rotated and rescaled region of ``source`` resampled to ``patch_shape``.

    The region spans at most 80 % of ``source`` along each axis and its centre lies on ``foreground`` (the authors'
    rule; ``None``: anywhere). Values are clipped to ``source``'s range.
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
    corner = _source_corner(rng, source.shape, size, foreground)
    region = source[tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True))]
    patch = ndimage.affine_transform(region, matrix, offset=-low, output_shape=tuple(patch_shape), order=3)
    return np.clip(patch, source.min(), source.max())


class PoissonBlendingTask(SyntheticTask):
    """Blend a patch of a source image into the target mask by Poisson image editing.

    Args:
        mix_gradients: Keep the stronger of the target's and the patch's gradient on each edge (authors: yes).
        change_tolerance: Pixels changed by more than this are added to the anomaly mask, since the blend can
            alter pixels just outside the target mask (within its bounding box).
        probabilistic: Müller et al.'s P-PII instead of Baugh et al.'s blending (see the module docstring).
        gradient_scale: P-PII: inclusive range of the integer factor of the source patch (authors: 10 to 19).
        raters: P-PII: inclusive range of the number of raters' masks per anomaly (authors: 1 to 9).
        label_scale: P-PII: labels are ``min(1, label_scale * |change|)`` (authors: 10).
        **kwargs: Target-mask options of :class:`SyntheticTask`.

    Raises:
        ValueError: If a P-PII range is empty or below its minimum (1), or ``label_scale <= 0``.

    """

    def __init__(
        self,
        mix_gradients: bool = True,
        change_tolerance: float = 1e-3,
        probabilistic: bool = False,
        gradient_scale: tuple[int, int] = (10, 19),
        raters: tuple[int, int] = (1, 9),
        label_scale: float = 10.0,
        **kwargs: float,
    ) -> None:
        super().__init__(**kwargs)
        for name, (low, high) in {"gradient_scale": gradient_scale, "raters": raters}.items():
            if not 1 <= low <= high:
                msg = f"{name} must be an integer range (low, high) with 1 <= low <= high, got {(low, high)}"
                raise ValueError(msg)
        if label_scale <= 0:
            msg = f"label_scale must be > 0, got {label_scale}"
            raise ValueError(msg)
        self.mix_gradients = mix_gradients
        self.change_tolerance = change_tolerance
        self.probabilistic = probabilistic
        self.gradient_scale = (int(gradient_scale[0]), int(gradient_scale[1]))
        self.raters = (int(raters[0]), int(raters[1]))
        self.label_scale = label_scale

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        foreground: np.ndarray | None = None,
        others: Sequence[np.ndarray] = (),
        other_foregrounds: Sequence[np.ndarray | None] = (),
    ) -> TaskOutput:
        """Corrupt a copy of ``image`` (see :meth:`SyntheticTask.__call__`); the mask includes altered pixels."""
        if self.probabilistic:
            output = self._probabilistic_blend(image, rng, foreground, others, other_foregrounds)
        else:
            output = super().__call__(image, rng, foreground, others, other_foregrounds)
        return TaskOutput(output.image, output.mask | (np.abs(output.image - image) > self.change_tolerance))

    def label(self, corrupted: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
        """Flipped-Gaussian labels, or P-PII's ``min(1, label_scale * |change|)`` inside the mask."""
        if self.probabilistic:
            return probabilistic_labels(corrupted, original, mask, self.label_scale)
        return super().label(corrupted, original, mask, sigma)

    @abstractmethod
    def source_image(self, image: np.ndarray, rng: np.random.Generator, sources: Sequence[Source]) -> Source:
        """Return an image of ``image``'s dimensions, in the model's intensity space, to cut the patch from."""

    def _patch(
        self, image: np.ndarray, shape: TargetShape, rng: np.random.Generator, sources: Sequence[Source]
    ) -> np.ndarray:
        source = self.source_image(image, rng, sources)
        return extract_source_patch(rng, source.image, shape.grid_shape, source.foreground)

    def corrupt(
        self,
        image: np.ndarray,
        box: Box,
        shape: TargetShape,
        rng: np.random.Generator,
        sources: Sequence[Source],
    ) -> np.ndarray:
        """Blend a source patch into the mask, clipped to the image's range."""
        patch = self._patch(image, shape, rng, sources)
        blended = blend_box(image[box], patch, shape.mask, self.mix_gradients)
        image[box] = np.clip(blended, image.min(), image.max())
        return shape.mask.copy()

    def _probabilistic_blend(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        foreground: np.ndarray | None,
        others: Sequence[np.ndarray],
        other_foregrounds: Sequence[np.ndarray | None],
    ) -> TaskOutput:
        """P-PII: the mean over every anomaly and rater of the normal image with that one up-scaled blend."""
        image = np.asarray(image, dtype=np.float64)
        sources = as_sources(others, other_foregrounds)
        change = np.zeros(image.shape)
        mask = np.zeros(image.shape, dtype=bool)
        blends = 0
        for shape, box in self.anomalies(image.shape, rng, foreground):
            patch = self._patch(image, shape, rng, sources) * rng.integers(*self.gradient_scale, endpoint=True)
            for _ in range(rng.integers(*self.raters, endpoint=True)):
                rater_mask = jitter_shape(rng, shape).mask
                change[box] += blend_box(image[box], patch, rater_mask, self.mix_gradients) - image[box]
                mask[box] |= rater_mask
                blends += 1
        corrupted = image + change / max(blends, 1)
        return TaskOutput(np.clip(corrupted, image.min(), image.max()), mask)


class IntraDatasetBlendingTask(PoissonBlendingTask):
    """Poisson blending of a patch from another normal image of the same data set (task 1)."""

    def source_image(self, image: np.ndarray, rng: np.random.Generator, sources: Sequence[Source]) -> Source:
        """One of ``sources`` drawn at random (the image itself, without foreground, when there are none)."""
        return sources[rng.integers(len(sources))] if len(sources) else Source(image.copy())


def _normalise(array: np.ndarray, foreground: np.ndarray | None, intensity: SourceIntensity) -> np.ndarray:
    """Equalise (256 bins, histogram of the foreground) to [-1, 1], or z-score within the foreground (0 outside)."""
    if intensity == "equalise":
        return exposure.equalize_hist(array, nbins=256, mask=foreground) * 2 - 1
    inside = np.ones(array.shape, dtype=bool) if foreground is None else foreground
    values = array[inside]
    return np.where(inside, (array - values.mean()) / (values.std() + 1e-8), 0.0)


def _read_source(source: str, ndim: int) -> np.ndarray:
    """Read a photograph name or a file as a grey array of ``ndim`` dimensions."""
    if source in SKIMAGE_PHOTOGRAPHS:
        array = getattr(data, source)()
    elif source.endswith(".npy"):
        array = np.load(source)
    else:
        array = io.imread(source)
    if ndim == 2 and array.ndim == 3 and array.shape[-1] in {3, 4}:  # colour (RGB or RGBA): keep the grey level
        array = color.rgb2gray(array[..., :3])
    if array.ndim != ndim:
        kind = "volumes (.npy arrays of 3 dimensions)" if ndim == 3 else "2-D images"
        msg = f"blending source {source} has shape {array.shape}: a {ndim}-D target needs {kind}"
        raise ValueError(msg)
    return np.asarray(array, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def load_source_image(source: str, shape: tuple[int, ...], intensity: SourceIntensity = "equalise") -> Source:
    """Load an external source (a scikit-image photograph name or a file) for a target of ``shape``.

    2-D sources (grey or colour) have no foreground (the authors' ImageNet); a volume's foreground is
    ``binary_fill_holes(v != 0)`` (the authors' rule), computed before resizing. The source is resized to ``shape``
    (anti-aliased; the foreground by nearest neighbour) and normalised by ``intensity`` (see the module docstring;
    the authors equalise ImageNet at 512x512 before resizing it to 256x256). Cached (64 entries): read once per
    shape. The returned arrays are shared: do not modify them.

    Raises:
        ValueError: If the source's dimensions do not match ``shape``'s.

    """
    array = _read_source(source, len(shape))
    foreground = nonzero_foreground(array) if array.ndim == 3 else None
    if array.shape != shape:
        array = transform.resize(array, shape, anti_aliasing=True)
        if foreground is not None:
            foreground = transform.resize(foreground, shape, order=0, anti_aliasing=False) > 0.5
    if foreground is not None and not foreground.any():
        foreground = None
    return Source(_normalise(array, foreground, intensity), foreground)


class InterDatasetBlendingTask(PoissonBlendingTask):
    """Poisson blending of a patch from an external image set (task 2).

    The folder is listed at the first blend, not at construction, so that it may be written after the model is
    built (e.g. by a datamodule's ``prepare_data``, as ``BrainPhantom(foreign_dir=...)``).

    Args:
        source_images: Folder of sources or ``None`` for scikit-image's bundled photographs (2-D targets only).
            For 2-D targets: images (``.png``, ``.jpg``, ``.tif``, ``.npy``...; grey or colour); for 3-D targets:
            volumes as ``.npy`` arrays. Sources are resized to the target's shape.
        source_intensity: ``"equalise"`` (histogram equalisation mapped to [-1, 1], as the authors' ImageNet) or
            ``"zscore"`` (z-scored within the source's foreground, as the authors' volumes for z-scored MRI).
        **kwargs: Options of :class:`PoissonBlendingTask`.

    Raises:
        ValueError: If ``source_intensity`` is unknown.

    """

    def __init__(
        self,
        source_images: str | Path | None = None,
        source_intensity: SourceIntensity = "equalise",
        **kwargs: float,
    ) -> None:
        super().__init__(**kwargs)
        if source_intensity not in SOURCE_INTENSITIES:
            msg = f"source_intensity must be one of {SOURCE_INTENSITIES}, got {source_intensity!r}"
            raise ValueError(msg)
        self.source_intensity = source_intensity
        self.folder = None if source_images is None else Path(source_images)

    @functools.cached_property
    def sources(self) -> tuple[str, ...]:
        """Paths of the sources (listed once, at first use).

        Raises:
            FileNotFoundError: If the folder holds no source (or does not exist).

        """
        if self.folder is None:
            return SKIMAGE_PHOTOGRAPHS
        sources = tuple(str(p) for p in sorted(self.folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
        if not sources:
            msg = f"inter_dataset_blending: no source images found under {self.folder} (suffixes {IMAGE_SUFFIXES})"
            raise FileNotFoundError(msg)
        return sources

    def source_image(self, image: np.ndarray, rng: np.random.Generator, sources: Sequence[Source]) -> Source:
        """Return a random external source for ``image``'s shape.

        Raises:
            ValueError: If ``image`` is 3-D and no folder of volumes was given, or a source's dimensions differ.

        """
        del sources
        if self.folder is None and image.ndim != 2:
            msg = (
                f"inter_dataset_blending of a {image.ndim}-D target needs source_images: a folder of volumes (.npy); "
                "the default scikit-image photographs are 2-D"
            )
            raise ValueError(msg)
        return load_source_image(self.sources[rng.integers(len(self.sources))], image.shape, self.source_intensity)
