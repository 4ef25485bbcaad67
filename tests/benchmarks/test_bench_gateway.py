"""Many concurrent inbound sessions against one gateway process, with SQLite and PostgreSQL ledgers.

``OFTP2_BENCH_SESSIONS`` (default 500) initiators connect at once from this process, each sends one
1 MiB file (``OFTP2_BENCH_FILE_KIB``, default 1024) and waits for its EERP.  The receiver runs in its
own process: first a bare :class:`OFTPServer` writing files to a directory and answering EERPs (the
baseline: same protocol work, no ledger, no policy), then ``oftp2 gateway`` with each ledger.

Checked: every session ends normally, every file is in the inbox with the right SHA-256 and a
``received`` ledger row whose receipt was sent, every initiator got its EERP.  Reported: sessions/s,
p50/p99 session time, and the ratio gateway/baseline (no absolute timing asserts).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oftp2_provider.ledger import Direction, Ledger, ReceiptState, TransferStatus
from oftp2_provider.protocol.api import OutboundFile, SessionConfig, SessionHandlerBase, Timeouts
from oftp2_provider.protocol.transport import OFTPClient

SESSIONS = int(os.environ.get("OFTP2_BENCH_SESSIONS", "500"))
FILE_SIZE = int(os.environ.get("OFTP2_BENCH_FILE_KIB", "1024")) * 1024
GW_ID = "O0013000000BENCHGW"
CLIENT_ID = "O0013000000BENCHCL"
OFTP2 = Path(sys.executable).parent / "oftp2"

BASELINE = textwrap.dedent(
    """
    import asyncio, signal, sys
    from pathlib import Path
    from oftp2_provider.protocol.api import SessionConfig, SessionHandlerBase, Timeouts
    from oftp2_provider.protocol.transport import OFTPServer

    async def main():
        inbox = Path(sys.argv[1])
        inbox.mkdir(parents=True, exist_ok=True)
        config = SessionConfig(sys.argv[3], "GWPW", timeouts=Timeouts(read=120, idle=120))
        server = OFTPServer(
            config, lambda ctx: SessionHandlerBase(inbox, auto_eerp=True, own_id=sys.argv[3]),
            max_sessions=100000,
        )
        await server.start("127.0.0.1", int(sys.argv[2]))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.close()

    asyncio.run(main())
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited early with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("receiver did not start")


def _gateway_config(base: Path, port: int, ledger: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = base / "gateway.toml"
    path.write_text(
        f"""
state_dir = "state"
{ledger}

[identity]
odette_id = "{GW_ID}"
password = "GWPW"

[[listeners]]
type = "tcp"
host = "127.0.0.1"
port = {port}

[limits]
max_sessions = {SESSIONS + 100}
max_sessions_per_address = {SESSIONS + 100}
idle_timeout = 300

[partners.client]
odette_id = "{CLIENT_ID}"
password = "CLPW"
"""
    )
    return path


async def _session(
    port: int, index: int, source: Path, connecting: asyncio.Semaphore
) -> tuple[float, bool, list[str]]:
    handler = SessionHandlerBase()
    started = time.perf_counter()
    timeouts = Timeouts(connect=120, read=120, idle=120)
    client = OFTPClient(
        SessionConfig(CLIENT_ID, "CLPW", timeouts=timeouts), "127.0.0.1", port, handler=handler
    )
    # all sessions run at the same time; only the TCP/SSID set-up is paced so the listen backlog
    # (100 in asyncio) does not overflow and stall connections in the kernel
    async with connecting:
        await client.connect()
    result = await client.send_file(
        OutboundFile(dsn=f"BENCH{index:06d}", originator=CLIENT_ID, destination=GW_ID, path=source)
    )
    outcome = await client.close()
    # the EERP for this file may come in this session or in a concurrent one of the same partner
    return time.perf_counter() - started, result.ok and outcome.ok, [e.dsn for e in handler.eerps]


async def _run_sessions(port: int, source: Path) -> tuple[float, list[float], int, int]:
    started = time.perf_counter()
    connecting = asyncio.Semaphore(64)
    results = await asyncio.gather(
        *(_session(port, i, source, connecting) for i in range(SESSIONS)), return_exceptions=True
    )
    wall = time.perf_counter() - started
    times = [r[0] for r in results if isinstance(r, tuple)]
    ok = sum(1 for r in results if isinstance(r, tuple) and r[1])
    dsns = [d for r in results if isinstance(r, tuple) for d in r[2]]
    if len(dsns) != len(set(dsns)):
        print(f"  {len(dsns) - len(set(dsns))} duplicate EERP(s)")
    eerps = len(set(dsns)) if len(dsns) == len(set(dsns)) else -len(dsns)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        print(f"  {len(errors)} session(s) failed, first: {errors[0]!r}")
    return wall, times, ok, eerps


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _measure(
    tmp_path: Path, name: str, command: list[str], source: Path, port: int
) -> tuple[float, list[float], int, int]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        wall, times, ok, eerps = asyncio.run(_run_sessions(port, source))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(
        f"  {name:<18} {SESSIONS:>6} sessions  {wall:7.2f} s  {SESSIONS / wall:8.1f} sessions/s  "
        f"p50 {_pct(times, 0.5):6.2f} s  p99 {_pct(times, 0.99):6.2f} s  ok {ok}  eerps {eerps}"
    )
    return wall, times, ok, eerps


def _check_ledger(ledger: Ledger, inbox: Path, digest: str) -> None:
    rows = ledger.list_transfers(direction=Direction.INBOUND, limit=SESSIONS + 10)
    assert len(rows) == SESSIONS
    assert {r.status for r in rows} == {TransferStatus.RECEIVED}
    assert {r.receipt_state for r in rows} == {ReceiptState.SENT}
    assert {r.sha256 for r in rows} == {digest}
    assert len({r.key.dsn for r in rows}) == SESSIONS
    files = [p for p in inbox.iterdir() if p.is_file()]
    assert len(files) == SESSIONS
    assert all(p.stat().st_size == FILE_SIZE for p in files)
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == digest
    assert not [p for p in (inbox / ".partial").iterdir()]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("baseline")
    source = tmp / "payload"
    source.write_bytes(os.urandom(FILE_SIZE))
    port = _free_port()
    print(f"\ngateway benchmark: {SESSIONS} concurrent sessions x {FILE_SIZE // 1024} KiB")
    wall, times, ok, eerps = _measure(
        tmp,
        "baseline (engine)",
        [sys.executable, "-c", BASELINE, str(tmp / "inbox"), str(port), GW_ID],
        source,
        port,
    )
    assert ok == SESSIONS and eerps == SESSIONS
    return {"wall": wall, "p99": _pct(times, 0.99), "source": source}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_inbound_sessions(
    tmp_path: Path, baseline: dict[str, object], backend: str, request: pytest.FixtureRequest
) -> None:
    source = baseline["source"]
    assert isinstance(source, Path)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if backend == "postgresql":
        uri: str = request.getfixturevalue("postgres_uri")
        ledger_line = f'[ledger]\nuri = "{uri}"'
        open_ledger: Callable[[], Ledger] = lambda: Ledger.from_uri(uri)  # noqa: E731
    else:
        ledger_line = ""
        open_ledger = lambda: Ledger.from_sqlite(tmp_path / "gw" / "state" / "ledger.sqlite")  # noqa: E731
    port = _free_port()
    config = _gateway_config(tmp_path / "gw", port, ledger_line)
    wall, times, ok, eerps = _measure(
        tmp_path, f"gateway ({backend})", [str(OFTP2), "gateway", "--config", str(config)], source, port
    )
    base_wall = baseline["wall"]
    base_p99 = baseline["p99"]
    assert isinstance(base_wall, float) and isinstance(base_p99, float)
    print(
        f"  ratio gateway/baseline ({backend}): throughput {base_wall / wall:.2f}, "
        f"p99 {_pct(times, 0.99) / base_p99:.2f}x"
    )
    assert ok == SESSIONS and eerps == SESSIONS
    ledger = open_ledger()
    try:
        _check_ledger(ledger, tmp_path / "gw" / "state" / "inbox" / "client", digest)
    finally:
        ledger.close()
