"""MkDocs hook: the command-line reference, generated from the ``oftp2`` argument parser.

A page writes ``<!-- oftp2:cli-help -->``; at build time it becomes the ``--help`` text of
``oftp2`` and of each of its sub-commands, taken from ``oftp2_provider.cli.build_parser()`` in a
fresh interpreter (sub-command modules may import Airflow, whose import-time set-up must stay out
of MkDocs).  The page therefore always matches the installed code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
#: The marker counts only alone on its line (so pages can show it in code).
_MARKER = re.compile(r"^[ \t]*<!-- oftp2:cli-help -->[ \t]*$", flags=re.M)

_COLLECT = """
import argparse, json
from oftp2_provider.cli import build_parser

parser = build_parser()
helps = {"": parser.format_help()}
for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
        for name, sub in action.choices.items():
            helps[name] = sub.format_help()
print(json.dumps(helps))
"""


def collect_help() -> dict[str, str]:
    """``{"": top-level help, sub-command: its help}`` from the real parser (100 columns wide)."""
    env = os.environ.copy()
    env["COLUMNS"] = "100"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "provider"), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="oftp2-docs-airflow-") as home:
        env["AIRFLOW_HOME"] = home
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        proc = subprocess.run(
            [sys.executable, "-c", _COLLECT],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        raise PluginError(f"could not collect the oftp2 command-line help:\n{proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()
    helps: dict[str, str] = json.loads(lines[-1])
    return helps


def render(helps: dict[str, str]) -> str:
    """Markdown: the top-level help, then one section per sub-command in the parser's order."""
    parts = ["```text", helps[""].rstrip(), "```", ""]
    for name, text in helps.items():
        if not name:
            continue
        parts += [f"## `oftp2 {name}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the marker with the generated command-line reference."""
    if not _MARKER.search(markdown):
        return markdown
    if os.environ.get("OFTP2_DOCS_QUICK") == "1":  # tests of the build machinery
        text = "*(The help texts are left out of quick builds.)*"
    else:
        text = render(collect_help())
    return _MARKER.sub(lambda _: text, markdown)
