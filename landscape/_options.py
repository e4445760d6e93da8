"""Option parsing shared by every public function: enum options, memory sizes, deprecated keyword names."""

from __future__ import annotations

import enum
import re
import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["parse_option", "check_choice", "parse_bytes", "renamed"]

E = TypeVar("E", bound=enum.Enum)


def parse_option(cls: type[E], value: Any, what: str | None = None) -> E:
    """Parse ``value`` (a member or its value, strings case-insensitively) into ``cls``; unknown values raise.

    Args:
        cls: The enum.
        value: A member of ``cls`` or the value of one (``"eval"`` for ``BNMode.EVAL``).
        what: The option's name in the message; default the enum's class name.

    Raises:
        ValueError: ``unknown <what> <value>; valid values are 'a', 'b'``.

    Example:
        >>> import enum
        >>> class Color(str, enum.Enum):
        ...     RED = "red"
        >>> parse_option(Color, "red") is Color.RED
        True
    """
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        pass
    if isinstance(value, str):
        for member in cls:
            if isinstance(member.value, str) and member.value.lower() == value.lower():
                return member
    valid = ", ".join(repr(m.value) for m in cls)
    raise ValueError(f"unknown {what or cls.__name__} {value!r}; valid values are {valid}") from None


def check_choice(value: Any, valid: Sequence[str], what: str) -> str:
    """``value`` (or an enum member's value) as a string, if it is one of ``valid``.

    Raises:
        ValueError: ``unknown <what> <value>; valid: [...]``.
    """
    text = str(getattr(value, "value", value))
    if text not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {list(valid)}")
    return text


def parse_bytes(size: int | str | None, default: int = 1 << 30) -> int:
    """Parse a memory size: an int of bytes or a string like ``"512MB"``, ``"2GiB"``; ``None`` -> ``default``.

    Raises:
        ValueError: On an unreadable size.
    """
    if size is None:
        return default
    if isinstance(size, int | float):
        return int(size)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b?)\s*", str(size).lower())
    if not m:
        raise ValueError(f"cannot read memory size {size!r}; use bytes (int) or a string like '512MB' or '2GB'")
    return int(float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_"))


def renamed(new: Any, old: Any, old_name: str, new_name: str) -> Any:
    """The value of a keyword given under its new name or its deprecated old one (which warns).

    Raises:
        TypeError: If both are given.
    """
    if old is None:
        return new
    if new is not None:
        raise TypeError(f"{old_name} is the deprecated name of {new_name}; pass only {new_name}")
    warnings.warn(f"{old_name} is deprecated; use {new_name}", DeprecationWarning, stacklevel=3)
    return old
