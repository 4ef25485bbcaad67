"""Per-partner TLS client-certificate pins, over real TLS on loopback.

Gateway A listens on TLS (client certificates verified against the test CA, optional) and on plain
TCP.  Partner ``b`` is pinned to the ``client`` certificate by file, ``c`` to the ``client``
certificate by fingerprint, ``d`` is not pinned.  The ``partner`` certificate is issued by the same
CA, so TLS accepts it: only the pin tells the two apart.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from oftp2_provider.gateway.accept import AcceptConnection
from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.ledger import Direction, TransferStatus
from oftp2_provider.pki import Identity, PKIBundle
from oftp2_provider.protocol.api import OutboundFile, SessionConfig
from oftp2_provider.protocol.errors import EsidReason, SessionRejected
from oftp2_provider.protocol.transport import OFTPClient, client_ssl_context

from .conftest import A_ID, B_ID, gateway_config

C_ID = "O0013000000GWC"
D_ID = "O0013000000GWD"

HOOK_SAW: list[AcceptConnection] = []


def recording_hook(conn: AcceptConnection) -> None:
    """Accept hook that only records what it was shown."""
    HOOK_SAW.append(conn)


def _sha256(identity: Identity) -> str:
    return hashlib.sha256(identity.cert.public_bytes(Encoding.DER)).hexdigest()


async def _pinned_gateway(
    tmp_path: Path, start_gateway: Callable[..., Any], pki: PKIBundle, **extra: Any
) -> Gateway:
    fingerprint = ":".join(_sha256(pki.client)[i : i + 2] for i in range(0, 64, 2)).upper()
    cfg = gateway_config(
        tmp_path / "a",
        A_ID,
        identity={
            "odette_id": A_ID,
            "password": "OWNPW",
            "ca_certs": [str(pki.ca.cert_path)],
            "tls": {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path)},
        },
        listeners=[
            {"type": "tls", "host": "127.0.0.1", "port": 0},
            {"type": "tcp", "host": "127.0.0.1", "port": 0},
        ],
        partners={
            "b": {"odette_id": B_ID, "password": "BPW", "tls_client_certificate": str(pki.client.cert_path)},
            "c": {"odette_id": C_ID, "password": "CPW", "tls_client_fingerprint": fingerprint},
            "d": {"odette_id": D_ID, "password": "DPW"},
        },
        **extra,
    )
    gw: Gateway = await start_gateway(cfg)
    return gw


def _tls(pki: PKIBundle, identity: Identity | None) -> ssl.SSLContext:
    if identity is None:
        return client_ssl_context(pki.ca.cert_path)
    return client_ssl_context(pki.ca.cert_path, certfile=identity.cert_path, keyfile=identity.key_path)


def _client(gw: Gateway, code: str, password: str, tls: ssl.SSLContext | None) -> OFTPClient:
    port = gw.port("tls" if tls is not None else "tcp")
    return OFTPClient(
        SessionConfig(code, password),
        "127.0.0.1",
        port,
        ssl=tls,
        server_hostname="localhost" if tls else None,
    )


def _payload(tmp_path: Path, data: bytes = b"pinned delivery\n" * 1000) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path


def _rejections(gw: Gateway) -> list[Any]:
    events: list[Any] = []
    gw.bus.subscribe(lambda e: events.append(e) if e.name == "session.rejected" else None)
    return events


async def _nothing_stored(gw: Gateway, tmp_path: Path, partner: str) -> None:
    assert await gw.ledger.list_transfers(direction=Direction.INBOUND) == []
    inbox = tmp_path / "a" / "inbox" / partner
    assert not inbox.exists() or not any(inbox.rglob("*"))


@pytest.mark.parametrize(("name", "code", "password"), [("b", B_ID, "BPW"), ("c", C_ID, "CPW")])
async def test_pinned_partner_with_its_certificate_delivers(
    tmp_path: Path,
    start_gateway: Callable[..., Any],
    test_pki: PKIBundle,
    name: str,
    code: str,
    password: str,
) -> None:
    gw = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    src = _payload(tmp_path)
    async with _client(gw, code, password, _tls(test_pki, test_pki.client)) as client:
        assert client.ctx.peer_certificate == test_pki.server.cert.public_bytes(Encoding.DER)
        result = await client.send_file(
            OutboundFile(dsn="PINNED.OK", originator=code, destination=A_ID, path=src)
        )
    assert result.ok
    [row] = await gw.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED and row.partner == code
    [stored] = [p for p in (tmp_path / "a" / "inbox" / name).iterdir() if p.is_file()]
    assert stored.read_bytes() == src.read_bytes()


async def test_gateway_to_gateway_call_with_the_pinned_certificate(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    """The calling gateway presents ``identity.tls`` as its client certificate."""
    a = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    b: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "b",
            B_ID,
            identity={
                "odette_id": B_ID,
                "password": "BPW",
                "ca_certs": [str(test_pki.ca.cert_path)],
                "tls": {"cert": str(test_pki.client.cert_path), "key": str(test_pki.client.key_path)},
            },
            partners={
                "a": {
                    "odette_id": A_ID,
                    "password": "OWNPW",
                    "address": {"host": "localhost", "port": a.port("tls"), "tls": True},
                }
            },
        )
    )
    await b.submit_file("a", dsn="G2G.PINNED", content=b"from gateway b")
    result = await b.call_partner("a")
    assert result.ok and result.files_sent == 1, result
    [row] = await a.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED


async def test_pinned_partner_with_another_valid_certificate_is_refused(
    tmp_path: Path,
    start_gateway: Callable[..., Any],
    test_pki: PKIBundle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    rejected = _rejections(gw)
    caplog.set_level(logging.WARNING, logger="oftp2.gateway")
    client = _client(gw, B_ID, "BPW", _tls(test_pki, test_pki.partner))  # same CA, right password
    with pytest.raises(SessionRejected) as info:
        await client.connect()
    assert info.value.reason == EsidReason.UNSPECIFIED == 99
    assert "not registered for this Odette ID" in info.value.text
    # the log names the partner and both fingerprints; the event carries the presented one
    [line] = [r.getMessage() for r in caplog.records if "is pinned to" in r.getMessage()]
    assert "partner b (O0013000000GWB)" in line
    assert _sha256(test_pki.client) in line and _sha256(test_pki.partner) in line
    assert "BPW" not in caplog.text
    [event] = rejected
    assert event.partner == "b" and event.data["reason"] == 99 and event.data["tls"] is True
    assert event.data["tls_client_sha256"] == _sha256(test_pki.partner)
    await _nothing_stored(gw, tmp_path, "b")

    # the certificate pinned for one partner does not open another pinned partner either
    with pytest.raises(SessionRejected) as info:
        await _client(gw, C_ID, "CPW", _tls(test_pki, test_pki.partner)).connect()
    assert info.value.reason == 99


async def test_a_wrong_certificate_is_refused_before_the_password_is_checked(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    """Without the pinned certificate the answer is the same for right and wrong passwords: no oracle."""
    gw = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    for password in ("BPW", "WRONG"):
        for tls in (_tls(test_pki, test_pki.partner), _tls(test_pki, None), None):
            with pytest.raises(SessionRejected) as info:
                await _client(gw, B_ID, password, tls).connect()
            assert info.value.reason == 99, (password, tls)
    # with the pinned certificate, a wrong password is still ESID 04
    with pytest.raises(SessionRejected) as info:
        await _client(gw, B_ID, "WRONG", _tls(test_pki, test_pki.client)).connect()
    assert info.value.reason == EsidReason.INVALID_PASSWORD


async def test_pinned_partner_without_a_client_certificate_is_refused(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    rejected = _rejections(gw)
    caplog.set_level(logging.WARNING, logger="oftp2.gateway")
    with pytest.raises(SessionRejected) as info:
        await _client(gw, B_ID, "BPW", _tls(test_pki, None)).connect()
    assert info.value.reason == 99 and "TLS client certificate required" in info.value.text
    assert any("presented no TLS client certificate" in r.getMessage() for r in caplog.records)
    assert [(e.data["tls"], e.data["tls_client_sha256"]) for e in rejected] == [(True, None)]
    await _nothing_stored(gw, tmp_path, "b")


async def test_pinned_partner_over_plain_tcp_is_refused(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    rejected = _rejections(gw)
    caplog.set_level(logging.WARNING, logger="oftp2.gateway")
    for code, password in ((B_ID, "BPW"), (C_ID, "CPW")):
        with pytest.raises(SessionRejected) as info:
            await _client(gw, code, password, None).connect()
        assert info.value.reason == 99 and "TLS" in info.value.text
    lines = [r.getMessage() for r in caplog.records if "connected over plain TCP" in r.getMessage()]
    assert len(lines) == 2 and "partner b" in lines[0] and "partner c" in lines[1]
    assert [(e.partner, e.data["tls"]) for e in rejected] == [("b", False), ("c", False)]
    await _nothing_stored(gw, tmp_path, "b")
    await _nothing_stored(gw, tmp_path, "c")


@pytest.mark.parametrize("how", ["tcp", "tls without certificate", "tls with client", "tls with partner"])
async def test_unpinned_partner_is_unchanged(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle, how: str
) -> None:
    gw = await _pinned_gateway(tmp_path, start_gateway, test_pki)
    tls = {
        "tcp": None,
        "tls without certificate": _tls(test_pki, None),
        "tls with client": _tls(test_pki, test_pki.client),  # b's pinned certificate: irrelevant to d
        "tls with partner": _tls(test_pki, test_pki.partner),
    }[how]
    src = _payload(tmp_path)
    async with _client(gw, D_ID, "DPW", tls) as client:
        result = await client.send_file(OutboundFile(dsn="FREE", originator=D_ID, destination=A_ID, path=src))
    assert result.ok
    [row] = await gw.ledger.list_transfers(direction=Direction.INBOUND)
    assert row.status is TransferStatus.RECEIVED
    with pytest.raises(SessionRejected) as info:  # and its password is checked as before
        await _client(gw, D_ID, "WRONG", tls).connect()
    assert info.value.reason == EsidReason.INVALID_PASSWORD


async def test_accept_hook_sees_the_client_certificate(
    tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle
) -> None:
    gw = await _pinned_gateway(
        tmp_path,
        start_gateway,
        test_pki,
        accept_hook="python:tests.integration.gateway.test_tls_pinning.recording_hook",
    )
    HOOK_SAW.clear()
    async with _client(gw, B_ID, "BPW", _tls(test_pki, test_pki.client)):
        pass
    with pytest.raises(SessionRejected):
        await _client(gw, B_ID, "BPW", None).connect()
    accepted, refused = HOOK_SAW
    assert accepted.accept and accepted.tls
    assert accepted.peer_certificate == test_pki.client.cert.public_bytes(Encoding.DER)
    assert accepted.peer_certificate_sha256 == _sha256(test_pki.client)
    assert not refused.accept and refused.error_code == 99 and refused.peer_certificate is None
