"""Range checks of numeric constructor arguments, with errors that name the argument, the value and the range."""

import math
from numbers import Integral, Real


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise a ``ValueError`` unless ``value`` is a finite number (an integer if asked) in the given range.

    Args:
        name: Argument name, as the user passes it.
        value: The value to check.
        low: Lower bound (``None``: unbounded).
        high: Upper bound (``None``: unbounded).
        integer: Require an integer (``bool`` is not one).
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.
        optional: Also accept ``None``.

    Raises:
        ValueError: E.g. ``n_critic must be an integer >= 1, got 0``.

    Example:
        >>> check_number("mask_ratio", 1.5, 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: mask_ratio must be a number in [0, 1], got 1.5

    """
    if optional and value is None:
        return
    kind = Integral if integer else Real
    valid = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if valid and low is not None:
        valid = value > low if low_open else value >= low
    if valid and high is not None:
        valid = value < high if high_open else value <= high
    if valid:
        return
    if low is not None and high is not None:
        interval = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        interval = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        interval = f"{'<' if high_open else '<='} {high}"
    else:
        interval = ""
    number = "a number" if interval else "a finite number"
    expected = f"{'an integer' if integer else number} {interval}".rstrip()
    msg = f"{name} must be {'None or ' if optional else ''}{expected}, got {value!r}"
    raise ValueError(msg)
