"""TLS listeners, session limits, shutdown and crash recovery of an in-process gateway."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.gateway.forward import inbox_name
from oftp2_provider.ledger import Direction, ReceiptState, TransferStatus, VirtualFileKey
from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.api import SessionConfig
from oftp2_provider.protocol.errors import SessionRejected
from oftp2_provider.protocol.transport import OFTPClient

from .conftest import A_ID, B_ID, gateway_config


async def test_tls_listener_and_tls_call(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    a: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "a",
            A_ID,
            identity={
                "odette_id": A_ID,
                "password": "OWNPW",
                "tls": {"cert": str(test_pki.server.cert_path), "key": str(test_pki.server.key_path)},
            },
            listeners=[{"type": "tls", "host": "127.0.0.1", "port": 0}],
            partners={"b": {"odette_id": B_ID, "password": "BPW"}},
        )
    )
    assert a.listener_info()[0]["type"] == "tls"
    b: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "b",
            B_ID,
            password="BPW",
            identity={"odette_id": B_ID, "password": "BPW", "ca_certs": [str(test_pki.ca.cert_path)]},
            partners={
                "a": {
                    "odette_id": A_ID,
                    "password": "OWNPW",
                    "address": {"host": "localhost", "port": a.port("tls"), "tls": True},
                }
            },
        )
    )
    await b.submit_file("a", dsn="OVER.TLS", content=b"secret" * 1000)
    result = await b.call_partner("a")
    assert result.ok and result.files_sent == 1
    [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED

    # a caller that does not trust the gateway's CA fails in the TLS handshake, not in OFTP
    c: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "c",
            B_ID,
            password="BPW",
            identity={"odette_id": B_ID, "password": "BPW", "ca_certs": [str(test_pki.other_ca.cert_path)]},
            partners={
                "a": {"odette_id": A_ID, "password": "OWNPW", "address": f"tls://localhost:{a.port('tls')}"}
            },
        )
    )
    failed = await c.call_partner("a")
    assert not failed.ok and "certificate" in failed.text.lower()


async def test_per_address_limit_answers_esid_08(tmp_path: Path, start_gateway: Callable[..., Any]) -> None:
    a: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "a",
            A_ID,
            partners={"b": {"odette_id": B_ID, "password": "BPW"}},
            limits={"max_sessions_per_address": 2, "idle_timeout": 20},
        )
    )
    clients = [OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", a.port()) for _ in range(3)]
    await clients[0].connect()
    await clients[1].connect()
    with pytest.raises(SessionRejected) as info:
        await clients[2].connect()
    assert info.value.reason == 8
    await clients[0].close()
    for _ in range(200):  # the server side ends the session just after the client
        if a.ctx.per_address.get("127.0.0.1") == 1:
            break
        await asyncio.sleep(0.02)
    again = OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", a.port())
    await again.connect()  # a slot is free again
    await again.close()
    await clients[1].close()
    for _ in range(200):  # the server side finishes its sessions just after the clients
        if not a.ctx.per_address:
            break
        await asyncio.sleep(0.02)
    assert a.ctx.per_address == {}


async def test_stopping_gateway_refuses_new_sessions_with_esid_05(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    a: Gateway = await start_gateway(
        gateway_config(tmp_path / "a", A_ID, partners={"b": {"odette_id": B_ID, "password": "BPW"}})
    )
    busy = OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", a.port())
    await busy.connect()
    stopping = asyncio.create_task(a.stop(grace=1.0))
    await asyncio.sleep(0.1)
    assert a.health()["status"] == "stopping"
    late = OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", a.port())
    with pytest.raises(SessionRejected) as info:
        await late.connect()
    assert info.value.reason == 5
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stopping
    assert loop.time() - started < 6  # the idle session was cut after the 1 s grace
    assert a.active_sessions == 0
    await busy.close()


async def test_recovery_completes_a_renamed_but_unrecorded_file(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    cfg = gateway_config(
        tmp_path / "a", A_ID, partners={"b": {"odette_id": B_ID, "password": "BPW", "receipt_policy": "hold"}}
    )
    a: Gateway = await start_gateway(cfg)
    key = VirtualFileKey("CRASHED", "20260101", "0000000001", B_ID, A_ID)
    transfer, _ = await a.ledger.begin_inbound(B_ID, key)
    partial_only, _ = await a.ledger.begin_inbound(
        B_ID, VirtualFileKey("PARTIAL", "20260101", "0000000002", B_ID, A_ID)
    )
    inbox = cfg.inbox_for("b")
    await asyncio.to_thread(_write, inbox / inbox_name(key, transfer.id), b"complete file")
    await asyncio.to_thread(
        _write, inbox / ".partial" / inbox_name(partial_only.key, partial_only.id), b"half"
    )
    stats = await a.recover()
    assert stats == {"requeued": 0, "completed": 1}
    done = await a.ledger.get(transfer.id)
    assert done.status is TransferStatus.RECEIVED and done.receipt_state is ReceiptState.HELD
    assert done.sha256 == hashlib.sha256(b"complete file").hexdigest()
    assert (await a.ledger.get(partial_only.id)).status is TransferStatus.RECEIVING


def _write(path: Path, data: bytes) -> None:
    os.makedirs(path.parent, exist_ok=True)
    path.write_bytes(data)


async def test_max_sessions_answers_esid_08(tmp_path: Path, start_gateway: Callable[..., Any]) -> None:
    a: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "a",
            A_ID,
            partners={"b": {"odette_id": B_ID, "password": "BPW"}},
            limits={"max_sessions": 1, "idle_timeout": 20},
        )
    )
    first = OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", a.port())
    await first.connect()
    with pytest.raises(SessionRejected) as info:
        await OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", a.port()).connect()
    assert info.value.reason == 8
    await first.close()


async def test_a_stale_session_cannot_fail_the_reception_a_newer_session_resumed(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    """The partner reconnects while its old connection still looks alive to us; the old one ends last."""
    from collections.abc import AsyncIterator

    from oftp2_provider.protocol.api import OutboundFile

    a: Gateway = await start_gateway(
        gateway_config(tmp_path / "a", A_ID, partners={"b": {"odette_id": B_ID, "password": "BPW"}})
    )
    total, chunk = 8 * 1024 * 1024, 64 * 1024  # the receiver writes in 1 MiB buffers
    data = os.urandom(total)
    gates = [asyncio.Event(), asyncio.Event()]

    def source(stall_at: int, gate: asyncio.Event) -> Callable[[int], AsyncIterator[bytes]]:
        async def chunks(offset: int) -> AsyncIterator[bytes]:
            for pos in range(offset, total, chunk):
                if pos >= stall_at:
                    await gate.wait()
                yield data[pos : pos + chunk]

        return chunks

    def item(src: Callable[[int], AsyncIterator[bytes]]) -> OutboundFile:
        return OutboundFile(
            dsn="RACE",
            originator=B_ID,
            destination=A_ID,
            source=src,
            size=total,
            date="20260103",
            time="0000000001",
        )

    partial = tmp_path / "a" / "inbox" / "b" / ".partial"

    async def partial_size_at_least(n: int) -> None:
        for _ in range(400):
            sizes = await asyncio.to_thread(
                lambda: [p.stat().st_size for p in partial.glob("RACE*") if not p.name.endswith(".sfid")]
            )
            if sizes and sizes[0] >= n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("partial file did not grow")

    old = OFTPClient(SessionConfig(B_ID, "BPW", sdeb=4096, credit=4), "127.0.0.1", a.port())
    await old.connect()
    old_send = asyncio.create_task(old.send_file(item(source(2 * 1024 * 1024, gates[0]))))
    await partial_size_at_least(1024 * 1024)

    new = OFTPClient(SessionConfig(B_ID, "BPW", sdeb=4096, credit=4), "127.0.0.1", a.port())
    await new.connect()
    new_send = asyncio.create_task(new.send_file(item(source(5 * 1024 * 1024, gates[1]))))
    await partial_size_at_least(3 * 1024 * 1024)

    await old.abort()  # the old session ends while the new one is receiving the same file
    old_send.cancel()
    await asyncio.gather(old_send, return_exceptions=True)
    await asyncio.sleep(0.3)
    [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVING  # not failed by the stale session

    gates[1].set()
    result = await new_send
    await new.close()
    assert result.ok and result.restart_offset > 0
    [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED and row.attempts == 2
    assert row.sha256 == hashlib.sha256(data).hexdigest()


async def test_relay_listener_receives_through_the_emulator(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    from oftp2_provider.relay import RelayEmulator, relay_forward_sender

    emu = RelayEmulator(hybrid_connections=["oftp-gw"], accept_timeout=5, request_timeout=10)
    await emu.start()
    try:
        key_name = next(iter(emu.keys))
        a: Gateway = await start_gateway(
            gateway_config(
                tmp_path / "a",
                A_ID,
                listeners=[
                    {
                        "type": "relay",
                        "namespace": emu.namespace,
                        "path": "oftp-gw",
                        "key_name": key_name,
                        "key": emu.keys[key_name],
                        "endpoint": emu.url,
                    }
                ],
                partners={"b": {"odette_id": B_ID, "password": "BPW"}},
            )
        )
        assert a.listener_info()[0]["type"] == "relay" and a.listener_info()[0]["running"]
        async with relay_forward_sender(emu.address("oftp-gw"), emu.token_provider(), "oftp") as local_port:
            b: Gateway = await start_gateway(
                gateway_config(
                    tmp_path / "b",
                    B_ID,
                    password="BPW",
                    partners={
                        "a": {"odette_id": A_ID, "password": "OWNPW", "address": f"127.0.0.1:{local_port}"}
                    },
                )
            )
            sent = await b.submit_file("a", dsn="VIA.RELAY", content=b"tunnelled" * 10000)
            result = await b.call_partner("a")
            assert result.ok and result.files_sent == 1 and result.receipts_received == 1, result
        assert (await b.ledger.get(sent.id)).status is TransferStatus.DELIVERED
        [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
        assert row.status is TransferStatus.RECEIVED and row.size == 90000
        await a.stop(grace=0)
    finally:
        await emu.stop()
