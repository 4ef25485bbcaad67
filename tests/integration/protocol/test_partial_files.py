"""The receiver's ``.partial`` writer: a superseded (older) writer never touches the file again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from oftp2_provider.protocol.api import OutboundFile, Timeouts
from oftp2_provider.protocol.commands import SFID
from oftp2_provider.protocol.errors import EsidReason
from oftp2_provider.protocol.files import PartialFile, PartialFileSuperseded
from oftp2_provider.protocol.transport import OFTPClient

from .conftest import CLIENT, SERVER, Responder, client_config, server_config
from .test_shutdown import _Gate


def sfid(time: str = "1200000001", restart: int = 0) -> SFID:
    return SFID(
        dsn="SAME.NAME",
        date="20260101",
        time=time,
        destination="O0013SERVER",
        originator="O0013CLIENT",
        restart=restart,
    )


async def test_late_flush_of_a_superseded_writer_does_not_touch_the_committed_file(tmp_path: Path) -> None:
    target = tmp_path / "inbox" / "SAME.NAME"
    old = PartialFile(target, sfid("1200000001"))
    await old.open(1024, False)
    old.append(b"A" * 5000)  # still in the old session's batch (its connection died unnoticed)
    new = PartialFile(target, sfid("1200000002"))  # another virtual file, same name
    assert await new.open(1024, True) == 0
    assert old.superseded and not new.superseded
    await new.write(b"B" * 3000)
    await new.commit()
    # the old session times out now and flushes: its descriptor points at the renamed inode
    await old.close()
    assert target.read_bytes() == b"B" * 3000
    assert isinstance(old.error, PartialFileSuperseded)
    with pytest.raises(PartialFileSuperseded):
        await old.commit()
    assert target.read_bytes() == b"B" * 3000


async def test_superseded_writer_does_not_write_into_the_new_partial(tmp_path: Path) -> None:
    target = tmp_path / "inbox" / "SAME.NAME"
    old = PartialFile(target, sfid("1200000001"))
    await old.open(1024, False)
    new = PartialFile(target, sfid("1200000002"))
    await new.open(1024, False)
    await new.write(b"N" * 2048)
    await new.flush()
    await old.write(b"O" * 10_000)
    await old.flush()
    await old.truncate()  # an old count mismatch must not empty the newer session's file either
    await old.close()
    assert new.path.read_bytes() == b"N" * 2048
    await new.write(b"M" * 100)
    await new.commit()
    assert target.read_bytes() == b"N" * 2048 + b"M" * 100


async def test_take_over_during_a_batch_in_flight_keeps_a_consistent_restart(tmp_path: Path) -> None:
    """Same virtual file resumed while the old writer's 1 MiB batch is being written."""
    content = os.urandom(3 << 20)
    target = tmp_path / "inbox" / "BIG"
    old = PartialFile(target, sfid(restart=0))
    await old.open(1024, False)
    old.append(content[: 1 << 20])
    old.append(content[1 << 20 : (1 << 20) + 5000])
    await old.dispatch()  # the batch goes to a worker thread; the new session opens meanwhile
    new = PartialFile(target, sfid(restart=len(content) // 1024))
    restart = await new.open(1024, True)
    offset = restart * 1024
    await new.write(content[offset:])
    await old.close()  # whatever the old writer still had is dropped or was written before the take-over
    await new.commit()
    assert target.read_bytes() == content
    assert new.sha256 == hashlib.sha256(content).hexdigest()


async def test_many_take_overs_leave_no_ownership_entries(tmp_path: Path) -> None:
    from oftp2_provider.protocol import files

    before = len(files._slots)
    writers = [PartialFile(tmp_path / f"f{i % 3}", sfid(f"12000000{i:02d}")) for i in range(12)]
    for w in writers:
        await w.open(1024, False)
        await w.write(b"x")
    await asyncio.gather(*(w.close() for w in writers))
    assert len(files._slots) == before


async def test_stalled_session_cannot_corrupt_the_file_a_newer_session_delivered(
    responder_factory: Callable[..., object], payload: Callable[..., Path]
) -> None:
    """On loopback: session 1 stalls mid-file (its peer went silent), session 2 delivers another
    virtual file under the same name, then session 1 times out and flushes what it buffered."""
    responder: Responder = await responder_factory(  # type: ignore[misc]
        server_config(timeouts=Timeouts(connect=5, read=1.5, idle=5))
    )
    first_src = payload(2_000_000, "first.bin")
    second_src = payload(600_000, "second.bin")
    gate = _Gate(first_src, 1_500_000)
    stalled = OFTPClient(client_config(), "127.0.0.1", responder.port)
    await stalled.connect()
    sending = asyncio.create_task(
        stalled.send_file(
            OutboundFile(
                dsn="SAME.NAME",
                originator=CLIENT,
                destination=SERVER,
                source=gate.source,
                size=2_000_000,
            )
        )
    )
    await asyncio.wait_for(gate.blocked.wait(), 10)
    partial = responder.inbox / ".partial" / "SAME.NAME"
    for _ in range(500):  # session 1 has written its first 1 MiB batch and buffers the rest
        if partial.exists() and partial.stat().st_size >= 1 << 20:
            break
        await asyncio.sleep(0.01)
    assert partial.stat().st_size >= 1 << 20
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client2:
        result = await client2.send_file(
            OutboundFile(dsn="SAME.NAME", originator=CLIENT, destination=SERVER, path=second_src)
        )
    assert result.ok and result.restart_offset == 0
    await responder.server.wait_sessions(2, timeout=15)  # session 1 timed out (ESID 09) and closed its sink
    assert responder.server.outcomes[-1].reason == EsidReason.TIME_OUT
    assert (responder.inbox / "SAME.NAME").read_bytes() == second_src.read_bytes()
    gate.release.set()
    with contextlib.suppress(Exception):
        await sending
    await stalled.close()
