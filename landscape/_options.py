"""The one parser of string options into enums, shared by every module that takes one."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

__all__ = ["parse_option"]

E = TypeVar("E", bound=enum.Enum)


def parse_option(cls: type[E], value: Any, what: str | None = None) -> E:
    """Parse ``value`` (a member or its value) into ``cls``; an unknown value raises naming the valid ones.

    Args:
        cls: The enum.
        value: A member of ``cls`` or the value of one (``"eval"`` for ``BNMode.EVAL``).
        what: The option's name in the message; default the enum's class name.

    Raises:
        ValueError: ``unknown <what> <value>; valid: [...]``.

    Example:
        >>> import enum
        >>> class Color(str, enum.Enum):
        ...     RED = "red"
        >>> parse_option(Color, "red") is Color.RED
        True
    """
    try:
        return cls(value)
    except ValueError:
        valid = [m.value for m in cls]
        raise ValueError(f"unknown {what or cls.__name__} {value!r}; valid: {valid}") from None
