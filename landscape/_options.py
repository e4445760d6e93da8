"""Option parsing shared by every public function: enum options, memory sizes, deprecated keyword names.

Keyword groups that several functions take are declared once as a typed dictionary, shown in each signature
(:func:`shows_keywords`) and checked at each call (:func:`check_keywords`).
"""

from __future__ import annotations

import enum
import inspect
import numbers
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "parse_option",
    "check_choice",
    "check_int",
    "check_count",
    "parse_bytes",
    "renamed",
    "typed_keywords",
    "shows_keywords",
    "check_keywords",
    "keyword_values",
]

E = TypeVar("E", bound=enum.Enum)
F = TypeVar("F", bound=Callable[..., Any])


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


def check_int(value: Any, what: str, *, least: int = 1, note: str = "") -> int:
    """An integer option (numpy's integers too) of at least ``least``: a count, a period, a size.

    Raises:
        ValueError: ``<what> must be a positive integer<note>, got <value>`` (``non-negative`` for ``least=0``);
            floats, strings and bools included.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(least, f"an integer >= {least}")
        raise ValueError(f"{what} must be {kind}{note}, got {value!r}")
    return int(value)


def check_count(value: Any, what: str) -> int | None:
    """A positive integer option that may be ``None`` (every k steps, a batch size), as :func:`check_int` checks it."""
    return None if value is None else check_int(value, what, note=" or None")


def parse_bytes(size: int | str | None, default: int = 1 << 30) -> int:
    """Parse a memory size: an int of bytes or a string like ``"512MB"``, ``"2GiB"``; ``None`` -> ``default``.

    ``0`` is a valid budget: the smallest work units (one point per chunk; a :class:`~landscape.problem.Problem`
    streams its data).

    Raises:
        ValueError: On an unreadable or negative size.
    """
    if size is None:
        return default
    if isinstance(size, bool):
        raise TypeError(f"a memory size must be a number of bytes or a string like '512MB', got {size!r}")
    if isinstance(size, int | float):
        if not 0 <= size < float("inf"):  # NaN too
            raise ValueError(f"a memory size must be a finite number of bytes >= 0, got {size!r}")
        return int(size)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgt]?)(i?b?)\s*", str(size).lower())
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


def typed_keywords(options: type) -> dict[str, Any]:
    """Name -> annotation of a typed dictionary's keys (its bases' included, in declaration order)."""
    return {k: getattr(a, "__forward_arg__", a) for k, a in options.__annotations__.items()}


def shows_keywords(options: type, defaults: Mapping[str, Any]) -> Callable[[F], F]:
    """Decorator: a function's ``**options: Unpack[options]`` shows as the typed dictionary's keyword-only parameters.

    ``inspect.signature`` and ``help`` then list every keyword with its default, as if written out.

    Args:
        options: The typed dictionary declaring the keywords.
        defaults: Default of each keyword as shown (``None`` for those not named).

    Returns:
        The decorator (the function itself, with ``__signature__`` set).
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        params += [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(k), annotation=a)
            for k, a in typed_keywords(options).items()
        ]
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return fn

    return decorate


def shows_forwarded(
    target: Callable[..., Any],
    *,
    exclude: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Decorator: a function's ``**kwargs``, forwarded to ``target``, show as ``target``'s keyword-only parameters.

    ``inspect.signature`` and ``help`` then list the forwarded keywords with their defaults and annotations, read
    from ``target`` itself (a class: its ``__init__``), so the two never disagree.

    Args:
        target: The callable the keywords go to.
        exclude: Keywords the function sets itself (not the caller's to give).
        extra: More keywords the function reads besides ``target``'s, ``{name: default}``.

    Returns:
        The decorator (the function itself, with ``__signature__`` set).
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own} | set(exclude)
        forwarded = [
            p for p in inspect.signature(target).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in names
        ]
        forwarded += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in (extra or {}).items()]
        fn.__signature__ = sig.replace(parameters=own + forwarded)  # type: ignore[attr-defined]
        return fn

    return decorate


def check_keywords(function: str, given: Iterable[str], options: type) -> None:
    """Raise as Python does on a keyword the typed dictionary ``options`` does not declare.

    Raises:
        TypeError: ``<function>() got an unexpected keyword argument '<name>'``.
    """
    known = typed_keywords(options)
    for k in given:
        if k not in known:
            raise TypeError(f"{function}() got an unexpected keyword argument {k!r}")


def keyword_values(
    function: str, given: Mapping[str, Any], options: type, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Every keyword of the typed dictionary ``options``: its value in ``given``, else its default (or ``None``).

    Raises:
        TypeError: ``<function>() got an unexpected keyword argument '<name>'`` (see :func:`check_keywords`).
    """
    check_keywords(function, given, options)
    return {k: given[k] if k in given else defaults.get(k) for k in typed_keywords(options)}
