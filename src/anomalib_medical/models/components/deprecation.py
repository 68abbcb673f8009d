"""Renamed constructor arguments: the old name keeps working, with a warning that names the new one."""

from __future__ import annotations

import warnings
from typing import TypeVar

from .validation import check_number

T = TypeVar("T")


def renamed_argument(owner: str, new_name: str, new_value: T, old_name: str, old_value: T | None, reason: str) -> T:
    """``old_value`` (with a ``FutureWarning``) when the deprecated ``old_name`` was given, else ``new_value``."""
    if old_value is None:
        return new_value
    warnings.warn(
        f"{owner}: `{old_name}` is deprecated, use `{new_name}` ({reason}); `{old_name}={old_value!r}` is used",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


GRID_REASON = "`anomalib benchmark` takes every config key containing 'grid' for a grid search"


def patches_per_side_argument(owner: str, patches_per_side: int, grid: int | None) -> int:
    """Return the patch grid of Squid / SimSID from ``patches_per_side`` or its deprecated name ``grid``, checked.

    Raises:
        ValueError: If the value is not an integer >= 1 (naming the argument the caller gave).

    """
    value = renamed_argument(owner, "patches_per_side", patches_per_side, "grid", grid, GRID_REASON)
    check_number("patches_per_side" if grid is None else "grid", value, 1, integer=True)
    return value
