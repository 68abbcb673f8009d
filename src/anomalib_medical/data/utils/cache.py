"""Preprocess radiographs once into a cache of small PNGs (and box masks), keyed by the settings.

Decoding full-size DICOMs (or 2,000-pixel JPEGs) every epoch is far too slow, so each datamodule reads every
selected image once, applies :class:`Preprocessing` (intensity transform, resize, optional histogram
equalisation) and stores an 8-bit greyscale PNG at the training resolution. Ground-truth masks are drawn from
bounding boxes at that same resolution, with the box coordinates scaled like the image.

Layout of a cache folder (``<cache_dir>/<name>-<settings key>/``)::

    settings.json             the preprocessing settings this folder was made with (for people)
    images/<id>.png           one preprocessed image per id (original size in its ``original_size`` text chunk)
    masks/<id>-<boxes>.png    one mask per id and set of boxes (``<boxes>`` hashes the box coordinates)

Different settings give a different folder (invalidation); different boxes for the same image give a different
mask file. Every file is written under a temporary name and renamed into place with :func:`os.replace`, so a
file with a final name is always complete: an interrupted run leaves nothing a later run would trust, and the
next run resumes with the ids still missing.
"""

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from skimage.exposure import equalize_hist
from tqdm.auto import tqdm

from anomalib_medical.data.utils.boxes import Box, boxes_to_mask
from anomalib_medical.data.utils.dicom import IntensityFallback, read_dicom
from anomalib_medical.data.utils.images import InvalidImageError

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
"""Bumped whenever the preprocessing code changes what it writes, so that old caches are not reused."""

DICOM_SUFFIXES = (".dcm", ".dicom")
"""File suffixes read with :func:`~anomalib_medical.data.utils.dicom.read_dicom`; others are read with Pillow."""

_ORIGINAL_SIZE = "original_size"


@dataclass(frozen=True)
class Preprocessing:
    """How source images become cached images.

    Args:
        image_size: ``(height, width)`` of the cached images, or one int for square images (the source is resized
            to it, aspect ratio not kept).
        apply_window: For DICOM, apply the file's VOI LUT or window centre/width when it has one.
        intensity_fallback: For DICOM without (or not using) a window: ``"minmax"`` or ``"bit_depth"``
            (see :func:`~anomalib_medical.data.utils.dicom.read_dicom`).
        histogram_equalisation: Equalise the histogram of the resized image (256 bins).

    """

    image_size: int | tuple[int, int] = (256, 256)
    apply_window: bool = True
    intensity_fallback: IntensityFallback = "minmax"
    histogram_equalisation: bool = False

    def __post_init__(self) -> None:
        """Check the settings."""
        size = (self.image_size,) * 2 if isinstance(self.image_size, int) else tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) < 1:
            msg = f"image_size must be two positive integers (height, width), got {self.image_size!r}."
            raise ValueError(msg)
        object.__setattr__(self, "image_size", size)
        if self.intensity_fallback not in {"minmax", "bit_depth"}:
            msg = f"intensity_fallback must be 'minmax' or 'bit_depth', got {self.intensity_fallback!r}."
            raise ValueError(msg)

    @property
    def key(self) -> str:
        """Short hash of the settings and the cache format version."""
        blob = json.dumps({"version": CACHE_FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def load(self, source: Path) -> np.ndarray:
        """Read a source image as a ``float`` greyscale array in ``[0, 1]`` (DICOM or any Pillow format)."""
        if source.suffix.lower() in DICOM_SUFFIXES:
            return read_dicom(source, apply_window=self.apply_window, fallback=self.intensity_fallback)
        try:
            with Image.open(source) as image:
                array = np.asarray(image.convert("L") if image.mode not in {"L", "I;16", "I"} else image)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            raise InvalidImageError(source, f"cannot be decoded ({error})") from error
        scale = 255.0 if array.dtype == np.uint8 else 65535.0
        return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize (and equalise) a ``[0, 1]`` image; return it as ``uint8``."""
        height, width = self.image_size
        resized = Image.fromarray(image.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
        array = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
        if self.histogram_equalisation and array.max() > array.min():
            array = equalize_hist(array, nbins=256)
        return np.round(array * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class CacheEntry:
    """One image to cache.

    Args:
        key: Unique id, used as the cached file's relative path (``/`` makes sub-folders).
        source: Original image file (DICOM, JPEG, PNG...).
        boxes: Boxes of the ground-truth mask in original pixel coordinates; ``None`` for no mask (normal images,
            or data sets without localisation); an empty tuple gives an empty mask.

    """

    key: str
    source: Path
    boxes: tuple[Box, ...] | None = None

    def __post_init__(self) -> None:
        """Reject keys that would escape the cache folder."""
        parts = PurePosixPath(self.key).parts
        if not parts or PurePosixPath(self.key).is_absolute() or ".." in parts or "\\" in self.key:
            msg = f"Invalid cache key {self.key!r}: must be a relative path without '..'."
            raise ValueError(msg)


@dataclass(frozen=True)
class CachedFiles:
    """Paths of an entry's cached image and mask (``None`` when the entry has no boxes)."""

    image: Path
    mask: Path | None


class RadiographCache:
    """A folder of preprocessed images and masks for one set of :class:`Preprocessing` settings.

    Args:
        root: Parent folder of all caches (e.g. ``<data root>_cache``).
        name: Data set name, the first part of the folder name.
        preprocessing: The settings; their hash is the second part of the folder name.

    """

    def __init__(self, root: str | Path, name: str, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing
        self.directory = Path(root) / f"{name.lower()}-{preprocessing.key}"

    def files(self, entry: CacheEntry) -> CachedFiles:
        """Where the cached image and mask of ``entry`` are (whether or not they exist yet)."""
        image = self.directory / "images" / f"{entry.key}.png"
        if entry.boxes is None:
            return CachedFiles(image, None)
        digest = hashlib.sha256(json.dumps(sorted(entry.boxes)).encode()).hexdigest()[:12]
        return CachedFiles(image, self.directory / "masks" / f"{entry.key}-{digest}.png")

    def missing(self, entries: Sequence[CacheEntry]) -> list[CacheEntry]:
        """Return the entries whose image or mask is not cached yet."""
        result = []
        for entry in entries:
            files = self.files(entry)
            if not files.image.is_file() or (files.mask is not None and not files.mask.is_file()):
                result.append(entry)
        return result

    def build(self, entries: Sequence[CacheEntry], workers: int = 0) -> list[CachedFiles]:
        """Preprocess the entries that are not cached yet; return the files of all entries, in order.

        Args:
            entries: Images to cache; keys must be unique.
            workers: Threads to use (decoding and resizing release the GIL); ``0`` or ``1`` works serially.

        Returns:
            The cached files of each entry.

        Raises:
            ValueError: For duplicate keys, or an unreadable source (naming the file).
            FileNotFoundError: For a missing source file.

        """
        keys = [entry.key for entry in entries]
        if len(set(keys)) != len(keys):
            duplicates = sorted({key for key in keys if keys.count(key) > 1})[:5]
            msg = f"Duplicate image ids in the cache request: {duplicates}."
            raise ValueError(msg)
        todo = self.missing(entries)
        if todo:
            self._write_settings()
            logger.info("Preprocessing %d of %d images into %s", len(todo), len(entries), self.directory)
            description = f"Preprocessing into {self.directory.name}"
            with tqdm(total=len(todo), desc=description, unit="image") as bar:
                if workers > 1:
                    with ThreadPoolExecutor(max_workers=workers) as pool:
                        futures = [pool.submit(self._build_entry, entry) for entry in todo]
                        for future in futures:
                            future.result()
                            bar.update()
                else:
                    for entry in todo:
                        self._build_entry(entry)
                        bar.update()
        return [self.files(entry) for entry in entries]

    def _build_entry(self, entry: CacheEntry) -> None:
        """Write the image (if missing) and the mask (if any, and missing) of one entry."""
        files = self.files(entry)
        original_size: tuple[int, int] | None = None
        if not files.image.is_file():
            if not entry.source.is_file():
                msg = f"Image {entry.source} (id {entry.key!r}) is listed in the labels but does not exist."
                raise FileNotFoundError(msg)
            image = self.preprocessing.load(entry.source)
            original_size = (int(image.shape[0]), int(image.shape[1]))
            text = {_ORIGINAL_SIZE: f"{original_size[0]}x{original_size[1]}"}
            _write_png(self.preprocessing.apply(image), files.image, text)
        if files.mask is not None and not files.mask.is_file():
            size = original_size or _read_original_size(files.image)
            mask = boxes_to_mask(entry.boxes or (), size, self.preprocessing.image_size)
            _write_png(mask, files.mask)

    def _write_settings(self) -> None:
        """Record the settings of this cache folder in ``settings.json``."""
        path = self.directory / "settings.json"
        if path.is_file():
            return
        content = json.dumps({"version": CACHE_FORMAT_VERSION, **asdict(self.preprocessing)}, indent=2)
        _atomic_write(path, lambda tmp: tmp.write_text(content + "\n"))


def _read_original_size(path: Path) -> tuple[int, int]:
    """Original ``(height, width)`` stored in a cached image's text chunk."""
    with Image.open(path) as image:
        value = image.text.get(_ORIGINAL_SIZE, "")  # type: ignore[attr-defined]
    try:
        height, width = (int(side) for side in value.split("x"))
    except ValueError:
        msg = f"{path}: cached image without a valid '{_ORIGINAL_SIZE}' entry; delete it to rebuild it."
        raise ValueError(msg) from None
    return height, width


def _write_png(array: np.ndarray, path: Path, text: dict[str, str] | None = None) -> None:
    """Save a ``uint8`` greyscale array as PNG, atomically."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    _atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp)`` to a temporary file next to ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
