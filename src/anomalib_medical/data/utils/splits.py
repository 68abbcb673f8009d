"""Label tables and seeded, disjoint splits for data sets distributed as images plus CSV files."""

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def read_label_csv(
    path: str | Path,
    required: Iterable[str],
    description: str,
    text_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """Read a provider's CSV file and check that it has the expected columns.

    Args:
        path: CSV file.
        required: Columns the file must have (others are allowed).
        description: What the file is, for error messages (e.g. ``"CheXpert train.csv"``).
        text_columns: Columns read as text, never as numbers: ids made of digits keep their leading zeros
            (``00123`` stays ``00123``).

    Returns:
        The table, with column names stripped of surrounding spaces.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When it cannot be parsed or lacks a required column.

    """
    path = Path(path)
    if not path.is_file():
        msg = f"{description} not found: {path} does not exist."
        raise FileNotFoundError(msg)
    try:
        table = pd.read_csv(path, low_memory=False, dtype=dict.fromkeys(text_columns, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        msg = f"{path}: cannot read {description} as CSV ({error})."
        raise ValueError(msg) from error
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        msg = f"{path}: unknown column layout for {description}: missing {missing}; found {list(table.columns)}."
        raise ValueError(msg)
    return table


def draw(pool: Iterable[str], count: int | None, rng: np.random.Generator, description: str) -> list[str]:
    """Draw ``count`` distinct ids from ``pool`` at random, reproducibly.

    The pool is sorted first, so the draw depends only on its content and the generator's state,
    never on the row order of the provider's files.

    Args:
        pool: Ids to draw from (duplicates are ignored).
        count: How many to draw; ``None`` takes the whole pool (in sorted order).
        rng: Seeded generator; successive draws from one generator give independent subsets.
        description: What is drawn, for the error message (e.g. ``"test normal images"``).

    Returns:
        The drawn ids, sorted.

    Raises:
        ValueError: When the pool holds fewer than ``count`` ids or ``count`` is negative.

    """
    candidates = sorted(set(pool))
    if count is None:
        return candidates
    if count < 0:
        msg = f"Cannot draw a negative number ({count}) of {description}."
        raise ValueError(msg)
    if count > len(candidates):
        msg = f"Requested {count} {description}, but only {len(candidates)} are available."
        raise ValueError(msg)
    chosen = rng.choice(len(candidates), size=count, replace=False)
    return sorted(candidates[index] for index in chosen)


def draw_disjoint(
    pool: Iterable[str],
    counts: Sequence[tuple[str, int | None]],
    rng: np.random.Generator,
) -> list[list[str]]:
    """Draw several disjoint subsets from one pool, one after the other.

    A ``None`` count takes everything left, so it is only allowed last.

    Args:
        pool: Ids to draw from.
        counts: ``(description, count)`` per subset, in drawing order.
        rng: Seeded generator.

    Returns:
        One sorted list of ids per entry of ``counts``.

    Raises:
        ValueError: When the pool is too small for the requested counts (the message names every
            count and the pool size) or ``None`` is not last.

    """
    remaining = set(pool)
    if any(count is None for _, count in counts[:-1]):
        msg = "Only the last subset may take all remaining ids (count None)."
        raise ValueError(msg)
    requested = sum(count or 0 for _, count in counts)
    if requested > len(remaining):
        parts = " + ".join(f"{count} {description}" for description, count in counts if count)
        msg = f"Requested {parts} = {requested} images, but only {len(remaining)} are available."
        raise ValueError(msg)
    subsets = []
    for description, count in counts:
        subset = draw(remaining, count, rng, description)
        remaining.difference_update(subset)
        subsets.append(subset)
    return subsets


def contaminant_count(fraction: float, normal: int) -> int:
    """Count the abnormal images that make up ``fraction`` of a training split with ``normal`` normal images.

    This is ``round(fraction * normal / (1 - fraction))``, the contamination of a datamodule's
    ``train_abnormal_fraction`` ("true" unsupervised training).

    Args:
        fraction: Share of the training split that is abnormal, in ``[0, 1)``.
        normal: Normal images in the training split.

    Returns:
        How many abnormal images to add to the training split.

    Raises:
        ValueError: When ``fraction`` is outside ``[0, 1)``.

    """
    if not 0.0 <= fraction < 1.0:
        msg = f"train_abnormal_fraction must be in [0, 1), got {fraction}."
        raise ValueError(msg)
    return round(fraction * normal / (1.0 - fraction))


def replaced_count(fraction: float, normal: int) -> int:
    """Count the normal training images that abnormal ones replace, so that they make up ``fraction`` of ``normal``.

    This is ``ceil(fraction * normal)``, the SimSID authors' rule (they keep the first ``int(normal * (1 - f))``
    normal images and fill the rest with abnormal ones: 4,999 CheXpert normals at 10 % become 4,499 + 500).

    Args:
        fraction: Share of the training split that is abnormal, in ``[0, 1)``.
        normal: Normal images the training split would hold without contamination.

    Returns:
        How many normal images are replaced by abnormal ones.

    Raises:
        ValueError: When ``fraction`` is outside ``[0, 1)``.

    """
    contaminant_count(fraction, normal)  # checks the fraction
    return math.ceil(round(fraction * normal, 9))  # rounding first: 0.3 * 10 is 3.0000000000000004
