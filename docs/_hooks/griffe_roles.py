"""Griffe extension: turn reStructuredText roles in docstrings into cross-references.

The code's docstrings use Sphinx-style roles (``:class:`LocalProtocolError```, ``:meth:`connect```,
``:mod:`...```), which Markdown would print literally.  Once a package is loaded, this extension
resolves each role's target in the scope of the object whose docstring it is (imports followed, so
``:class:`Session``` in a module that imports it points at its definition) and replaces the role
with an *optional* mkdocs-autorefs reference: a link when the target is documented on the site, a
plain code span otherwise — never a build warning.  A leading ``~`` shows only the last component,
as in Sphinx.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|obj|exc|const):`(~?)([^`]+)`")


def _shown(short: str, target: str) -> str:
    return target.rsplit(".", 1)[-1] if short else target


def rewrite_roles(text: str, resolve: Callable[[str], str | None] | None = None) -> str:
    """Return ``text`` with every Sphinx role replaced.

    ``resolve`` maps a role's target to a full dotted identifier (or None when unknown); a resolved
    target becomes an optional autorefs link, an unresolved one a Markdown code span.
    """

    def replace(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        shown = _shown(short, target)
        identifier = resolve(target) if resolve is not None else None
        if not identifier:
            return f"`{shown}`"
        return (
            f'<autoref identifier="{html.escape(identifier, quote=True)}" optional>'
            f"<code>{html.escape(shown)}</code></autoref>"
        )

    return _ROLE.sub(replace, text)


def _resolver(obj: griffe.Object) -> Callable[[str], str | None]:
    def resolve(target: str) -> str | None:
        first, _, rest = target.partition(".")
        try:
            base = obj.resolve(first)
        except (griffe.NameResolutionError, KeyError, AttributeError, ValueError):
            return target if "." in target else None
        return f"{base}.{rest}" if rest else base

    return resolve


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Alias):
            continue
        yield from _walk(member)


class SphinxRolesToCode(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and everything under it."""
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite_roles(obj.docstring.value, _resolver(obj))
