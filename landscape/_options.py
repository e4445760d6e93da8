"""The one parser of string options into enums, shared by every module that takes one."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

__all__ = ["parse_option"]

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
