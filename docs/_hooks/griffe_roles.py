"""Griffe extension: render reStructuredText roles in docstrings as Markdown code spans.

The code's docstrings use Sphinx-style roles (``:class:`LocalProtocolError```, ``:mod:`...```), which
Markdown would print literally.  This extension rewrites ``:role:`target``` to ```target``` (a
leading ``~`` keeps only the last dotted component, as in Sphinx) before mkdocstrings renders it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|obj|exc|const|ref|term):`(~?)([^`]+)`")


def _replace(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def rewrite_roles(text: str) -> str:
    """Return ``text`` with every Sphinx cross-reference role turned into a Markdown code span."""
    return _ROLE.sub(_replace, text)


class SphinxRolesToCode(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the collected objects."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the object's docstring as soon as it is collected."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite_roles(obj.docstring.value)
