"""Two real gateways on loopback: files and receipts in both directions, held receipts, duplicates."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.gateway.events import Event
from oftp2_provider.ledger import Direction, ReceiptState, TransferStatus
from oftp2_provider.pki import PKIBundle

from .conftest import A_ID, B_ID, gateway_config


def _pair(tmp_path: Path, *, a_partner: dict[str, Any] | None = None, **a_extra: Any) -> tuple[Any, Any]:
    """A (listens, knows B without address) and B (calls A)."""
    a_cfg = gateway_config(
        tmp_path / "a",
        A_ID,
        partners={"b": {"odette_id": B_ID, "password": "BPW", **(a_partner or {})}},
        **a_extra,
    )
    return a_cfg, "BPW"


async def _b_for(tmp_path: Path, a: Gateway, start_gateway: Callable[..., Any], **partner: Any) -> Gateway:
    b_cfg = gateway_config(
        tmp_path / "b",
        B_ID,
        password="BPW",
        partners={
            "a": {
                "odette_id": A_ID,
                "password": "OWNPW",
                "our_password": "BPW",
                "address": f"127.0.0.1:{a.port()}",
                **partner,
            }
        },
    )
    gw: Gateway = await start_gateway(b_cfg)
    return gw


def _read(path: str | None) -> bytes:
    assert path is not None
    return Path(path).read_bytes()


async def test_files_and_receipts_both_ways_when_the_partner_only_pulls(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    a_cfg, _ = _pair(tmp_path)
    a: Gateway = await start_gateway(a_cfg)
    b = await _b_for(tmp_path, a, start_gateway)
    seen: list[Event] = []
    a.bus.subscribe(seen.append)

    to_b = await a.submit_file("b", dsn="A.TO.B", content=b"from A " * 5000)
    to_a = await b.submit_file(A_ID, dsn="B.TO.A", content=b"from B " * 3000)
    assert to_b.status is TransferStatus.QUEUED and to_a.status is TransferStatus.QUEUED

    # A cannot call B (no address): B calls A and A sends what it queued when B hands over the turn
    result = await b.call_partner("a")
    assert result.ok, result
    assert result.files_sent == 1 and result.files_received == 1

    a_out = await a.ledger.get(to_b.id)
    b_out = await b.ledger.get(to_a.id)
    assert b_out.status is TransferStatus.DELIVERED, b_out  # A's EERP reached B in the same session
    assert a_out.status is TransferStatus.DELIVERED, a_out  # B's EERP reached A in the same session

    [in_a] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    [in_b] = await b.ledger.list_transfers(direction=Direction.INBOUND)
    assert in_a.status is TransferStatus.RECEIVED and in_a.receipt_state is ReceiptState.SENT
    assert in_b.status is TransferStatus.RECEIVED and in_b.receipt_state is ReceiptState.SENT
    assert _read(in_a.local_path) == b"from B " * 3000
    assert _read(in_b.local_path) == b"from A " * 5000
    assert in_a.sha256 == hashlib.sha256(b"from B " * 3000).hexdigest()
    assert Path(in_a.local_path or "").parent == tmp_path / "a" / "inbox" / "b"
    assert not any((tmp_path / "a" / "inbox" / "b" / ".partial").iterdir())
    names = [e.name for e in seen]
    for expected in ("session.started", "file.received", "file.sent", "receipt.sent", "receipt.received"):
        assert expected in names, names
    assert names[-1] == "session.ended" or "session.ended" in names


async def test_held_receipt_goes_out_in_a_later_session(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    a_cfg, _ = _pair(tmp_path, a_partner={"receipt_policy": "hold"})
    a: Gateway = await start_gateway(a_cfg)
    b = await _b_for(tmp_path, a, start_gateway)
    sent = await b.submit_file("a", dsn="HELD", content=b"x" * 2048)

    first = await b.call_partner("a")
    assert first.ok and first.files_sent == 1 and first.receipts_received == 0
    assert (await b.ledger.get(sent.id)).status is TransferStatus.SENT
    [inbound] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert inbound.receipt_state is ReceiptState.HELD

    # a call without a release changes nothing
    again = await b.call_partner("a")
    assert again.ok and again.receipts_received == 0

    await a.release_receipt(inbound.id, ok=True)
    third = await b.call_partner("a")
    assert third.ok and third.receipts_received == 1
    assert (await b.ledger.get(sent.id)).status is TransferStatus.DELIVERED
    assert (await a.ledger.get(inbound.id)).receipt_state is ReceiptState.SENT


async def test_released_as_nerp_refuses_the_senders_transfer(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    a_cfg, _ = _pair(tmp_path, a_partner={"receipt_policy": "hold"})
    a: Gateway = await start_gateway(a_cfg)
    b = await _b_for(tmp_path, a, start_gateway)
    sent = await b.submit_file("a", dsn="WILL.FAIL", content=b"bad data")
    assert (await b.call_partner("a")).ok
    [inbound] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    await a.release_receipt(inbound.id, ok=False, nerp_code=34, text="could not process")
    assert (await b.call_partner("a")).receipts_received == 1
    out = await b.ledger.get(sent.id)
    assert out.status is TransferStatus.REFUSED and out.nerp_code == 34


async def test_partner_calling_us_gets_its_receipts_and_our_files(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    """B queues for A and A queues for B; only B ever calls: each side gets everything once."""
    a_cfg, _ = _pair(tmp_path)
    a: Gateway = await start_gateway(a_cfg)
    b = await _b_for(tmp_path, a, start_gateway)
    for i in range(3):
        await a.submit_file("b", dsn=f"A{i}", content=bytes([i]) * (1000 * (i + 1)))
    results = await asyncio.gather(b.call_partner("a"), b.call_partner("a"))
    assert all(r.ok for r in results)
    assert sum(r.files_received for r in results) == 3
    inbound = await b.ledger.list_transfers(direction=Direction.INBOUND)
    assert sorted(t.key.dsn for t in inbound) == ["A0", "A1", "A2"]
    for t in inbound:
        assert _read(t.local_path) == bytes([int(t.key.dsn[1])]) * (1000 * (int(t.key.dsn[1]) + 1))
    outbound = await a.ledger.list_transfers(direction=Direction.OUTBOUND)
    assert {t.status for t in outbound} == {TransferStatus.DELIVERED}


async def test_failing_handlers_never_stop_the_gateway(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    handlers = "python:tests.unit.gateway.sample_handlers"
    a_cfg, _ = _pair(
        tmp_path,
        events={
            "workers": 1,
            "handlers": [
                {"name": "boom", "handler": f"{handlers}.Boom", "events": ["file.received"]},
            ],
        },
    )
    a: Gateway = await start_gateway(a_cfg)
    b = await _b_for(tmp_path, a, start_gateway)
    failures: list[Event] = []
    a.bus.subscribe(lambda e: failures.append(e) if e.name == "handler.failed" else None)
    for i in range(2):
        await b.submit_file("a", dsn=f"H{i}", content=b"x")
        assert (await b.call_partner("a")).ok
    await a.bus.drain(30)
    inbound = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert len(inbound) == 2
    assert sorted((e.data["handler"], e.data["timeout"]) for e in failures) == [
        ("boom", False),
        ("boom", False),
    ]


async def test_stuck_handler_is_killed_while_the_gateway_serves(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    handlers = "python:tests.unit.gateway.sample_handlers"
    a_cfg, _ = _pair(
        tmp_path,
        events={
            "workers": 1,
            "handlers": [
                {"name": "stuck", "handler": f"{handlers}.Sleeper", "events": ["custom.sleep"], "timeout": 1}
            ],
        },
    )
    a: Gateway = await start_gateway(a_cfg)
    b = await _b_for(tmp_path, a, start_gateway)
    a.bus.emit("custom.sleep", {"seconds": 120})
    await b.submit_file("a", dsn="DURING", content=b"x")
    assert (await b.call_partner("a")).ok  # served while the only worker is stuck
    await a.bus.drain(30)
    assert a.bus.pool.replaced == 1
    assert [e.data["timeout"] for e in a.bus.history if e.name == "handler.failed"] == [True]


async def test_signed_receipts_are_verified(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    from oftp2_provider.gateway.config import parse_config

    a: Gateway = await start_gateway(
        parse_config(
            {
                "identity": {
                    "odette_id": A_ID,
                    "password": "OWNPW",
                    "signing": {"cert": str(test_pki.server.cert_path), "key": str(test_pki.server.key_path)},
                },
                "state_dir": str(tmp_path / "a"),
                "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": 0}],
                "partners": {"b": {"odette_id": B_ID, "password": "BPW"}},
            }
        )
    )

    async def sender(base: str, signer_cert: Path) -> Gateway:
        gw: Gateway = await start_gateway(
            gateway_config(
                tmp_path / base,
                B_ID,
                password="BPW",
                partners={
                    "a": {
                        "odette_id": A_ID,
                        "password": "OWNPW",
                        "address": f"127.0.0.1:{a.port()}",
                        "certificates": {"signing": str(signer_cert)},
                        "security": {
                            "cipher_suite": 4,
                            "request_signed_receipt": True,
                            "require_signed_receipts": True,
                        },
                    }
                },
            )
        )
        return gw

    good = await sender("b", test_pki.server.cert_path)
    sent = await good.submit_file("a", dsn="SIGNED.EERP", content=b"signed please" * 100)
    assert (await good.call_partner("a")).receipts_received == 1
    assert (await good.ledger.get(sent.id)).status is TransferStatus.DELIVERED
    [receipt] = await good.ledger.receipts(sent.id)
    assert receipt.verification == "verified"

    # the sender trusts another certificate: the signed EERP is stored but not accepted
    wrong = await sender("b2", test_pki.partner.cert_path)
    sent = await wrong.submit_file("a", dsn="SIGNED.EERP2", content=b"x" * 100)
    assert (await wrong.call_partner("a")).receipts_received == 1
    assert (await wrong.ledger.get(sent.id)).status is TransferStatus.SENT
    [receipt] = await wrong.ledger.receipts(sent.id)
    assert receipt.verification == "unknown_certificate"


async def test_signed_compressed_encrypted_files_end_to_end(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    from oftp2_provider.gateway.config import parse_config

    def pair(identity: Any) -> dict[str, str]:
        return {"cert": str(identity.cert_path), "key": str(identity.key_path)}

    async def receiver(base: str, trusted_signer: Path) -> Gateway:
        gw: Gateway = await start_gateway(
            parse_config(
                {
                    "identity": {
                        "odette_id": A_ID,
                        "password": "OWNPW",
                        "signing": pair(test_pki.server),
                        "decryption": pair(test_pki.server),
                    },
                    "state_dir": str(tmp_path / base),
                    "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": 0}],
                    "partners": {
                        "b": {
                            "odette_id": B_ID,
                            "password": "BPW",
                            "certificates": {"signing": str(trusted_signer)},
                            "security": {"require_signed": True, "require_encrypted": True},
                        }
                    },
                }
            )
        )
        return gw

    async def sender(base: str, a: Gateway) -> Gateway:
        gw: Gateway = await start_gateway(
            parse_config(
                {
                    "identity": {"odette_id": B_ID, "password": "BPW", "signing": pair(test_pki.client)},
                    "state_dir": str(tmp_path / base),
                    "listeners": [],
                    "partners": {
                        "a": {
                            "odette_id": A_ID,
                            "password": "OWNPW",
                            "address": f"127.0.0.1:{a.port()}",
                            "certificates": {
                                "encryption": str(test_pki.server.cert_path),
                                "signing": str(test_pki.server.cert_path),
                            },
                            "security": {
                                "cipher_suite": 4,
                                "sign_outbound": True,
                                "encrypt_outbound": True,
                                "compress_outbound": True,
                                "request_signed_receipt": True,
                                "require_signed_receipts": True,
                            },
                        }
                    },
                }
            )
        )
        return gw

    payload = b"confidential invoice line\n" * 4000
    a = await receiver("a", test_pki.client.cert_path)
    b = await sender("b", a)
    sent = await b.submit_file("a", dsn="SECURE", content=payload)
    assert sent.security_level == 3 and sent.compression == 1 and sent.envelope == 1
    assert sent.size == len(payload)
    result = await b.call_partner("a")
    assert result.ok and result.files_sent == 1 and result.receipts_received == 1, result
    [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED
    assert _read(row.local_path) == payload  # decrypted, decompressed, verified
    assert row.sha256 == hashlib.sha256(payload).hexdigest()
    assert row.transmitted_digest != row.sha256  # the envelope differs from the plain file
    out = await b.ledger.get(sent.id)
    assert out.status is TransferStatus.DELIVERED
    assert [r.verification for r in await b.ledger.receipts(sent.id)] == ["verified"]

    # a receiver that trusts another signer refuses the file at its end (EFNA 21) and keeps nothing
    wrong = await receiver("a2", test_pki.partner.cert_path)
    b2 = await sender("b2", wrong)
    sent2 = await b2.submit_file("a", dsn="SECURE2", content=payload)
    assert (await b2.call_partner("a")).files_sent == 0
    refused = await b2.ledger.get(sent2.id)
    assert refused.status is TransferStatus.REFUSED and refused.nerp_code == 21
    [row2] = await wrong.ledger.list_transfers(direction=Direction.INBOUND)
    assert row2.status is TransferStatus.FAILED
    assert await asyncio.to_thread(_files, tmp_path / "a2" / "inbox" / "b") == []


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.exists() else []
