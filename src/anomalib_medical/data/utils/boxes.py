"""Bounding boxes from label tables, and pixel masks drawn from them at a resized resolution."""

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

Box = tuple[float, float, float, float]
"""``(x_min, y_min, x_max, y_max)`` in pixels of the original image, x to the right, y down."""


def boxes_by_image(
    table: pd.DataFrame,
    id_column: str,
    columns: tuple[str, str, str, str],
    source: str | Path,
    corner_size: bool = False,
) -> dict[str, list[Box]]:
    """Collect the boxes of each image from a label table with one row per box.

    Rows whose four coordinates are all empty carry no box (e.g. ``No finding`` rows) and are skipped;
    a row with some but not all coordinates, non-numeric or negative-size coordinates is an error.

    Args:
        table: Label table.
        id_column: Column with the image id.
        columns: The four coordinate columns, ``(x_min, y_min, x_max, y_max)``, or with
            ``corner_size=True`` ``(x, y, width, height)``.
        source: File the table was read from, named in errors.
        corner_size: Whether the columns give a corner and a size instead of two corners.

    Returns:
        Image id -> its boxes as ``(x_min, y_min, x_max, y_max)``, for the images with at least one box.

    Raises:
        ValueError: For a malformed row, naming ``source`` and the row's line number.

    """
    raw = table[list(columns)]
    given = raw.notna()
    parsed = raw.apply(pd.to_numeric, errors="coerce")
    complete = parsed.notna().all(axis=1).to_numpy()
    values = parsed.to_numpy(dtype=np.float64)
    if corner_size:
        values = np.column_stack([values[:, :2], values[:, :2] + values[:, 2:]])
    with np.errstate(invalid="ignore"):
        negative = complete & ((values[:, 2] < values[:, 0]) | (values[:, 3] < values[:, 1]))
    unparsable = (given & parsed.isna()).any(axis=1).to_numpy()
    partial = (given.any(axis=1) & ~given.all(axis=1)).to_numpy()
    bad = unparsable | partial | negative
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = ", ".join(f"{column}={raw.iloc[row][column]}" for column in columns)
        msg = f"{source}, line {row + 2}: malformed box ({shown}); expected four numbers with positive size, or none."
        raise ValueError(msg)
    boxes: dict[str, list[Box]] = {}
    for image_id, (x_min, y_min, x_max, y_max) in zip(
        table[id_column].astype(str).to_numpy()[complete], values[complete], strict=True
    ):
        boxes.setdefault(image_id, []).append((float(x_min), float(y_min), float(x_max), float(y_max)))
    return boxes


def boxes_to_mask(
    boxes: Iterable[Box],
    original_size: tuple[int, int],
    size: tuple[int, int],
    image: str = "the image",
) -> np.ndarray:
    """Draw the union of ``boxes`` into a ``uint8`` mask (0 or 255) of the resized image.

    Box coordinates are scaled by the same factors as the image (``size / original_size`` per axis);
    every pixel that the scaled box touches is set, and boxes partly outside the image are clipped to it. A box
    entirely outside the image is an error: it would silently give an empty mask, and it means the coordinates
    do not belong to this image (wrong id, or another resolution).

    Args:
        boxes: Boxes in original pixel coordinates.
        original_size: ``(height, width)`` of the image the boxes refer to.
        size: ``(height, width)`` of the mask.
        image: How to name the image in errors (e.g. its id and file).

    Returns:
        ``(height, width)`` ``uint8`` mask.

    Raises:
        ValueError: For a box entirely outside the original image, naming ``image`` and the box.

    """
    height, width = size
    original_height, original_width = original_size
    scale_y, scale_x = height / original_height, width / original_width
    mask = np.zeros((height, width), dtype=np.uint8)
    for x_min, y_min, x_max, y_max in boxes:
        if x_min >= original_width or y_min >= original_height or x_max <= 0 or y_max <= 0:
            msg = (
                f"Box (x_min={x_min:g}, y_min={y_min:g}, x_max={x_max:g}, y_max={y_max:g}) of {image} lies entirely "
                f"outside its {original_width} x {original_height} pixels (width x height); check the box's "
                "coordinates in the label file."
            )
            raise ValueError(msg)
        left = min(max(math.floor(x_min * scale_x), 0), width)
        right = min(max(math.ceil(x_max * scale_x), 0), width)
        top = min(max(math.floor(y_min * scale_y), 0), height)
        bottom = min(max(math.ceil(y_max * scale_y), 0), height)
        mask[top:bottom, left:right] = 255
    return mask
