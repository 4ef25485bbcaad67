"""MkDocs hook: one API reference page per public module of ``oftp2_provider``.

The reference section follows the tree by itself: every public module that exists *and imports*
gets a generated page ``reference/<dotted.name>.md`` holding a mkdocstrings ``:::`` directive, and
a nav entry under "Reference", grouped by sub-package.  A module that fails to import is left out
(and named in the build log), so the site never documents code that cannot run.

Environment: ``OFTP2_DOCS_QUICK=1`` skips the import check (for tests of the build machinery);
``OFTP2_DOCS_CENSUS=<file>`` writes the modules found and those left out to ``<file>`` as JSON.

Public means: not ``_``-prefixed, not in :data:`EXCLUDED`, and for a package ``__init__.py`` only
when it defines something beyond its docstring.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.reference_pages")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "provider" / "oftp2_provider"
PACKAGE = "oftp2_provider"

#: Plumbing that is not API: Airflow's provider registration and the ``make demo`` script.
EXCLUDED = frozenset({"oftp2_provider.get_provider_info", "oftp2_provider.demo"})

#: Titles of the nav groups, by sub-package; others get their bare name.
GROUP_TITLES = {
    "": "Package",
    "protocol": "Protocol engine",
    "hooks": "Hooks",
    "operators": "Operators",
    "sensors": "Sensors",
    "triggers": "Triggers",
    "ledger": "Ledger",
    "gateway": "Gateway",
    "relay": "Azure Relay",
}

#: Markers count only alone on their line (so pages can show them in code).
_MARKER = re.compile(r"^[ \t]*<!-- oftp2:module-list -->[ \t]*$", flags=re.M)
_STATUS_MARKER = re.compile(r"^[ \t]*<!-- oftp2:component-status -->[ \t]*$", flags=re.M)

#: The parts named in docs/architecture.md, as (module or package, what it is).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("oftp2_provider.protocol.commands", "typed, self-validating OFTP commands"),
    ("oftp2_provider.protocol.errors", "reason-code enums and the protocol error types"),
    ("oftp2_provider.protocol.codec", "command ⇄ exchange-buffer bytes per protocol level"),
    ("oftp2_provider.protocol.framing", "Stream Transmission Buffer framing"),
    ("oftp2_provider.protocol.records", "DATA subrecords and buffer compression"),
    ("oftp2_provider.protocol.state", "the session state machine as tables"),
    ("oftp2_provider.protocol.session", "the sans-I/O session"),
    ("oftp2_provider.protocol.transport", "asyncio TCP/TLS initiator and responder"),
    ("oftp2_provider.protocol.cms", "CMS signing, compression and encryption"),
    ("oftp2_provider.protocol.receipts", "signed EERP/NERP"),
    ("oftp2_provider.protocol.certs", "certificate loading and checks"),
    ("oftp2_provider.relay", "Azure Relay Hybrid Connections client"),
    ("oftp2_provider.ledger", "SQL transfer ledger"),
    ("oftp2_provider.gateway", "gateway daemon"),
    ("oftp2_provider.hooks", "Airflow hook"),
    ("oftp2_provider.operators", "Airflow operators"),
    ("oftp2_provider.sensors", "Airflow sensors"),
    ("oftp2_provider.triggers", "Airflow triggers"),
)


def component_status(modules: list[str]) -> str:
    """A Markdown table saying, per planned part, which of its modules are in the tree and import."""
    rows = ["| Part | What it is | In the tree |", "|---|---|---|"]
    for prefix, what in COMPONENTS:
        present = [m for m in modules if m == prefix or m.startswith(prefix + ".")]
        if present == [prefix]:
            cell = f"[yes](reference/{prefix}.md)"
        elif present:
            names = {m: "package" if m == prefix else f"`{m.removeprefix(prefix + '.')}`" for m in present}
            links = ", ".join(f"[{names[m]}](reference/{m}.md)" for m in present)
            cell = f"yes: {links}"
        else:
            cell = "planned"
        rows.append(f"| `{prefix}` | {what} | {cell} |")
    return "\n".join(rows)


_modules: list[str] = []
_skipped: dict[str, str] = {}


def _has_content(init_file: Path) -> bool:
    """True if a package ``__init__`` defines anything beyond a docstring and ``__future__`` imports."""
    tree = ast.parse(init_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        return True
    return False


def discover_modules(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Return the dotted names of the public modules under ``package_dir``, sorted."""
    found: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        if "__pycache__" in parts:
            continue
        if not all(
            (package_dir.parent / Path(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))
        ):
            continue  # not inside a regular package (yet)
        if parts[-1] == "__init__":
            if not _has_content(path):
                continue
            parts = parts[:-1]
        name = ".".join(parts)
        if name in EXCLUDED:
            continue
        found.append(name)
    return sorted(found)


_IMPORT_CHECK = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # report, never crash the docs build
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def import_failures(modules: list[str]) -> dict[str, str]:
    """Import ``modules`` in a fresh interpreter; return ``{module: error}`` for those that fail.

    A subprocess keeps Airflow's import-time side effects (logging set-up, settings) out of MkDocs.
    """
    if not modules:
        return {}
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="oftp2-docs-airflow-") as home:
        env["AIRFLOW_HOME"] = home  # a throw-away home: importing must not touch a real one
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT_CHECK, *modules],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"import check of the reference modules failed: {proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()
    result: dict[str, str] = json.loads(lines[-1] if lines else "{}")
    return result


def page_path(module: str) -> str:
    """The docs-relative path of a module's generated reference page."""
    return f"reference/{module}.md"


def page_content(module: str) -> str:
    """The Markdown source of a module's generated reference page."""
    return f"::: {module}\n"


def reference_nav(modules: list[str]) -> list[Any]:
    """The nav entries of the Reference section: the overview page, then one group per sub-package.

    A sub-package's own ``__init__`` goes into its group; groups follow :data:`GROUP_TITLES`.
    Entries are titled without the ``oftp2_provider.`` prefix.
    """
    groups: dict[str, list[dict[str, str]]] = {}
    for module in modules:
        parts = module.split(".")
        is_package = any(other.startswith(module + ".") for other in modules)
        group = parts[1] if len(parts) > 2 or (len(parts) == 2 and is_package) else ""
        title = module.removeprefix(PACKAGE + ".")
        groups.setdefault(group, []).append({title: page_path(module)})
    order = list(GROUP_TITLES)
    nav: list[Any] = ["reference/index.md"]
    for group in sorted(groups, key=lambda g: (order.index(g) if g in order else len(order), g)):
        nav.append({GROUP_TITLES.get(group, group): groups[group]})
    return nav


@event_priority(100)
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Find the documentable modules and append the Reference section to the nav."""
    global _modules, _skipped
    candidates = discover_modules()
    # OFTP2_DOCS_QUICK=1 (tests of the build machinery) skips the slow, Airflow-importing check.
    _skipped = {} if os.environ.get("OFTP2_DOCS_QUICK") == "1" else import_failures(candidates)
    census = os.environ.get("OFTP2_DOCS_CENSUS")
    if census:  # tests compare the site with what this build saw
        Path(census).write_text(json.dumps({"modules": candidates, "skipped": _skipped}), encoding="utf-8")
    for module, error in sorted(_skipped.items()):
        log.info("reference: %s left out, it does not import (%s)", module, error)
    _modules = [m for m in candidates if m not in _skipped]
    nav = list(config.nav or [])
    nav = [entry for entry in nav if not (isinstance(entry, dict) and "Reference" in entry)]
    nav.append({"Reference": reference_nav(_modules)})
    config.nav = nav
    return config


def _nav_paths(entries: Any) -> set[str]:
    """Every page path named anywhere in a nav structure."""
    if isinstance(entries, str):
        return {entries}
    if isinstance(entries, dict):
        return set().union(*(_nav_paths(v) for v in entries.values())) if entries else set()
    if isinstance(entries, list):
        return set().union(*(_nav_paths(v) for v in entries)) if entries else set()
    return set()


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages, and put any page the nav does not name under "More".

    Pages are written by several people; a new page must be reachable before someone edits the
    nav, and must not fail the strict build meanwhile.
    """
    for module in _modules:
        files.append(File.generated(config, page_path(module), content=page_content(module)))
    listed = _nav_paths(config.nav)
    unlisted = sorted(f.src_uri for f in files.documentation_pages() if f.src_uri not in listed)
    if unlisted:
        for src_uri in unlisted:
            log.info("nav: %s is not in .ci/mkdocs.yml, listed under More", src_uri)
        nav = list(config.nav or [])
        reference = [e for e in nav if isinstance(e, dict) and "Reference" in e]
        nav = [e for e in nav if e not in reference]
        config.nav = [*nav, {"More": unlisted}, *reference]
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Fill the module-list marker of ``reference/index.md`` and the component-status marker."""
    markdown = _STATUS_MARKER.sub(lambda _: component_status(_modules), markdown)
    if not _MARKER.search(markdown):
        return markdown
    lines = [f"- [`{m}`]({m}.md)" for m in _modules]
    if _skipped:
        lines.append("")
        lines.append("Present in the tree but left out because they do not import at build time:")
        lines.append("")
        lines += [f"- `{m}`" for m in sorted(_skipped)]
    listing = "\n".join(lines)
    return _MARKER.sub(lambda _: listing, markdown)
