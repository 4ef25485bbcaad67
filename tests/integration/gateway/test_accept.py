"""Accepting sessions and files over real sockets: every refusal code the gateway answers with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.gateway.accept import AcceptConnection
from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.ledger import Direction, TransferStatus
from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.api import AcceptDecision, OutboundFile, SessionConfig
from oftp2_provider.protocol.commands import ProtocolLevel, SecurityLevel
from oftp2_provider.protocol.errors import SessionRejected
from oftp2_provider.protocol.transport import OFTPClient

from .conftest import A_ID, B_ID, gateway_config

HOOK_CALLS: list[AcceptConnection] = []


def reject_odd_hook(conn: AcceptConnection) -> AcceptDecision | None:
    """Accept hook used below: sees the default verdict and overrides it."""
    HOOK_CALLS.append(conn)
    if conn.client_sid_code == "O0013STRANGER":
        conn.accept = True  # an unknown caller let in by the hook
        return None
    if conn.client_password.upper() == "BUSY":
        return AcceptDecision.reject(8, "come back later")
    if conn.accept:
        conn.server_version = 4  # answer OFTP 1.4
    return None


async def _gateway(tmp_path: Path, start_gateway: Callable[..., Any], **partner: Any) -> Gateway:
    cfg = gateway_config(
        tmp_path / "a",
        A_ID,
        partners={"b": {"odette_id": B_ID, "password": "BPW", **partner}},
    )
    gw: Gateway = await start_gateway(cfg)
    return gw


def _client(gw: Gateway, code: str = B_ID, password: str = "BPW", level: int = 5) -> OFTPClient:
    return OFTPClient(SessionConfig(code, password, level=ProtocolLevel(level)), "127.0.0.1", gw.port())


@pytest.mark.parametrize(
    ("code", "password", "level", "reason"),
    [
        ("O0013NOBODY", "BPW", 5, 3),
        (B_ID, "WRONG", 5, 4),
        (B_ID, "BPW", 2, 10),
    ],
)
async def test_default_policy_rejections(
    tmp_path: Path, start_gateway: Callable[..., Any], code: str, password: str, level: int, reason: int
) -> None:
    gw = await _gateway(tmp_path, start_gateway, allowed_levels=[5, 4])
    rejected = []
    gw.bus.subscribe(lambda e: rejected.append(e) if e.name == "session.rejected" else None)
    with pytest.raises(SessionRejected) as info:
        await _client(gw, code, password, level).connect()
    assert info.value.reason == reason
    assert [e.data["reason"] for e in rejected] == [reason]


async def test_password_is_case_insensitive_and_lower_level_is_answered(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    gw = await _gateway(tmp_path, start_gateway, allowed_levels=[5, 4])
    client = _client(gw, B_ID.lower(), "bpw", 5)
    negotiated = await client.connect()
    assert negotiated.level == ProtocolLevel.V2_0
    await client.close()


async def test_accept_hook_overrides(tmp_path: Path, start_gateway: Callable[..., Any]) -> None:
    cfg = gateway_config(
        tmp_path / "a",
        A_ID,
        partners={"b": {"odette_id": B_ID, "password": "BPW"}},
        accept_hook="python:tests.integration.gateway.test_accept.reject_odd_hook",
    )
    gw: Gateway = await start_gateway(cfg)
    HOOK_CALLS.clear()

    client = _client(gw)
    assert (await client.connect()).level == ProtocolLevel.V1_4  # server version set by the hook
    await client.close()
    assert HOOK_CALLS[-1].partner_name == "b" and HOOK_CALLS[-1].client_version == 5

    with pytest.raises(SessionRejected) as info:
        await _client(gw, password="BUSY").connect()
    assert info.value.reason == 8 and "come back later" in info.value.text

    stranger = _client(gw, "O0013STRANGER", "X")
    await stranger.connect()  # let in by the hook although unknown …
    result = await stranger.send_file(
        OutboundFile(dsn="PROBE", originator="O0013STRANGER", destination=A_ID, path=_file(tmp_path, b"x"))
    )
    await stranger.close()
    assert result.refused_at == "SFNA" and result.reason == 3  # … but it cannot deliver files


def _file(tmp_path: Path, data: bytes, name: str = "payload") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def test_file_policy_refusals(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    gw = await _gateway(
        tmp_path,
        start_gateway,
        max_file_size=10_000,
        security={"require_signed": True, "allowed_suites": [2, 4]},
        certificates={"signing": str(test_pki.partner.cert_path)},
    )
    src = _file(tmp_path, b"data" * 100)
    big = _file(tmp_path, b"z" * 50_000, "big")
    client = _client(gw)
    await client.connect()

    async def offer(**kw: Any) -> tuple[str, int]:
        fields: dict[str, Any] = {"dsn": "F", "originator": B_ID, "destination": A_ID, "path": src}
        fields.update(kw)
        result = await client.send_file(OutboundFile(**fields))
        return result.refused_at, result.reason

    assert await offer(destination="O0013ELSEWHERE") == ("SFNA", 2)
    assert await offer(originator="O0013THIRD") == ("SFNA", 3)
    assert await offer() == ("SFNA", 20)  # unsigned
    assert await offer(security=SecurityLevel.SIGNED, cipher_suite=1, envelope=1) == ("SFNA", 15)
    assert await offer(path=big, security=SecurityLevel.SIGNED, cipher_suite=2, envelope=1) == ("SFNA", 6)
    await client.close()
    # refusals never create ledger rows or inbox files
    assert await gw.ledger.list_transfers(direction=Direction.INBOUND) == []


async def test_duplicates_refused_or_answered_with_the_receipt_again(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    src = _file(tmp_path, b"once only")
    item = OutboundFile(
        dsn="DUP", originator=B_ID, destination=A_ID, path=src, date="20260101", time="1200000001"
    )
    gw = await _gateway(tmp_path, start_gateway)
    client = _client(gw)
    await client.connect()
    first = await client.send_file(item)
    second = await client.send_file(item)
    await client.close()
    assert first.ok
    assert (second.refused_at, second.reason) == ("SFNA", 13)
    [row] = await gw.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED
    assert len(list((tmp_path / "a" / "inbox" / "b").glob("DUP*"))) == 1


async def test_duplicate_with_resend_policy_is_discarded_and_the_eerp_comes_again(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    from oftp2_provider.protocol.api import SessionHandlerBase

    src = _file(tmp_path, b"once only")
    item = OutboundFile(
        dsn="DUP", originator=B_ID, destination=A_ID, path=src, date="20260101", time="1200000002"
    )
    gw = await _gateway(tmp_path, start_gateway, duplicate_policy="resend_receipt")
    for _ in range(2):
        handler = SessionHandlerBase()
        client = OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", gw.port(), handler=handler)
        await client.connect()
        assert (await client.send_file(item)).ok
        await client.close()  # hands over the turn: the gateway sends the EERP
        assert [e.dsn for e in handler.eerps] == ["DUP"]
    [row] = await gw.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.attempts == 1
    assert len(list((tmp_path / "a" / "inbox" / "b").glob("DUP*"))) == 1
    assert not any((tmp_path / "a" / "duplicates").glob("[!.]*"))


async def test_secure_authentication_between_gateways(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    def cfg(base: Path, own: str, password: str, me: Any, partner: dict[str, Any]) -> Any:
        from oftp2_provider.gateway.config import parse_config

        return parse_config(
            {
                "identity": {
                    "odette_id": own,
                    "password": password,
                    "auth": {"cert": str(me.cert_path), "key": str(me.key_path)},
                },
                "state_dir": str(base),
                "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": 0}],
                "partners": {"peer": {**partner, "secure_auth": True}},
            }
        )

    a: Gateway = await start_gateway(
        cfg(
            tmp_path / "a",
            A_ID,
            "APW",
            test_pki.server,
            {"odette_id": B_ID, "password": "BPW", "certificates": {"auth": str(test_pki.client.cert_path)}},
        )
    )

    async def b_with(cert: Path, base: str) -> Gateway:
        gw: Gateway = await start_gateway(
            cfg(
                tmp_path / base,
                B_ID,
                "BPW",
                test_pki.client,
                {
                    "odette_id": A_ID,
                    "password": "APW",
                    "address": f"127.0.0.1:{a.port()}",
                    "certificates": {"auth": str(cert)},
                },
            )
        )
        return gw

    good = await b_with(test_pki.server.cert_path, "b")
    await good.submit_file("peer", dsn="AUTHED", content=b"proved")
    result = await good.call_partner("peer")
    assert result.ok and result.files_sent == 1, result

    # B encrypts its challenge for the wrong certificate: A cannot answer, the session fails (ESID 11)
    bad = await b_with(test_pki.partner.cert_path, "b2")
    result = await bad.call_partner("peer")
    assert not result.ok and result.reason == 11, result
