"""A Griffe extension for the API reference (mkdocs.yml): superres's docstrings use reST roles
(:class:`~superres.zoo.ModelDescriptor`, :func:`read_image`), which Markdown would show as raw text.
Each role becomes a code span of its target (the last name when the target starts with ``~``).
Not a page: mkdocs.yml excludes docs/*.py from the site."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def plain_roles(text: str) -> str:
    """``:class:`~a.B``` -> ```B```; ``:func:`a.b``` -> ```a.b```."""
    return ROLE.sub(_code, text)


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
