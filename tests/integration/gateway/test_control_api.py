"""The control API over real HTTP(S) with httpx: auth, read-only users, submit, list, release, call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.gateway.passwords import hash_password
from oftp2_provider.pki import PKIBundle

from .conftest import A_ID, B_ID, gateway_config

USERS = [
    {"name": "ops", "password_hash": hash_password("ops-secret")},
    {
        "name": "viewer",
        "password_hash": hash_password("view-secret", scheme="pbkdf2_sha256"),
        "read_only": True,
    },
]


async def _api_gateway(
    tmp_path: Path, start_gateway: Callable[..., Any], tls: dict[str, str] | None = None
) -> Gateway:
    api: dict[str, Any] = {"enabled": True, "host": "127.0.0.1", "port": 0, "users": USERS}
    if tls:
        api["tls"] = tls
    cfg = gateway_config(
        tmp_path / "a",
        A_ID,
        partners={"b": {"odette_id": B_ID, "password": "BPW", "receipt_policy": "hold"}},
        control_api=api,
    )
    gw: Gateway = await start_gateway(cfg)
    return gw


async def test_auth_read_only_and_the_main_routes(tmp_path: Path, start_gateway: Callable[..., Any]) -> None:
    gw = await _api_gateway(tmp_path, start_gateway)
    assert gw.api is not None
    async with httpx.AsyncClient(base_url=gw.api.url, timeout=30) as http:
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["odette_id"] == A_ID

        anonymous = await http.get("/api/v1/transfers")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/api/v1/transfers", auth=("ops", "wrong"))).status_code == 401
        assert (await http.get("/api/v1/transfers", auth=("nobody", "x"))).status_code == 401

        viewer = ("viewer", "view-secret")
        ops = ("ops", "ops-secret")
        assert (await http.get("/api/v1/transfers", auth=viewer)).json() == {"transfers": []}
        denied = await http.post(
            "/api/v1/transfers", params={"partner": "b", "dsn": "X"}, content=b"1", auth=viewer
        )
        assert denied.status_code == 403 and "read-only" in denied.json()["error"]

        created = await http.post(
            "/api/v1/transfers",
            params={"partner": "b", "dsn": "API.UPLOAD"},
            content=b"hello partner",
            headers={"content-type": "application/octet-stream"},
            auth=ops,
        )
        assert created.status_code == 201, created.text
        transfer = created.json()["transfer"]
        assert transfer["status"] == "queued" and transfer["size"] == 13
        assert transfer["partner"] == B_ID and transfer["key"]["dsn"] == "API.UPLOAD"
        assert _read(transfer["local_path"]) == b"hello partner"

        local = tmp_path / "local.txt"
        local.write_bytes(b"on the host")
        by_path = await http.post(
            "/api/v1/transfers", json={"partner": B_ID, "dsn": "BY.PATH", "path": str(local)}, auth=ops
        )
        assert by_path.status_code == 201, by_path.text

        bad = await http.post(
            "/api/v1/transfers", json={"partner": "nobody", "dsn": "X", "path": str(local)}, auth=ops
        )
        assert bad.status_code == 404
        bad = await http.post(
            "/api/v1/transfers", json={"partner": "b", "dsn": "HAS SPACE", "path": str(local)}, auth=ops
        )
        assert bad.status_code == 400 and "dsn" in bad.json()["error"]

        listed = (await http.get("/api/v1/transfers", params={"partner": "b"}, auth=viewer)).json()[
            "transfers"
        ]
        assert [t["key"]["dsn"] for t in listed] == ["BY.PATH", "API.UPLOAD"]
        shown = (await http.get(f"/api/v1/transfers/{transfer['id']}", auth=viewer)).json()
        assert shown["transfer"]["id"] == transfer["id"]
        assert [e["kind"] for e in shown["events"]] == ["enqueued"]
        assert (await http.get("/api/v1/transfers/999999", auth=viewer)).status_code == 404

        # releasing an outbound transfer is a conflict, a missing code a bad request
        assert (await http.post(f"/api/v1/transfers/{transfer['id']}/release", auth=ops)).status_code == 409
        no_code = await http.post(f"/api/v1/transfers/{transfer['id']}/refuse", json={}, auth=ops)
        assert no_code.status_code == 400

        # calling a partner without an address is a conflict, not a crash
        assert (await http.post("/api/v1/partners/b/call", auth=ops)).status_code == 409
        events = (await http.get("/api/v1/events", auth=viewer)).json()["events"]
        assert events and events[0]["name"] == "gateway.started"


async def test_release_a_held_receipt_through_the_api(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    gw = await _api_gateway(tmp_path, start_gateway)
    b_cfg = gateway_config(
        tmp_path / "b",
        B_ID,
        password="BPW",
        partners={"a": {"odette_id": A_ID, "password": "OWNPW", "address": f"127.0.0.1:{gw.port()}"}},
    )
    b: Gateway = await start_gateway(b_cfg)
    sent = await b.submit_file("a", dsn="HOLD.ME", content=b"payload")
    assert (await b.call_partner("a")).ok
    assert gw.api is not None
    async with httpx.AsyncClient(base_url=gw.api.url, timeout=30, auth=("ops", "ops-secret")) as http:
        inbound = (await http.get("/api/v1/transfers", params={"direction": "in"})).json()["transfers"]
        assert len(inbound) == 1 and inbound[0]["receipt_state"] == "held"
        released = await http.post(f"/api/v1/transfers/{inbound[0]['id']}/release")
        assert released.status_code == 200 and released.json()["transfer"]["status"] == "released"
        again = await http.post(f"/api/v1/transfers/{inbound[0]['id']}/release")
        assert again.status_code == 409
    assert (await b.call_partner("a")).receipts_received == 1
    assert (await b.ledger.get(sent.id)).status.value == "delivered"


async def test_https(tmp_path: Path, start_gateway: Callable[..., Any], test_pki: PKIBundle) -> None:
    gw = await _api_gateway(
        tmp_path,
        start_gateway,
        tls={"cert": str(test_pki.server.cert_path), "key": str(test_pki.server.key_path)},
    )
    assert gw.api is not None and gw.api.url.startswith("https://")
    async with httpx.AsyncClient(base_url=gw.api.url, verify=str(test_pki.ca.cert_path), timeout=30) as http:
        ok = await http.get("/api/v1/transfers", auth=("ops", "ops-secret"))
        assert ok.status_code == 200
    async with httpx.AsyncClient(base_url=gw.api.url.replace("https", "http"), timeout=30) as plain:
        try:
            response = await plain.get("/health")
        except httpx.HTTPError:
            pass  # the TLS server drops a plain-HTTP client: fine
        else:
            assert response.status_code >= 400


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


async def test_repeated_wrong_credentials_lock_the_address_out(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    """Brute force: after max_auth_failures wrong passwords the address gets 429, even with the right one."""
    api: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 0,
        "users": USERS,
        "max_auth_failures": 3,
        "auth_lockout_seconds": 2,
    }
    cfg = gateway_config(tmp_path / "a", A_ID, partners={}, control_api=api)
    gw: Gateway = await start_gateway(cfg)
    assert gw.api is not None
    async with httpx.AsyncClient(base_url=gw.api.url, timeout=30) as http:
        ops = ("ops", "ops-secret")
        # requests without credentials do not count; wrong ones do, and a success resets the count
        for _ in range(5):
            assert (await http.get("/api/v1/transfers")).status_code == 401
        for _ in range(2):
            assert (await http.get("/api/v1/transfers", auth=("ops", "guess"))).status_code == 401
        assert (await http.get("/api/v1/transfers", auth=ops)).status_code == 200
        for _ in range(2):
            assert (await http.get("/api/v1/transfers", auth=("ops", "guess"))).status_code == 401
        third = await http.get("/api/v1/transfers", auth=("ops", "guess"))
        assert third.status_code == 401
        locked = await http.get("/api/v1/transfers", auth=ops)
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["retry-after"]) <= 2
        assert (await http.get("/health")).status_code == 200  # health stays open
        await asyncio.sleep(2.1)
        assert (await http.get("/api/v1/transfers", auth=ops)).status_code == 200
