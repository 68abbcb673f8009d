"""Preprocess radiographs once into a cache of 16-bit PNGs (and box masks), keyed by the source file and the settings.

Decoding full-size DICOMs (or 2,000-pixel JPEGs) every epoch is far too slow, so each datamodule reads every
selected image once at its full depth (:func:`~anomalib_medical.data.utils.reader.read_grey_or_rgb`: DICOM,
8/16-bit either byte order, float TIFF), applies :class:`Preprocessing` (resize, optional histogram equalisation;
or a preset overriding :meth:`Preprocessing.preprocess`, such as
:class:`~anomalib_medical.data.utils.baugh.BaughPreprocessing`) and stores a 16-bit greyscale PNG (value
``round(x * 65535)``) at the training resolution, so nothing of a 12- or 16-bit source is lost;
:func:`~anomalib_medical.data.utils.reader.read_image_tensor` reads it back to ``[0, 1]``.
Ground-truth masks are drawn from bounding boxes at that same resolution, with the box coordinates scaled like the
image (8-bit, 0 or 255).

Layout of a cache folder (``<cache_dir>/<name>-<settings key>/``)::

    settings.json                        the preprocessing settings this folder was made with (for people)
    images/<id>-<source>.png             one preprocessed image per id and source file
    masks/<id>-<source>-<boxes>.png      one mask per id, source file and set of boxes

What an entry is keyed on:

- the settings and :data:`CACHE_FORMAT_VERSION`: their hash names the folder, so other settings use another one;
- the source file's resolved path: its hash (``<source>``) is part of the file names, so data sets with the same
  name and ids but different roots can share one ``cache_dir`` without being served each other's images;
- the source file's version (resolved path, size and modification time in nanoseconds): recorded in each cached
  PNG's ``source`` text chunk (with the original size in ``original_size``). A cached file is reused only if it
  decodes completely, has the expected size and mode, and records the source's current version; otherwise
  (source replaced or touched, file truncated or damaged) it is rebuilt, and the rebuilt files are logged with
  their number and a few names;
- the boxes: their hash (``<boxes>``) is part of a mask's name, so new labels give new masks.

Every file is written under a temporary name and renamed into place with :func:`os.replace`, so a file with a final
name is always complete: an interrupted run leaves nothing a later run would trust, and the next run resumes with
the entries still missing. Several processes filling the same cache folder at once take turns on the lock
``<cache_dir>/<name>-<settings key>.lock`` (:func:`~anomalib_medical.data.utils.download.preparation_lock`): the
first fills it, the others wait and then find the entries in place.
"""

import hashlib
import json
import logging
import os
import secrets
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
from anomalib_medical.data.utils.dicom import IntensityFallback
from anomalib_medical.data.utils.download import preparation_lock
from anomalib_medical.data.utils.reader import read_grey_or_rgb

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2
"""Bumped whenever the preprocessing code changes what it writes, so that old caches are not reused (2: 16-bit
images keyed on their source file)."""

_ORIGINAL_SIZE = "original_size"
_SOURCE = "source"
_IMAGE_MODES = ("I;16", "I")  # how Pillow opens a 16-bit greyscale PNG (older versions: "I")
_MASK_MODES = ("L",)
_NOT_CACHED = "is not cached yet"
_NAMED_IN_LOG = 3
"""How many rebuilt files the log message names."""


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
        """Read a source image at its full depth as a ``float32`` greyscale array in ``[0, 1]``.

        Args:
            source: Image file (see :func:`~anomalib_medical.data.utils.reader.read_grey_or_rgb`).

        Returns:
            ``(height, width)`` array; a colour image becomes the mean of its channels.

        Raises:
            FileNotFoundError: If ``source`` does not exist.
            InvalidImageError: If it cannot be decoded (naming the file).

        """
        image = read_grey_or_rgb(source, apply_window=self.apply_window, fallback=self.intensity_fallback)
        return image.mean(axis=2, dtype=np.float32) if image.ndim == 3 else image

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize (and equalise) a ``[0, 1]`` image; return it as ``uint16`` (``round(x * 65535)``)."""
        height, width = self.image_size
        resized = Image.fromarray(image.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
        array = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
        if self.histogram_equalisation and array.max() > array.min():
            array = equalize_hist(array, nbins=256)
        return np.round(array * 65535.0).astype(np.uint16)

    def preprocess(self, source: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """Read and preprocess a source image: the cached ``uint16`` image and the source's ``(height, width)``."""
        image = self.load(source)
        return self.apply(image), (int(image.shape[0]), int(image.shape[1]))


@dataclass(frozen=True)
class CacheEntry:
    """One image to cache.

    Args:
        key: Unique id, used as the start of the cached file's relative path (``/`` makes sub-folders).
        source: Original image file (DICOM, JPEG, PNG, TIFF...).
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


@dataclass(frozen=True)
class SourceVersion:
    """One version of a source file: its resolved path, size and modification time.

    Args:
        path: Resolved path.
        size: Size in bytes.
        mtime_ns: Modification time in nanoseconds.

    """

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, source: Path) -> "SourceVersion":
        """Return the current version of ``source`` (which must exist)."""
        resolved = source.resolve()
        info = resolved.stat()
        return cls(str(resolved), info.st_size, info.st_mtime_ns)

    def text(self) -> str:
        """Return the version as recorded in a cached PNG's ``source`` text chunk."""
        return json.dumps(asdict(self), sort_keys=True)


class RadiographCache:
    """A folder of preprocessed images and masks for one set of :class:`Preprocessing` settings.

    Args:
        root: Parent folder of all caches (e.g. ``<data root>_cache``); several data sets may share it.
        name: Data set name, the first part of the folder name.
        preprocessing: The settings; their hash is the second part of the folder name.

    """

    def __init__(self, root: str | Path, name: str, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing
        self.directory = Path(root) / f"{name.lower()}-{preprocessing.key}"
        # cached files written or found valid by this object: (size, mtime_ns) of the file, and its source version
        self._checked: dict[Path, tuple[int, int, SourceVersion]] = {}

    def files(self, entry: CacheEntry) -> CachedFiles:
        """Where the cached image and mask of ``entry`` are (whether or not they exist yet)."""
        source = hashlib.sha256(str(entry.source.resolve()).encode()).hexdigest()[:12]
        image = self.directory / "images" / f"{entry.key}-{source}.png"
        if entry.boxes is None:
            return CachedFiles(image, None)
        boxes = hashlib.sha256(json.dumps(sorted(entry.boxes)).encode()).hexdigest()[:12]
        return CachedFiles(image, self.directory / "masks" / f"{entry.key}-{source}-{boxes}.png")

    def missing(self, entries: Sequence[CacheEntry]) -> list[CacheEntry]:
        """Return the entries whose image or mask is not cached, or cannot be reused (see the module docstring)."""
        return self._survey(entries)[0]

    def build(self, entries: Sequence[CacheEntry], workers: int = 0) -> list[CachedFiles]:
        """Preprocess the entries that are not cached (or not reusable); return the files of all entries, in order.

        Holds the cache folder's lock while it writes, so that several processes can call it at once: one fills
        the cache, the others wait, then find the entries in place.

        Args:
            entries: Images to cache; keys must be unique.
            workers: Threads to use (decoding and resizing release the GIL); ``0`` or ``1`` works serially.

        Returns:
            The cached files of each entry.

        Raises:
            ValueError: For duplicate keys, an unreadable source (naming the file) or a box entirely outside its
                image (naming the id, the file and the box).
            FileNotFoundError: For a missing source file.

        """
        keys = [entry.key for entry in entries]
        if len(set(keys)) != len(keys):
            duplicates = sorted({key for key in keys if keys.count(key) > 1})[:5]
            msg = f"Duplicate image ids in the cache request: {duplicates}."
            raise ValueError(msg)
        if self.missing(entries):
            with preparation_lock(self.directory):
                todo, stale = self._survey(entries)  # another process may have filled the cache meanwhile
                if todo:
                    self._fill(todo, stale, len(entries), workers)
        return [self.files(entry) for entry in entries]

    def _fill(self, todo: list[CacheEntry], stale: list[str], total: int, workers: int) -> None:
        """Write the entries of ``todo`` (under the lock), reporting the ``stale`` files that are rebuilt."""
        self._write_settings()
        if stale:
            named = "; ".join(stale[:_NAMED_IN_LOG]) + ("; ..." if len(stale) > _NAMED_IN_LOG else "")
            logger.warning("Rebuilding %d cached file(s) in %s: %s", len(stale), self.directory, named)
        logger.info("Preprocessing %d of %d images into %s", len(todo), total, self.directory)
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

    def _survey(self, entries: Sequence[CacheEntry]) -> tuple[list[CacheEntry], list[str]]:
        """Find the entries to (re)build, and why each existing file that cannot be reused is rejected."""
        todo, stale = [], []
        for entry in entries:
            if not entry.source.is_file():
                todo.append(entry)  # _build_entry (or the datamodule) names the missing file
                continue
            source = SourceVersion.of(entry.source)
            files = self.files(entry)
            problems = [(files.image, self._problem(files.image, source, _IMAGE_MODES))]
            if files.mask is not None:
                problems.append((files.mask, self._problem(files.mask, source, _MASK_MODES)))
            if any(problem is not None for _, problem in problems):
                todo.append(entry)
            stale += [
                f"{path.relative_to(self.directory)} {problem}"
                for path, problem in problems
                if problem not in {None, _NOT_CACHED}
            ]
        return todo, stale

    def _problem(self, path: Path, source: SourceVersion, modes: tuple[str, ...]) -> str | None:
        """Why the cached file ``path`` cannot be reused for ``source``; ``None`` when it can."""
        try:
            info = path.stat()
        except FileNotFoundError:
            return _NOT_CACHED
        stamp = (info.st_size, info.st_mtime_ns, source)
        if self._checked.get(path) == stamp:
            return None
        try:
            with Image.open(path) as image:
                image.load()
                mode, size = image.mode, image.size
                recorded = image.info.get(_SOURCE)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            return f"cannot be decoded ({error})"
        height, width = self.preprocessing.image_size
        if mode not in modes or size != (width, height):
            return f"is {mode} {size[0]}x{size[1]}, expected {modes[0]} {width}x{height}"
        if recorded != source.text():
            return f"was made from another version of its source ({recorded or 'not recorded'}; now {source.text()})"
        self._checked[path] = stamp
        return None

    def _build_entry(self, entry: CacheEntry) -> None:
        """Write the image and the mask (if any) of one entry, each unless it can be reused."""
        if not entry.source.is_file():
            msg = f"Image {entry.source} (id {entry.key!r}) is listed in the labels but does not exist."
            raise FileNotFoundError(msg)
        source = SourceVersion.of(entry.source)  # before reading: a change during the read makes the entry stale
        files = self.files(entry)
        original_size: tuple[int, int] | None = None
        if self._problem(files.image, source, _IMAGE_MODES) is not None:
            image, original_size = self.preprocessing.preprocess(entry.source)
            text = {_SOURCE: source.text(), _ORIGINAL_SIZE: f"{original_size[0]}x{original_size[1]}"}
            self._write(files.image, image, text, source)
        if files.mask is not None and self._problem(files.mask, source, _MASK_MODES) is not None:
            size = original_size or _read_original_size(files.image)
            name = f"image {entry.key!r} ({entry.source})"
            mask = boxes_to_mask(entry.boxes or (), size, self.preprocessing.image_size, image=name)
            self._write(files.mask, mask, {_SOURCE: source.text()}, source)

    def _write(self, path: Path, array: np.ndarray, text: dict[str, str], source: SourceVersion) -> None:
        """Write a cached PNG and remember it as checked."""
        _write_png(array, path, text)
        info = path.stat()
        self._checked[path] = (info.st_size, info.st_mtime_ns, source)

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
        value = image.info.get(_ORIGINAL_SIZE, "")
    try:
        height, width = (int(side) for side in value.split("x"))
    except ValueError:
        msg = f"{path}: cached image without a valid '{_ORIGINAL_SIZE}' entry; delete it to rebuild it."
        raise ValueError(msg) from None
    return height, width


def _write_png(array: np.ndarray, path: Path, text: dict[str, str]) -> None:
    """Save a ``uint16`` (image) or ``uint8`` (mask) greyscale array as PNG with text chunks, atomically."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    _atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp)`` to a temporary file next to ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
