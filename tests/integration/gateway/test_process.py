"""The gateway as a real process (`oftp2 gateway --config`): SIGKILL mid-receive, restart, SIGTERM."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from oftp2_provider.ledger import Direction, Ledger, TransferStatus
from oftp2_provider.protocol.api import OutboundFile, SessionConfig
from oftp2_provider.protocol.errors import SessionRejected
from oftp2_provider.protocol.transport import OFTPClient, SessionAborted

from .conftest import A_ID, B_ID

OFTP2 = Path(sys.executable).parent / "oftp2"
TOTAL = 8 * 1024 * 1024
CHUNK = 64 * 1024


def _data(offset: int, size: int) -> bytes:
    """Deterministic content: octet i of the file is (i * 7 + i // 4096) mod 251."""
    return bytes(((i * 7 + i // 4096) % 251) for i in range(offset, offset + size))


FULL = b"".join(_data(o, CHUNK) for o in range(0, TOTAL, CHUNK))


def _write_config(base: Path, port: int) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = base / "gateway.toml"
    path.write_text(
        f"""
state_dir = "state"
log_format = "json"

[identity]
odette_id = "{B_ID}"
password = "BPW"

[[listeners]]
type = "tcp"
host = "127.0.0.1"
port = {port}

[limits]
idle_timeout = 20
shutdown_grace = 3

[partners.a]
odette_id = "{A_ID}"
password = "APW"
"""
    )
    return path


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"gateway exited early ({proc.returncode}): {proc.stderr and proc.stderr.read()!r}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("gateway did not start listening")


@pytest.fixture
def gateway_process(
    tmp_path: Path, free_port: Callable[[], int]
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    port = free_port()
    config = _write_config(tmp_path / "gw", port)
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [str(OFTP2), "gateway", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        _wait_port(port, proc)
        proc.port = port  # type: ignore[attr-defined]
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _item(source: Callable[[int], AsyncIterator[bytes]]) -> OutboundFile:
    return OutboundFile(
        dsn="BIG.FILE",
        originator=A_ID,
        destination=B_ID,
        source=source,
        size=TOTAL,
        date="20260102",
        time="0304050001",
    )


def _client(port: int) -> OFTPClient:
    return OFTPClient(SessionConfig(A_ID, "APW", sdeb=4096, credit=8), "127.0.0.1", port)


async def test_sigkill_mid_receive_then_restart_resumes_without_duplicate(
    tmp_path: Path, gateway_process: Callable[[], subprocess.Popen[bytes]]
) -> None:
    proc = gateway_process()
    port: int = proc.port  # type: ignore[attr-defined]
    state = tmp_path / "gw" / "state"
    inbox = state / "inbox" / "a"
    stall = asyncio.Event()

    async def stalling(offset: int) -> AsyncIterator[bytes]:
        for pos in range(offset, TOTAL, CHUNK):
            if pos >= 3 * 1024 * 1024:
                await stall.wait()  # hold the session open mid-file until the gateway is killed
            yield FULL[pos : pos + CHUNK]

    client = _client(port)
    await client.connect()
    sending = asyncio.create_task(client.send_file(_item(stalling)))
    partial_dir = inbox / ".partial"
    for _ in range(400):
        sizes = [p.stat().st_size for p in partial_dir.glob("BIG*") if not p.name.endswith(".sfid")]
        if sizes and sizes[0] >= 2 * 1024 * 1024:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the gateway never wrote the partial file")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stall.set()
    with pytest.raises((SessionAborted, SessionRejected, ConnectionError, OSError)):
        await asyncio.wait_for(sending, 30)
    await client.abort()

    # nothing partial is visible: no file in the inbox, the ledger says "receiving"
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    ledger = Ledger.from_sqlite(state / "ledger.sqlite")
    try:
        [row] = ledger.list_transfers(direction=Direction.INBOUND)
        assert row.status is TransferStatus.RECEIVING
        assert ledger.undispatched_inbound() == []

        proc = gateway_process()
        client = _client(port)
        await client.connect()

        async def full(offset: int) -> AsyncIterator[bytes]:
            for pos in range(offset, TOTAL, CHUNK):
                yield FULL[pos : pos + CHUNK]

        result = await client.send_file(_item(full))
        await client.close()
        assert result.ok, result
        assert result.restart_offset >= 2 * 1024 * 1024  # resumed, not sent again from zero
        assert result.octets_sent == TOTAL - result.restart_offset

        [row] = ledger.list_transfers(direction=Direction.INBOUND)
        assert row.status is TransferStatus.RECEIVED and row.attempts == 2
        assert row.sha256 == hashlib.sha256(FULL).hexdigest()
        assert _read(row.local_path) == FULL
        assert [p.name for p in inbox.iterdir() if p.is_file()] == [Path(row.local_path or "").name]
        assert [p for p in (inbox / ".partial").iterdir()] == []

        # graceful stop: SIGTERM ends the process with exit code 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert '"message": "shutting down"' in stderr
    finally:
        ledger.close()


def test_cli_check_and_errors(tmp_path: Path, free_port: Callable[[], int]) -> None:
    config = _write_config(tmp_path, free_port())
    ok = subprocess.run(
        [str(OFTP2), "gateway", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"partners": [\n    "a"\n  ]' in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[identity]\nodette_id = "X"\npassword = "much too long"\n')
    out = subprocess.run(
        [str(OFTP2), "gateway", "--config", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "identity.password" in out.stderr
    hashed = subprocess.run(
        [str(OFTP2), "gateway", "--hash-password"], input="pw\n", capture_output=True, text=True, timeout=120
    )
    assert hashed.returncode == 0 and hashed.stdout.startswith("scrypt$")
    unknown = subprocess.run(
        [str(OFTP2), "gateway", "--config", str(config), "--call", "nobody"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 2 and "nobody" in unknown.stderr
    assert os.path.exists(tmp_path / "state" / "ledger.sqlite")


def _read(path: str | None) -> bytes:
    assert path is not None
    return Path(path).read_bytes()


async def test_cli_call_sends_the_queue_and_prints_the_result(tmp_path: Path) -> None:
    """`oftp2 gateway --config B --call a` against a running gateway A: queued files go out."""
    import json

    from oftp2_provider.gateway.config import load_config
    from oftp2_provider.gateway.daemon import Gateway

    from .conftest import gateway_config

    a = Gateway(gateway_config(tmp_path / "a", A_ID, partners={"b": {"odette_id": B_ID, "password": "BPW"}}))
    await a.start()
    try:
        conf = tmp_path / "b" / "gateway.toml"
        conf.parent.mkdir(parents=True)
        conf.write_text(
            f'state_dir = "state"\n[identity]\nodette_id = "{B_ID}"\npassword = "BPW"\n'
            f'[partners.a]\nodette_id = "{A_ID}"\npassword = "OWNPW"\naddress = "127.0.0.1:{a.port()}"\n'
        )
        b = Gateway(load_config(conf))
        await b.start(listen=False)
        await b.submit_file("a", dsn="FROM.CLI", content=b"queued before the call")
        await b.stop(grace=0)
        proc = await asyncio.create_subprocess_exec(
            str(OFTP2),
            "gateway",
            "--config",
            str(conf),
            "--call",
            "a",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["ok"] and result["files_sent"] == 1 and result["receipts_received"] == 1
        [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
        assert row.key.dsn == "FROM.CLI" and row.status is TransferStatus.RECEIVED
    finally:
        await a.stop(grace=0)
