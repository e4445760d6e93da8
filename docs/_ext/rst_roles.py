"""Griffe extension: render the package's reST-style docstring markup as Markdown.

The docstrings use Sphinx roles (``:func:`landscape.line```), double-backtick literals and ``::`` before a
literal block. Double backticks are already a Markdown code span and indented blocks already a code block;
this extension turns roles into code spans (``~a.b.C`` shows ``C``, as in Sphinx), a trailing ``::`` into
``:`` and ``Example:`` sections into ``Examples:``, so the API reference reads cleanly without touching the
docstrings (they stay valid for ``help()``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`(~?)([^`]+)`")
_LITERAL_MARK = re.compile(r"::(\n\s*\n)")
_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    return f"`{shown}`"


def convert(text: str) -> str:
    """Returns ``text`` with roles as code spans, ``::`` as ``:`` and ``Example:`` as ``Examples:``.

    Griffe renders only the plural ``Examples:`` section as doctest code.
    """
    text = _EXAMPLE.sub(r"\1Examples:", text)
    return _LITERAL_MARK.sub(r":\1", _ROLE.sub(_role, text))


class RstRoles(griffe.Extension):
    """Rewrites each object's docstring once, when griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
