"""The package skeleton, provider registration and the no-Airflow rule for protocol/ and relay/."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oftp2_provider.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[2]


def test_provider_info_shape() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-oftp2"
    for key in (
        "name",
        "description",
        "versions",
        "connection-types",
        "hooks",
        "operators",
        "sensors",
        "triggers",
    ):
        assert key in info


def _named_classes() -> list[str]:
    info = get_provider_info()
    names = [c["hook-class-name"] for c in info["connection-types"]]
    names += info.get("extra-links", [])
    return names


def _named_modules() -> list[str]:
    info = get_provider_info()
    mods: list[str] = []
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[kind]:
            mods.extend(entry["python-modules"])
    return mods


@pytest.mark.parametrize("path", _named_classes() or ["<none>"])
def test_every_named_class_imports(path: str) -> None:
    if path == "<none>":
        pytest.skip("no connection types registered yet")
    module, _, cls = path.rpartition(".")
    assert hasattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("module", _named_modules() or ["<none>"])
def test_every_named_module_imports(module: str) -> None:
    if module == "<none>":
        pytest.skip("no modules registered yet")
    importlib.import_module(module)


def test_entry_point_registered() -> None:
    from importlib.metadata import entry_points

    eps = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("oftp2_provider")
    ]
    assert eps, "apache_airflow_provider entry point missing"
    assert eps[0].load()()["package-name"] == "airflow-provider-oftp2"


def _package_modules(subpackage: str) -> list[str]:
    base = ROOT / "provider" / "oftp2_provider" / subpackage
    mods = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT / "provider").with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


@pytest.mark.parametrize("subpackage", ["protocol", "relay"])
def test_core_imports_without_airflow(subpackage: str) -> None:
    """Import every module of protocol/ and relay/ in a fresh interpreter where Airflow cannot be imported."""
    modules = _package_modules(subpackage)
    assert modules
    code = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ImportError("airflow is blocked in this test: " + name)
                return None

        sys.meta_path.insert(0, Block())
        for mod in {modules!r}:
            importlib.import_module(mod)
        leaked = [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]
        assert not leaked, leaked
        print("ok", len({modules!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_the_block_really_blocks() -> None:
    """The guard above must be able to fail: importing Airflow under it raises."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ImportError("blocked")
                return None
        sys.meta_path.insert(0, Block())
        import airflow
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "blocked" in result.stderr


def test_cli_version() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "oftp2"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert out.stdout.strip() == "0.1.0"
