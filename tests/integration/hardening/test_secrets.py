"""Secrets never reach logs, exception texts or return values.

Representative flows run with every logger at DEBUG: an engine session with passwords (right and
wrong), secure authentication with private keys, the gateway with control-API users and partner
passwords, the Azure Relay listener/sender with SAS keys (valid and forged tokens) and an Airflow hook
run.  Afterwards no log record (message, arguments, extra fields, formatted traceback), no exception
text and no returned object may contain a password, a private-key PEM (or any line of its body), a
SAS key or a SAS signature.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from oftp2_provider.connection import OFTP2ConnectionConfig
from oftp2_provider.gateway.accept import AcceptConnection
from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.gateway.passwords import hash_password
from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol import codec
from oftp2_provider.protocol.api import (
    CmsAuthenticator,
    ConnectionRequest,
    Negotiated,
    OutboundFile,
    PartnerConfig,
    SessionConfig,
    SessionHandlerBase,
)
from oftp2_provider.protocol.commands import SSID, ProtocolLevel, SendReceive
from oftp2_provider.protocol.errors import SessionRejected
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer
from oftp2_provider.relay import (
    HybridConnectionClient,
    HybridConnectionListener,
    RelayedHttpRequest,
    RelayEmulator,
    RelayError,
    SasTokenProvider,
)
from oftp2_provider.relay.sas import RelayConnectionString, SasToken
from oftp2_provider.relay_connection import AzureRelayConnectionConfig
from tests.integration.gateway.conftest import A_ID, B_ID, gateway_config
from tests.integration.protocol.conftest import CLIENT, SERVER, client_config, server_config

SERVER_PW = "SRVQ7ZK2"
CLIENT_PW = "CLNX4WP9"
WRONG_PW = "WRGM3HV8"
API_PW = "api-Zq8vT3-secret"
SIG = re.compile(r"sig=[A-Za-z0-9%+/=]{8,}")
RELAY_KEY = "rK3y+Q9mZx7sW2pL5vN8bT4cY6hJ1fD0gA3eS9uI2oP="


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr({k: v for k, v in record.__dict__.items() if k != "exc_info"})]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(parts)


def pem_fragments(pki: PKIBundle) -> list[str]:
    """Every body line of every private key PEM of the test PKI, plus the PEM armour."""
    out = ["PRIVATE KEY-----"]
    for ident in (pki.server, pki.client, pki.partner):
        out += [
            line for line in ident.key_path.read_text().splitlines() if line and not line.startswith("-----")
        ]
    return out


def assert_clean(
    secrets: Iterable[str], *, records: list[logging.LogRecord], objects: Iterable[object] = ()
) -> None:
    """No secret in any record, exception or object repr/str."""
    haystacks = [("log", _record_text(r)) for r in records]
    for obj in objects:
        if isinstance(obj, BaseException):
            haystacks.append(("exception", "".join(traceback.format_exception(obj))))
        haystacks.append(("object", f"{obj!s}\n{obj!r}"))
    for secret in secrets:
        assert secret
        for kind, text in haystacks:
            assert secret not in text, f"secret {secret[:4]}… found in {kind}: {text[:500]}"


@pytest.fixture
def all_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in (
        "oftp2_provider",
        "oftp2_provider.protocol",
        "oftp2_provider.gateway",
        "oftp2_provider.relay",
    ):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


async def test_engine_session_passwords_and_keys(
    all_debug: pytest.LogCaptureFixture, test_pki: PKIBundle, tmp_path: Path
) -> None:
    authenticator = CmsAuthenticator(
        test_pki.server.key, test_pki.server.cert, {CLIENT: test_pki.client.cert}
    )
    server = OFTPServer(
        server_config(password=SERVER_PW, secure_auth=True, authenticator=authenticator),
        lambda ctx: SessionHandlerBase(tmp_path / "inbox"),
        partners={CLIENT: PartnerConfig(CLIENT, CLIENT_PW, secure_auth=True)},
    )
    await server.start("127.0.0.1", 0)
    objects: list[object] = []
    try:
        src = tmp_path / "file.bin"
        src.write_bytes(b"secret-free payload" * 100)
        client_auth = CmsAuthenticator(
            test_pki.client.key, test_pki.client.cert, {SERVER: test_pki.server.cert}
        )
        config = client_config(password=CLIENT_PW, secure_auth=True, authenticator=client_auth)
        partner = PartnerConfig(SERVER, SERVER_PW)
        async with OFTPClient(config, "127.0.0.1", server.port, partner=partner) as client:
            result = await client.send_file(
                OutboundFile(dsn="SECRETS", originator=CLIENT, destination=SERVER, path=src)
            )
            objects.append(result)
        assert result.ok
        for password in (WRONG_PW, ""):
            bad = OFTPClient(client_config(password=password), "127.0.0.1", server.port)
            with pytest.raises(SessionRejected) as info:
                await bad.connect()
            assert info.value.reason == 4
            objects.append(info.value)
            await bad.close()
        # an Initiator that finds the wrong password in the Responder's answer
        wrong_answer = OFTPClient(
            client_config(password=CLIENT_PW),
            "127.0.0.1",
            server.port,
            partner=PartnerConfig(SERVER, WRONG_PW),
        )
        try:
            await wrong_answer.connect()
        except Exception as exc:
            objects.append(exc)
        await wrong_answer.close()
    finally:
        await server.close()
    objects += server.outcomes
    assert_clean(
        [SERVER_PW, CLIENT_PW, WRONG_PW, *pem_fragments(test_pki)], records=all_debug.records, objects=objects
    )


async def test_gateway_control_api_and_partner_passwords(
    all_debug: pytest.LogCaptureFixture, tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    users = [{"name": "ops", "password_hash": hash_password(API_PW)}]
    cfg = gateway_config(
        tmp_path / "a",
        A_ID,
        partners={"b": {"odette_id": B_ID, "password": CLIENT_PW}},
        password=SERVER_PW,
        control_api={"enabled": True, "host": "127.0.0.1", "port": 0, "users": users},
    )
    gw: Gateway = await start_gateway(cfg)
    assert gw.api is not None
    objects: list[object] = [cfg]
    async with httpx.AsyncClient(base_url=gw.api.url, timeout=30) as http:
        for auth in (("ops", API_PW), ("ops", WRONG_PW), ("nobody", API_PW)):
            response = await http.get("/api/v1/transfers", auth=auth)
            objects.append(response.text)
        partners = await http.get("/api/v1/partners", auth=("ops", API_PW))
        objects.append(partners.text)
    for password in (CLIENT_PW, WRONG_PW):
        client = OFTPClient(client_config(odette_id=B_ID, password=password), "127.0.0.1", gw.port())
        try:
            await client.connect()
        except SessionRejected as exc:
            objects.append(exc)
        await client.close()
    basic = [base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in (("ops", API_PW), ("ops", WRONG_PW))]
    assert_clean([API_PW, CLIENT_PW, SERVER_PW, WRONG_PW, *basic], records=all_debug.records, objects=objects)
    # nor in anything the gateway wrote to its state directory (ledger, events, spool)
    for path in state_files(tmp_path / "a"):
        for secret in (API_PW, CLIENT_PW, SERVER_PW, WRONG_PW):
            assert secret.encode() not in path.read_bytes(), f"{secret[:4]}… stored in {path}"


def state_files(root: Path) -> list[Path]:
    """Every file under ``root`` (at least the ledger must be there)."""
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"nothing under {root}"
    return files


async def test_relay_sas_keys_and_signatures(all_debug: pytest.LogCaptureFixture) -> None:
    emulator = RelayEmulator(
        keys={"RootManageSharedAccessKey": RELAY_KEY}, accept_timeout=5, request_timeout=10
    )
    await emulator.start()
    objects: list[object] = []
    signatures: list[str] = []
    try:
        provider = emulator.token_provider()
        signatures.append(provider.get_token(emulator.address("hc1").resource).signature)
        async with HybridConnectionListener(emulator.address("hc1"), provider) as listener:
            sender = HybridConnectionClient(emulator.address("hc1"), provider)
            call = asyncio.create_task(sender.request("POST", "x", body=b"hello"))
            event = await listener.next_event(timeout=10)
            assert isinstance(event, RelayedHttpRequest)
            objects.append(event)
            await event.respond(200, body=b"ok")
            objects.append(await call)
            forged = SasTokenProvider("RootManageSharedAccessKey", "d3JvbmcgcmVsYXkga2V5IGZvciB0ZXN0cw==")
            signatures.append(forged.get_token(emulator.address("hc1").resource).signature)
            try:
                refused: object = await HybridConnectionClient(emulator.address("hc1"), forged).request(
                    "GET", "x"
                )
            except RelayError as exc:
                refused = exc
            assert "401" in repr(refused) or "InvalidToken" in str(refused), refused
            objects.append(refused)
    finally:
        await emulator.stop()
    assert_clean([RELAY_KEY, *signatures], records=all_debug.records, objects=objects)
    for record in all_debug.records:  # tokens signed at another second have other signatures
        assert not SIG.search(_record_text(record)), _record_text(record)[:500]


def test_airflow_hook_run(
    all_debug: pytest.LogCaptureFixture, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    from oftp2_provider.hooks.oftp2 import OFTP2Hook, OutboundSpec
    from tests.integration.airflow.conftest import OUR_PASSWORD, PARTNER_PASSWORD

    data = b"hook payload"
    path = tmp_path / "H.dat"
    path.write_bytes(data)
    spec = OutboundSpec(path=path, dsn="HOOKSECRET", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    hook = OFTP2Hook(oftp2_conn())
    objects: list[object] = [hook.send([spec])]
    objects.append(OFTP2Hook(oftp2_conn("oftp2_wrong", password=WRONG_PW)).test_connection())
    assert_clean([OUR_PASSWORD, PARTNER_PASSWORD, WRONG_PW], records=all_debug.records, objects=objects)


def test_detector_finds_planted_secrets() -> None:
    """The checks above would notice a secret in a message argument, an extra field, a traceback or a repr."""
    planted = [
        logging.LogRecord("x", logging.DEBUG, __file__, 1, "login %s", (SERVER_PW,), None),
        logging.makeLogRecord({"msg": "login", "password": SERVER_PW}),
    ]
    try:
        raise ValueError(f"bad {SERVER_PW}")
    except ValueError as exc:
        planted.append(
            logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), (ValueError, exc, None))
        )
    for record in planted:
        with pytest.raises(AssertionError, match="found in log"):
            assert_clean([SERVER_PW], records=[record])
    with pytest.raises(AssertionError, match="found in object"):
        assert_clean([SERVER_PW], records=[], objects=[{"password": SERVER_PW}])


def _raised(build: Callable[[], object]) -> BaseException:
    try:
        build()
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


def test_reprs_and_errors_hide_secrets(test_pki: PKIBundle) -> None:
    """``repr()``/``str()`` of every object holding a password, key or SAS signature shows none of them.

    Dataclasses hide the field (``field(repr=False)``), pydantic models too (``Field(repr=False)``;
    the gateway configuration uses ``SecretStr``); an SSID password that fails validation is named
    by its length only.  Equality, ``frozen`` and ``slots`` still hold.
    """
    key_pem = test_pki.client.key_path.read_text()
    token = SasToken.create("http://ns.example/hc1", "RootManageSharedAccessKey", RELAY_KEY)
    ssid = SSID(ProtocolLevel.V2_0, CLIENT, CLIENT_PW, 4096)
    bad_ctrl = CLIENT_PW[:4].encode() + b"\x01" + CLIENT_PW[5:].encode()  # computed: a traceback
    bad_high = CLIENT_PW[:4].encode() + b"\xff" + CLIENT_PW[5:].encode()  # shows names, not values
    request = ConnectionRequest(
        "c1",
        CLIENT,
        CLIENT_PW,
        ProtocolLevel.V2_0,
        ProtocolLevel.V2_0,
        None,
        4096,
        64,
        SendReceive.BOTH,
        False,
    )
    conn = OFTP2ConnectionConfig.from_values(
        "oftp2_x",
        host="127.0.0.1",
        port=3305,
        login=CLIENT,
        password=CLIENT_PW,
        extra={
            "partner_id": SERVER,
            "partner_password": SERVER_PW,
            "tls_cert": "file:/nonexistent/cert.pem",
            "tls_key": key_pem,
            "tls_key_password": WRONG_PW,
            "gateway_api_password": API_PW,
        },
    )
    objects: list[object] = [
        ssid,
        SessionConfig(SERVER, SERVER_PW),
        PartnerConfig(CLIENT, CLIENT_PW, our_password=SERVER_PW),
        Negotiated(ProtocolLevel.V2_0, 4096, 64, False, True, False, True, True, CLIENT, CLIENT_PW),
        request,
        AcceptConnection("c1", CLIENT, CLIENT_PW, 5, 5, None, False, None, True, 0, "", request),
        conn,
        conn.extras,
        AzureRelayConnectionConfig.from_values(
            "relay_x",
            host="ns.example",
            login="RootManageSharedAccessKey",
            password=RELAY_KEY,
            extra={"hybrid_connection": "hc1"},
        ),
        token,
        SasTokenProvider("RootManageSharedAccessKey", RELAY_KEY),
        RelayConnectionString.parse(
            f"Endpoint=sb://ns.example/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={RELAY_KEY}"
        ),
        # validation errors name the field, never the value
        _raised(lambda: SSID(ProtocolLevel.V2_0, CLIENT, CLIENT_PW + "Z", 4096)),
        _raised(lambda: SSID(ProtocolLevel.V2_0, CLIENT, CLIENT_PW[:7] + "\x01", 4096)),
        _raised(lambda: codec.decode(codec.encode(ssid, 5).replace(CLIENT_PW.encode(), bad_ctrl), 5)),
        _raised(lambda: codec.decode(codec.encode(ssid, 5).replace(CLIENT_PW.encode(), bad_high), 5)),
        _raised(
            lambda: OFTP2ConnectionConfig.from_values(
                "oftp2_y",
                host="h",
                port=1,
                login=CLIENT,
                password=CLIENT_PW + "Z",
                extra={"partner_id": SERVER},
            )
        ),
    ]
    secrets = [CLIENT_PW, SERVER_PW, WRONG_PW, API_PW, RELAY_KEY, token.signature, *pem_fragments(test_pki)]
    secrets += [CLIENT_PW + "Z", "CLNX"]
    assert_clean(secrets, records=[], objects=objects)
    # the hidden fields still compare, and the dataclasses stay frozen and slotted
    assert ssid != SSID(ProtocolLevel.V2_0, CLIENT, WRONG_PW, 4096)
    assert not hasattr(ssid, "__dict__") and not hasattr(request, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ssid.password = WRONG_PW  # type: ignore[misc]
    assert codec.decode(codec.encode(ssid, 5), 5) == ssid
    assert conn.password == CLIENT_PW and conn.extras.gateway_api_password == API_PW
