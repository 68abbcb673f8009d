"""Image discovery, validation and anomalib sample tables shared by the datamodules.

Three small pieces every folder-based datamodule needs:

- :func:`list_images` finds the image files of a folder (sorted, OS metadata such as ``.DS_Store`` or
  macOS ``._*`` resource forks ignored, other non-image files reported, never silently skipped),
- :func:`check_image_file` / :func:`check_images` reject empty, unreadable or truncated files, either cheaply
  from the file's first and last bytes (``"header"``) or by decoding them (``"decode"``),
- :func:`make_samples_dataframe` builds the samples table that
  :class:`anomalib.data.datasets.base.image.AnomalibDataset` expects (``image_path``, ``label``,
  ``label_index``, ``mask_path``, ``split``; ``attrs["task"]`` is ``"classification"`` when no sample has a
  mask, as in anomalib's ``Folder`` without ``mask_dir``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
from anomalib.data.utils import LabelName, Split
from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff")
"""Image file suffixes (lower case) recognised by :func:`list_images`."""

ImageCheck = Literal["none", "header", "decode"]
"""How thoroughly image files are checked: not at all, from their first/last bytes, or by decoding them."""

_OS_METADATA_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"})

# Magic numbers of the supported formats; the second value is the trailer a complete file ends with (searched in
# the last bytes of the file, so that padding after it is tolerated), or ``None`` when the format has none.
_JPEG_END = b"\xff\xd9"  # EOI marker; cannot occur inside entropy-coded data (0xFF is byte-stuffed there)
_PNG_END = b"IEND\xaeB`\x82"
_SIGNATURES: tuple[tuple[bytes, str, bytes | None], ...] = (
    (b"\xff\xd8\xff", "JPEG", _JPEG_END),
    (b"\x89PNG\r\n\x1a\n", "PNG", _PNG_END),
    (b"BM", "BMP", None),
    (b"II*\x00", "TIFF", None),
    (b"MM\x00*", "TIFF", None),
)
_TAIL_BYTES = 1024


class InvalidImageError(ValueError):
    """An image file is empty, not an image, truncated or cannot be decoded.

    Args:
        path: The offending file.
        reason: What is wrong with it.

    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Invalid image file {self.path}: {reason}")


def is_os_metadata(path: str | Path) -> bool:
    """Whether a path is operating-system metadata rather than data.

    True for hidden files (``.DS_Store``, AppleDouble ``._name.jpeg`` resource forks, ...), ``Thumbs.db``,
    ``desktop.ini`` and anything under a ``__MACOSX`` folder (added to zip archives made on macOS).

    Args:
        path: A file name, relative path or archive member name (``/``-separated).

    Returns:
        ``True`` if the path should be ignored as metadata.

    """
    parts = [part for part in str(path).replace("\\", "/").split("/") if part]
    return any(part in _OS_METADATA_NAMES for part in parts) or (bool(parts) and parts[-1].startswith("."))


def list_images(
    directory: str | Path,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = False,
    allow_empty: bool = False,
) -> list[Path]:
    """List the image files of a folder, sorted by path.

    OS metadata (see :func:`is_os_metadata`) is ignored. Other files whose suffix is not in ``extensions`` are
    not returned, and a warning names how many there were and a few examples.

    Args:
        directory: Folder to search.
        extensions: Accepted file suffixes, compared case-insensitively.
        recursive: Search sub-folders too.
        allow_empty: Return an empty list instead of raising when the folder holds no image.

    Returns:
        The image paths, sorted.

    Raises:
        FileNotFoundError: If ``directory`` does not exist or (unless ``allow_empty``) holds no image.
        NotADirectoryError: If ``directory`` is not a folder.

    """
    directory = Path(directory)
    if not directory.exists():
        msg = f"Image folder {directory} does not exist."
        raise FileNotFoundError(msg)
    if not directory.is_dir():
        msg = f"{directory} is not a folder."
        raise NotADirectoryError(msg)
    suffixes = {ext.lower() for ext in extensions}
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    images: list[Path] = []
    others: list[Path] = []
    for path in candidates:
        if is_os_metadata(path.relative_to(directory)) or path.is_dir():
            continue
        (images if path.suffix.lower() in suffixes else others).append(path)
    if others:
        examples = ", ".join(p.name for p in sorted(others)[:3])
        logger.warning(
            "Ignoring %d non-image file(s) in %s (e.g. %s); accepted suffixes: %s",
            len(others),
            directory,
            examples,
            ", ".join(sorted(suffixes)),
        )
    if not images and not allow_empty:
        msg = f"Image folder {directory} contains no image files (accepted suffixes: {', '.join(sorted(suffixes))})."
        raise FileNotFoundError(msg)
    return sorted(images)


def check_image_file(path: str | Path, mode: ImageCheck = "header") -> None:
    """Check that a file is a complete, readable image.

    ``"header"`` reads the first bytes and the last kilobyte only: the file must start with a JPEG, PNG, BMP or
    TIFF signature and, for JPEG and PNG, contain the format's end marker near its end (which catches truncated
    copies and interrupted downloads). ``"decode"`` fully decodes the file with Pillow (slow: tens of
    milliseconds per radiograph). ``"none"`` only checks that the file exists.

    Args:
        path: Image file.
        mode: ``"none"``, ``"header"`` or ``"decode"``.

    Raises:
        FileNotFoundError: If the file does not exist.
        InvalidImageError: If the file is empty, not a recognised image or truncated, or fails to decode.
        ValueError: If ``mode`` is unknown.

    """
    path = Path(path)
    if mode not in {"none", "header", "decode"}:
        msg = f"Unknown image check mode {mode!r}; expected 'none', 'header' or 'decode'."
        raise ValueError(msg)
    if not path.is_file():
        msg = f"Image file {path} does not exist."
        raise FileNotFoundError(msg)
    if mode == "none":
        return
    if mode == "decode":
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise InvalidImageError(path, f"cannot be decoded ({err})") from err
        return
    size = path.stat().st_size
    if size == 0:
        raise InvalidImageError(path, "the file is empty")
    with path.open("rb") as handle:
        head = handle.read(16)
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read()
    for signature, name, trailer in _SIGNATURES:
        if head.startswith(signature):
            if trailer is not None and trailer not in tail:
                raise InvalidImageError(path, f"{name} file is truncated (no end marker in its last bytes)")
            return
    raise InvalidImageError(path, f"not a JPEG, PNG, BMP or TIFF file (starts with {head[:8].hex()})")


def check_images(paths: Iterable[str | Path], mode: ImageCheck = "header") -> None:
    """Run :func:`check_image_file` on every path and report all bad files at once.

    Args:
        paths: Image files.
        mode: ``"none"``, ``"header"`` or ``"decode"``.

    Raises:
        InvalidImageError: Naming every bad file (the first one is ``path``), if any.

    """
    if mode == "none":
        return
    errors: list[InvalidImageError] = []
    for path in paths:
        try:
            check_image_file(path, mode)
        except InvalidImageError as err:
            errors.append(err)
    if errors:
        listing = "\n".join(f"  {err.path}: {err.reason}" for err in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InvalidImageError(errors[0].path, f"{len(errors)} invalid image file(s):\n{listing}{more}")


def make_samples_dataframe(
    image_paths: Sequence[str | Path],
    label_indices: Sequence[int],
    splits: Sequence[str | Split] | str | Split,
    labels: Sequence[str] | None = None,
    mask_paths: Sequence[str | Path | None] | None = None,
    extra_columns: Mapping[str, Sequence[object]] | None = None,
) -> pd.DataFrame:
    """Build an anomalib samples table.

    Args:
        image_paths: One path per sample.
        label_indices: ``0`` (normal), ``1`` (abnormal) or ``-1`` (unknown) per sample.
        splits: The split of each sample (``"train"``, ``"val"``, ``"test"`` or :class:`Split`), or one for all.
        labels: Human-readable label per sample; defaults to ``"normal"`` / ``"abnormal"`` / ``"unknown"``.
        mask_paths: Ground-truth mask per sample (``None`` or ``""`` for none). Without any mask the task is
            classification.
        extra_columns: Further columns to keep (e.g. the official split or an anomaly type).

    Returns:
        A DataFrame with ``image_path``, ``label``, ``label_index``, ``mask_path``, ``split`` and the extra
        columns, and ``attrs["task"]`` set to ``"classification"`` or ``"segmentation"``.

    Raises:
        ValueError: If the columns have different lengths or a label index or split is invalid.

    """
    count = len(image_paths)
    split_values = [_split_value(split) for split in ([splits] * count if isinstance(splits, str) else splits)]
    columns: dict[str, Sequence[object]] = {
        "label_index": label_indices,
        "split": split_values,
        **({"labels": labels} if labels is not None else {}),
        **({"mask_paths": mask_paths} if mask_paths is not None else {}),
        **(extra_columns or {}),
    }
    for name, values in columns.items():
        if len(values) != count:
            msg = f"make_samples_dataframe: {name} has {len(values)} entries but there are {count} image paths."
            raise ValueError(msg)
    valid_indices = {int(LabelName.NORMAL), int(LabelName.ABNORMAL), int(LabelName.UNKNOWN)}
    bad = sorted({int(index) for index in label_indices} - valid_indices)
    if bad:
        msg = f"make_samples_dataframe: label indices must be 0 (normal), 1 (abnormal) or -1 (unknown); got {bad}."
        raise ValueError(msg)
    default_names = {0: "normal", 1: "abnormal", -1: "unknown"}
    samples = pd.DataFrame(
        {
            "image_path": [str(path) for path in image_paths],
            "label": list(labels) if labels is not None else [default_names[int(i)] for i in label_indices],
            "label_index": pd.Series([int(i) for i in label_indices], dtype="int64"),
            "mask_path": [str(path) if path else "" for path in mask_paths] if mask_paths is not None else [""] * count,
            "split": split_values,
        }
    )
    for name, values in (extra_columns or {}).items():
        samples[name] = list(values)
    samples.attrs["task"] = "classification" if (samples["mask_path"] == "").all() else "segmentation"
    return samples


def _split_value(split: str | Split) -> str:
    """Return the string value of a split, checking that it is one anomalib knows."""
    try:
        return Split(split).value
    except ValueError:
        msg = f"Unknown split {split!r}; expected one of {[s.value for s in Split]}."
        raise ValueError(msg) from None
