"""Renamed constructor arguments: the old name keeps working, with a warning that names the new one."""

from __future__ import annotations

import warnings
from typing import TypeVar

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
