"""The documentation site: a strict MkDocs build, reason-code tables in step with the enums, live examples."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from enum import IntEnum
from pathlib import Path
from types import ModuleType

import pytest

from oftp2_provider.protocol.errors import EfnaReason, EsidReason, NerpReason, SfnaReason

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONFIG = ROOT / ".ci" / "mkdocs.yml"
MKDOCS = Path(sys.executable).parent / "mkdocs"
HOOKS = DOCS / "_hooks"

#: Pages whose ```python blocks are run as tests, so the examples cannot rot.
EXECUTABLE_PAGES = ("index.md",)

#: Pages of this site's own (not the component pages) whose ``oftp2 ...`` commands are checked.
OWN_PAGES = (
    "index.md",
    "oftp2-in-five-minutes.md",
    "partner-onboarding.md",
    "troubleshooting.md",
    "scaling-out.md",
    "security.md",
)


def _load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"oftp2_docs_hook_{name}", HOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(config: Path, site_dir: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    env["NO_MKDOCS_2_WARNING"] = "1"
    env.update(extra_env)
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "-f", str(config), "--site-dir", str(site_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=300,
        check=False,
    )


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]


class Site:
    """A built site and the module census the build itself reported."""

    def __init__(self, root: Path, modules: list[str], failures: dict[str, str]) -> None:
        self.root = root
        self.modules = modules
        self.failures = failures

    def __truediv__(self, other: str) -> Path:
        return self.root / other


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The site, built once for this module exactly as ``make docs`` builds it (strict)."""
    site_dir = tmp_path_factory.mktemp("site")
    census = site_dir.parent / f"{site_dir.name}-census.json"
    proc = _build(CONFIG, site_dir, OFTP2_DOCS_CENSUS=str(census))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert not _warnings(output), "\n".join(_warnings(output))
    seen = json.loads(census.read_text(encoding="utf-8"))
    return Site(site_dir, seen["modules"], seen["skipped"])


def _text(html_file: Path) -> str:
    raw = html_file.read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", raw))


def test_strict_build_produces_the_pages(site: Site) -> None:
    for page in (
        "index.html",
        "oftp2-in-five-minutes/index.html",
        "partner-onboarding/index.html",
        "troubleshooting/index.html",
        "scaling-out/index.html",
        "security/index.html",
        "architecture/index.html",
        "cli/index.html",
        "glossary/index.html",
        "writing-docs/index.html",
        "reference/index.html",
        "reference/oftp2_provider.protocol.commands/index.html",
        "reference/oftp2_provider.protocol.errors/index.html",
    ):
        assert (site / page).is_file(), page


def test_reference_documents_the_command_classes(site: Site) -> None:
    text = _text(site / "reference/oftp2_provider.protocol.commands/index.html")
    for name in ("SSID", "SFID", "EERP", "NERP", "Start Session"):
        assert name in text
    raw = (site / "reference/oftp2_provider.protocol.errors/index.html").read_text(encoding="utf-8")
    assert ":class:" not in raw, "Sphinx roles must be rewritten"
    # The module docstring's :class:`LocalProtocolError` became a link to the class on the same page.
    assert re.search(
        r'<a class="autorefs[^>]*href="#oftp2_provider\.protocol\.errors\.LocalProtocolError"', raw
    )


def test_every_importable_public_module_has_a_reference_page(site: Site) -> None:
    hook = _load_hook("reference_pages")
    assert "oftp2_provider.protocol.commands" in site.modules
    assert "oftp2_provider.get_provider_info" not in site.modules
    # Other work may add or fix modules while the suite runs: judge only what was stable across the build.
    now = set(hook.discover_modules())
    failures_now = hook.import_failures(sorted(now))
    for module in sorted(set(site.modules) & now):
        page = site / f"reference/{module}/index.html"
        if module not in site.failures and module not in failures_now:
            assert page.is_file(), f"{module} imports but has no reference page"
        if module in site.failures and module in failures_now:
            assert not page.is_file(), f"{module} does not import but has a reference page"


@pytest.mark.parametrize(
    ("kind", "enum"),
    [("esid", EsidReason), ("sfna", SfnaReason), ("efna", EfnaReason), ("nerp", NerpReason)],
)
def test_troubleshooting_lists_every_reason_code(site: Site, kind: str, enum: type[IntEnum]) -> None:
    text = _text(site / "troubleshooting/index.html")
    assert "oftp2:reason-codes" not in text
    for member in enum:
        assert f"{enum.__name__}.{member.name}" in text, member


def test_reason_code_prose_is_in_step_with_the_enums() -> None:
    hook = _load_hook("reason_codes")
    assert hook.sync_problems() == []
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    for kind in ("esid", "sfna", "efna", "nerp"):
        assert f"<!-- oftp2:reason-codes {kind} -->" in page


def test_reason_code_table_rows_carry_the_enum_values() -> None:
    hook = _load_hook("reason_codes")
    table = hook.render_table("sfna")
    assert "| **13** | `SfnaReason.DUPLICATE_FILE` |" in table
    assert table.count("\n") == len(SfnaReason) + 1
    nerp = hook.render_table("nerp")
    # NERP 23 mirrors a final SFNA 13 at the next node (code + 10).
    assert re.search(r"\| \*\*23\*\* \| `NerpReason.DUPLICATE_FILE` \| [^|]*SFNA/EFNA 13", nerp)


def test_sync_check_reports_a_code_without_prose(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _load_hook("reason_codes")

    class GrownEsid(IntEnum):
        NORMAL = 0
        BRAND_NEW_CODE = 42

    monkeypatch.setitem(hook.TABLES, "esid", (GrownEsid, hook.ESID))
    problems = hook.sync_problems()
    assert any("BRAND_NEW_CODE" in p for p in problems)
    assert any("PROTOCOL_VIOLATION" in p for p in problems)  # prose for a code the enum lost


def test_strict_build_fails_on_a_broken_link_only(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy(CONFIG, tmp_path / ".ci" / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "provider").symlink_to(ROOT / "provider")
    page = tmp_path / "docs" / "scaling-out.md"
    page.write_text(
        page.read_text(encoding="utf-8") + "\nSee [nowhere](no-such-page.md).\n", encoding="utf-8"
    )
    # A page nobody added to the nav yet is listed under "More" and is not a warning.
    (tmp_path / "docs" / "fresh-page.md").write_text("# Fresh\n", encoding="utf-8")
    proc = _build(tmp_path / ".ci" / "mkdocs.yml", tmp_path / "site", OFTP2_DOCS_QUICK="1")
    assert proc.returncode != 0
    warnings = _warnings(proc.stdout + proc.stderr)
    assert warnings, proc.stdout + proc.stderr
    assert all("no-such-page.md" in w for w in warnings if w.lstrip().startswith("WARNING")), warnings
    assert "fresh-page.md is not in .ci/mkdocs.yml" in proc.stdout + proc.stderr


def test_griffe_extension_rewrites_sphinx_roles() -> None:
    roles = _load_hook("griffe_roles")
    assert roles.rewrite_roles("see :class:`~a.b.Thing` and :mod:`a.b`") == "see `Thing` and `a.b`"
    assert roles.rewrite_roles("``literal`` stays") == "``literal`` stays"
    linked = roles.rewrite_roles(
        "a :meth:`~Thing.run` and an :class:`Unknown`",
        lambda target: "pkg.mod.Thing.run" if target == "Thing.run" else None,
    )
    assert linked == (
        'a <autoref identifier="pkg.mod.Thing.run" optional><code>run</code></autoref> and an `Unknown`'
    )


@pytest.mark.parametrize("page", EXECUTABLE_PAGES)
def test_python_examples_run(page: str) -> None:
    source = (DOCS / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", source, flags=re.S)
    assert blocks, f"{page} has no python example"
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"{page}:example", "exec"), {})
        # A comment after a print() call states what it prints.
        for expected in re.findall(r"^.*\bprint\(.*#\s*(.+?)\s*$", block, flags=re.M):
            assert expected in out.getvalue(), (expected, out.getvalue())


def test_onboarding_states_the_connection_defaults() -> None:
    from oftp2_provider.connection import OFTP2ConnectionExtras

    fields = OFTP2ConnectionExtras.model_fields
    page = (DOCS / "partner-onboarding.md").read_text(encoding="utf-8")
    claim = re.search(r"`extra.sdeb`\s+(\d+), `extra.credit` (\d+)", page)
    assert claim, "partner-onboarding.md no longer states the connection defaults"
    assert (int(claim.group(1)), int(claim.group(2))) == (fields["sdeb"].default, fields["credit"].default)


def _shell_commands(page: str, program: str) -> list[str]:
    source = (DOCS / page).read_text(encoding="utf-8")
    commands: list[str] = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", source, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(program + " "):
                commands.append(line)
    return commands


def test_documented_cli_commands_parse() -> None:
    from oftp2_provider.cli import build_parser

    commands = [c for page in OWN_PAGES for c in _shell_commands(page, "oftp2")]
    assert len(commands) >= 3, commands
    for command in commands:
        args = shlex.split(command)[1:]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"documented command does not parse: {command}\n{err.getvalue()}")
        assert getattr(parsed, "func", None) is not None, command


def test_cli_page_shows_every_sub_command(site: Site) -> None:
    import argparse

    from oftp2_provider.cli import build_parser

    parser = build_parser()
    names = [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]
    assert {"serve", "send", "poll"} <= set(names)
    text = _text(site / "cli/index.html")
    assert "oftp2:cli-help" not in text
    for name in names:
        assert f"oftp2 {name}" in text, name


def test_reference_nav_groups_packages_with_their_modules() -> None:
    hook = _load_hook("reference_pages")
    nav = hook.reference_nav(
        [
            "oftp2_provider.cli",
            "oftp2_provider.ledger",
            "oftp2_provider.ledger.store",
            "oftp2_provider.protocol.codec",
        ]
    )
    assert nav == [
        "reference/index.md",
        {"Package": [{"cli": "reference/oftp2_provider.cli.md"}]},
        {"Protocol engine": [{"protocol.codec": "reference/oftp2_provider.protocol.codec.md"}]},
        {
            "Ledger": [
                {"ledger": "reference/oftp2_provider.ledger.md"},
                {"ledger.store": "reference/oftp2_provider.ledger.store.md"},
            ]
        },
    ]


def test_logger_names_in_troubleshooting_exist() -> None:
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    section = page[page.index("## Logs") : page.index("## Failures without a reason code")]
    names = re.findall(r"^\| `(oftp2[\w.]*)`", section, flags=re.M)
    assert names
    provider = ROOT / "provider"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in provider.rglob("*.py"))
    for name in names:
        module_file = provider / (name.replace(".", "/") + ".py")
        named_by_module = module_file.is_file() and "getLogger(__name__)" in module_file.read_text(
            encoding="utf-8"
        )
        assert named_by_module or f'getLogger("{name}")' in sources, f"no logger named {name}"


def test_component_status_marks_missing_parts_planned() -> None:
    hook = _load_hook("reference_pages")
    table = hook.component_status(
        ["oftp2_provider.protocol.commands", "oftp2_provider.ledger", "oftp2_provider.ledger.store"]
    )
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in table.splitlines()[2:]}
    assert (
        rows["`oftp2_provider.protocol.commands`"] == "[yes](reference/oftp2_provider.protocol.commands.md)"
    )
    assert rows["`oftp2_provider.protocol.session`"] == "planned"
    assert rows["`oftp2_provider.ledger`"].startswith("yes: [package]")
    assert "`store`" in rows["`oftp2_provider.ledger`"]
