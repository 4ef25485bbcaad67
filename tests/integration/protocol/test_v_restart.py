"""Restart of V-format (variable-length record) files on real loopback sockets.

The restart position of an unsecured V file counts records (RFC 5024 §5.3.3/§5.3.4); both sides
find the octet offset of a record by walking the 2-octet length prefixes of the stored file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from oftp2_provider.protocol.api import OutboundFile, SendResult
from oftp2_provider.protocol.commands import SFID, ProtocolLevel, RecordFormat
from oftp2_provider.protocol.errors import EsidReason
from oftp2_provider.protocol.files import PartialFile
from oftp2_provider.protocol.session import Session
from oftp2_provider.protocol.transport import OFTPClient, SessionAborted
from oftp2_provider.protocol.vrecords import VRecordScan, scan_v_records

from .conftest import CLIENT, SERVER, Responder, client_config
from .test_transport import _killing_source

V = RecordFormat.VARIABLE


def stored(records: list[bytes]) -> bytes:
    return b"".join(len(r).to_bytes(2, "big") + r for r in records)


def v_records(count: int, seed: int = 5024) -> list[bytes]:
    """``count`` records of random lengths, with empty and 65 535-octet records among them."""
    rng = random.Random(seed)
    out = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(count)]
    for i in range(0, count, 500):
        out[i] = b""
        out[i + 1] = rng.randbytes(65535)
    out[-1] = b"\xff" * 65535
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def v_file(tmp_path: Path, records: list[bytes], name: str = "records.v") -> Path:
    src = tmp_path / "out" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(stored(records))
    return src


def outbound(src: Path, dsn: str, **kw: object) -> OutboundFile:
    return OutboundFile(dsn=dsn, originator=CLIENT, destination=SERVER, path=src, format=V, **kw)  # type: ignore[arg-type]


def plant_partial(responder: Responder, item: OutboundFile, content: bytes) -> Path:
    """A partial file left by an earlier attempt at ``item`` (same virtual-file identity)."""
    partial = responder.inbox / ".partial" / item.dsn
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(content)
    key = (item.dsn, item.date, item.time, item.originator, item.destination)
    partial.with_name(partial.name + ".sfid").write_text("\t".join(key), "utf-8")
    return partial


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The SFPA restart positions the responder answered with (records for a V file)."""
    calls: list[int] = []
    original = Session.accept_file

    def spy(self: Session, restart: int = 0, *, restart_octets: int | None = None) -> bytes:
        calls.append(restart)
        return original(self, restart, restart_octets=restart_octets)

    monkeypatch.setattr(Session, "accept_file", spy)
    return calls


async def send(responder: Responder, item: OutboundFile) -> SendResult:
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        return await client.send_file(item)


async def test_partial_file_resumes_after_whole_v_records(tmp_path: Path) -> None:
    records = v_records(510, seed=2)
    offer = SFID("P.V", "20260101", "1200000001", SERVER, CLIENT, format=V, restart=400)
    target = tmp_path / "inbox" / "P.V"
    first = PartialFile(target, dataclasses.replace(offer, restart=0))
    assert await first.open(0, True, v_records=True) == 0  # nothing kept yet
    await first.write(stored(records[:450]) + b"\x00\x10abc")  # 450 records, then a torn one
    await first.close()
    sink = PartialFile(target, offer)
    assert await sink.open(0, True, v_records=True) == 400  # min(SFIDREST, 450 whole records)
    assert sink.size == len(stored(records[:400])) == sink.path.stat().st_size  # truncated there
    await sink.write(stored(records[400:]))
    await sink.commit()
    assert target.read_bytes() == stored(records) and sink.sha256 == sha(stored(records))
    # without want_restart the partial file is started over
    again = PartialFile(target.with_name("Q.V"), offer)
    again.path.parent.mkdir(parents=True, exist_ok=True)
    again.path.write_bytes(stored(records[:10]))
    assert await again.open(0, False, v_records=True) == 0 and again.path.stat().st_size == 0
    await again.close()


async def test_v_restart_after_connection_killed(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(3000)
    content = stored(records)
    src = v_file(tmp_path, records)
    first = outbound(src, "VAR.RECS")
    box: list[OFTPClient] = []
    killed = OutboundFile(
        dsn="VAR.RECS",
        originator=CLIENT,
        destination=SERVER,
        source=_killing_source(src, 1_500_000, box),
        size=len(content),
        format=V,
        date=first.date,
        time=first.time,
    )
    client = OFTPClient(client_config(), "127.0.0.1", responder.port)
    box.append(client)
    await client.connect()
    with pytest.raises(SessionAborted):
        await client.send_file(killed)
    await client.close()
    await responder.server.wait_sessions(1, timeout=5)
    partial = responder.inbox / ".partial" / "VAR.RECS"
    kept = scan_v_records(partial)
    assert kept.offset == partial.stat().st_size  # the receiver writes whole records only
    assert 0 < kept.records < len(records) and not (responder.inbox / "VAR.RECS").exists()
    # second session, same virtual file: the sender offers all its records, the receiver what it kept
    result = await send(responder, first)
    assert accepted == [0, kept.records]
    assert result.ok
    assert result.restart_offset == kept.offset
    assert result.octets_sent == sum(map(len, records[kept.records :]))
    assert result.sha256 == sha(content)
    final = responder.inbox / "VAR.RECS"
    assert sha(final.read_bytes()) == sha(content)
    await responder.server.wait_sessions(2, timeout=5)
    received = responder.handlers[-1].received[0]
    assert received.record_count == len(records)  # EFIDRCNT = the whole file, restart included
    assert received.restart_offset == kept.offset and received.sha256 == sha(content)
    assert not (responder.inbox / ".partial" / "VAR.RECS").exists()


@pytest.mark.parametrize(
    "tail",
    [
        b"\x07",  # half a length prefix
        b"\x01\x00" + b"t" * 40,  # a 256-octet record cut after 40 octets
        b"\xff\xff" + b"t" * 65000,  # a 65 535-octet record cut short
    ],
)
async def test_v_restart_drops_a_torn_last_record(
    responder: Responder, tmp_path: Path, accepted: list[int], tail: bytes
) -> None:
    records = v_records(1200, seed=7)
    content = stored(records)
    item = outbound(v_file(tmp_path, records), "TORN.V")
    keep = 777
    plant_partial(responder, item, stored(records[:keep]) + tail)
    result = await send(responder, item)
    assert accepted == [keep]
    assert result.ok and result.restart_offset == len(stored(records[:keep]))
    assert sha((responder.inbox / "TORN.V").read_bytes()) == sha(content)
    await responder.server.wait_sessions(1, timeout=5)
    assert responder.handlers[0].received[0].record_count == len(records)


async def test_v_restart_from_a_malformed_partial_starts_from_the_last_good_record(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(600, seed=11)
    item = outbound(v_file(tmp_path, records), "BAD.V")
    plant_partial(responder, item, b"\xfe\xfe" + b"garbage" * 100)  # the first length runs past the end
    result = await send(responder, item)
    assert accepted == [0]
    assert result.ok and result.restart_offset == 0
    assert (responder.inbox / "BAD.V").read_bytes() == stored(records)


async def test_v_sender_with_an_explicit_restart(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(1000, seed=3)
    src = v_file(tmp_path, records)
    item = outbound(src, "EXPLICIT.V", restart=250)
    plant_partial(responder, item, stored(records[:600]))
    result = await send(responder, item)
    assert accepted == [250]  # min(SFIDREST 250, 600 records kept)
    assert result.ok and result.restart_offset == len(stored(records[:250]))
    assert result.sha256 == sha(stored(records))
    assert (responder.inbox / "EXPLICIT.V").read_bytes() == stored(records)
    await responder.server.wait_sessions(1, timeout=5)
    assert responder.handlers[0].received[0].record_count == len(records)


async def test_v_explicit_restart_beyond_the_file_offers_its_records(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(520, seed=4)
    item = outbound(v_file(tmp_path, records), "ALL.V", restart=10_000)
    plant_partial(responder, item, stored(records))  # the receiver kept everything: nothing left to send
    result = await send(responder, item)
    assert accepted == [len(records)]
    assert result.ok and result.octets_sent == 0
    assert result.restart_offset == len(stored(records))
    assert (responder.inbox / "ALL.V").read_bytes() == stored(records)


async def test_v_restart_below_level_5(responder: Responder, tmp_path: Path, accepted: list[int]) -> None:
    records = v_records(700, seed=14)
    item = outbound(v_file(tmp_path, records), "OLD.V")  # level 4 keeps CCYYMMDD/HHMMSScccc
    plant_partial(responder, item, stored(records[:444]))
    async with OFTPClient(client_config(level=ProtocolLevel.V1_4), "127.0.0.1", responder.port) as client:
        assert client.negotiated is not None and client.negotiated.level == ProtocolLevel.V1_4
        result = await client.send_file(item)
    assert accepted == [444] and result.ok and result.restart_offset == len(stored(records[:444]))
    assert (responder.inbox / "OLD.V").read_bytes() == stored(records)


async def test_v_restart_zero_never_restarts(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(510, seed=5)
    item = outbound(v_file(tmp_path, records), "ZERO.V", restart=0)
    plant_partial(responder, item, stored(records[:300]))
    result = await send(responder, item)
    assert accepted == [0] and result.ok and result.restart_offset == 0
    assert (responder.inbox / "ZERO.V").read_bytes() == stored(records)


def _source(content: bytes, calls: list[int]) -> Callable[[int], AsyncIterator[bytes]]:
    async def source(offset: int) -> AsyncIterator[bytes]:
        calls.append(offset)
        for start in range(offset, len(content), 50_000):
            yield content[start : start + 50_000]

    return source


async def test_v_source_restarts_only_with_an_explicit_position(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(900, seed=9)
    content = stored(records)
    calls: list[int] = []
    base = outbound(v_file(tmp_path, records), "SRC.V")
    item = OutboundFile(
        dsn="SRC.V",
        originator=CLIENT,
        destination=SERVER,
        source=_source(content, calls),
        size=len(content),
        format=V,
        date=base.date,
        time=base.time,
        restart=400,
    )
    plant_partial(responder, item, stored(records[:650]))
    result = await send(responder, item)
    assert accepted == [400]
    offset = len(stored(records[:400]))
    assert calls == [0, offset]  # walked from the start to record 400, then sent from there
    assert result.ok and result.restart_offset == offset and result.sha256 == sha(content)
    assert (responder.inbox / "SRC.V").read_bytes() == content
    # without an explicit position a source is not counted (it would have to be read whole)
    calls.clear()
    again = OutboundFile(
        dsn="SRC2.V",
        originator=CLIENT,
        destination=SERVER,
        source=_source(content, calls),
        size=len(content),
        format=V,
    )
    plant_partial(responder, again, stored(records[:650]))
    result = await send(responder, again)
    assert accepted[-1] == 0 and calls == [0] and result.ok


async def test_v_source_shorter_than_the_accepted_restart_ends_the_session(
    responder: Responder, tmp_path: Path, accepted: list[int]
) -> None:
    records = v_records(600, seed=12)
    content = stored(records[:100])  # the sender's content changed: only 100 records now
    item = OutboundFile(
        dsn="SHRUNK.V",
        originator=CLIENT,
        destination=SERVER,
        source=_source(content, []),
        size=len(content),
        format=V,
        restart=500,
    )
    partial = plant_partial(responder, item, stored(records[:550]))
    async with OFTPClient(client_config(), "127.0.0.1", responder.port) as client:
        with pytest.raises(SessionAborted) as info:
            await client.send_file(item)
    assert info.value.reason == EsidReason.UNSPECIFIED and "only 100" in info.value.text
    assert accepted == [500]
    await responder.server.wait_sessions(1, timeout=5)
    assert not (responder.inbox / "SHRUNK.V").exists()
    assert scan_v_records(partial) == VRecordScan(
        500, len(stored(records[:500])), sum(map(len, records[:500]))
    )
