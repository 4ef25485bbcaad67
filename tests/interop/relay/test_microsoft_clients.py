"""Acceptance tests of the emulator (and of our listener/sender) with Microsoft's Node packages.

* ``hyco-https`` 1.4.5 as *listener* ← our Python sender (control-channel and rendezvous paths);
* Node's ``http`` client with a ``hyco-https`` token as *sender* → our Python listener;
* ``hyco-ws`` 1.0.5 as *listener* ← our Python WebSocket sender;
* ``hyco-ws`` ``relayedConnect`` as *sender* → our Python listener.

The Node libraries are pointed at the emulator by building the URIs by hand (``ws://127.0.0.1:PORT/$hc/…``)
and signing tokens for ``http://127.0.0.1:PORT/{hc}``, which the emulator accepts as audience because
it is the host the request was sent to.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.relay import (
    HybridConnectionClient,
    HybridConnectionListener,
    RelayConnectionClosed,
    RelayConnectionError,
    RelayedConnectionRequest,
    RelayedHttpRequest,
    RelayEmulator,
)

from .conftest import NodeRunner


def _key_args(emu: RelayEmulator) -> list[str]:
    name = next(iter(emu.keys))
    return [emu.url, "hc1", name, emu.keys[name]]


async def test_hyco_https_listener_small_and_large(
    emulator: RelayEmulator, hyco_https_dir: Path, run_node: NodeRunner
) -> None:
    async with run_node(hyco_https_dir, "listener.js", *_key_args(emulator)):
        client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
        small = await client.request(
            "POST", "api/orders", query={"x": "1"}, headers={"X-Trace": "t1"}, body=b"hi"
        )
        assert small.status == 200, small.text
        assert small.headers["x-node"] == "hyco-https"
        answer = json.loads(small.body)
        assert answer == {
            "method": "POST",
            "url": "/hc1/api/orders?x=1",
            "length": 2,
            "sha256": hashlib.sha256(b"hi").hexdigest(),
            "trace": "t1",
        }
        assert emulator.stats["rendezvous"] == 0

        upload = os.urandom(200_000)
        big = await client.request("PUT", "upload", body=upload)
        assert json.loads(big.body)["sha256"] == hashlib.sha256(upload).hexdigest()
        assert emulator.stats["rendezvous"] == 1

        download = await client.request("GET", "download", headers={"X-Response-Size": "300000"})
        assert download.status == 200
        assert download.body == bytes(i % 251 for i in range(300_000))
        assert emulator.stats["rendezvous"] == 2

        status = await client.request("GET", headers={"X-Status": "404"})
        assert status.status == 404


async def test_node_http_sender_to_our_listener(
    emulator: RelayEmulator, hyco_https_dir: Path, run_node: NodeRunner
) -> None:
    async with HybridConnectionListener(emulator.address("hc1"), emulator.token_provider()) as listener:
        for size in (10, 150_000):
            args = [emulator.http_url, *_key_args(emulator)[1:], str(size)]
            async with run_node(hyco_https_dir, "sender.js", *args, ready=False) as proc:
                event = await listener.next_event(timeout=20)
                assert isinstance(event, RelayedHttpRequest)
                assert event.method == "POST" and event.target == "/hc1/from-node?lang=js"
                assert event.body == bytes([7]) * size
                assert event.headers.get("X-Trace") == "node"
                reply = os.urandom(size)
                await event.respond(200, {"Content-Type": "application/octet-stream"}, reply)
                assert proc.stdout is not None
                out = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
                assert out == {
                    "status": 200,
                    "length": size,
                    "sha256": hashlib.sha256(reply).hexdigest(),
                    "via": f"1.1 {emulator.namespace}",
                }


async def test_hyco_ws_listener_echo(
    emulator: RelayEmulator, hyco_ws_dir: Path, run_node: NodeRunner
) -> None:
    async with run_node(hyco_ws_dir, "listener.js", *_key_args(emulator)):
        client = HybridConnectionClient(emulator.address("hc1"), emulator.token_provider())
        ws = await client.connect("chat", {"room": "7"})
        await ws.send_text("hello")
        assert await ws.receive() == "echo:hello"
        blob = os.urandom(100_000)
        await ws.send_bytes(blob)
        assert await ws.receive() == b"echo:" + blob
        await ws.close()
        assert emulator.stats["accepted"] == 1


async def test_hyco_ws_sender_to_our_listener(
    emulator: RelayEmulator, hyco_ws_dir: Path, run_node: NodeRunner
) -> None:
    async with HybridConnectionListener(emulator.address("hc1"), emulator.token_provider()) as listener:
        async with run_node(hyco_ws_dir, "sender.js", *_key_args(emulator), ready=False) as proc:
            event = await listener.next_event(timeout=20)
            assert isinstance(event, RelayedConnectionRequest)
            assert event.target == "/$hc/hc1/chat?room=42"
            ws = await event.accept()
            assert await ws.receive() == "hello from node"
            await ws.send_text("hello from python")
            assert proc.stdout is not None
            out = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert out == {"reply": "hello from python"}
            # ws 1.1.5 closes with 1000 and waits for our close frame, which close() sends
            with pytest.raises(RelayConnectionClosed) as closed:
                await ws.receive()
            assert closed.value.code == 1000
            await ws.close()
            assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_hyco_https_over_tls_with_node_extra_ca_certs(
    test_pki: PKIBundle, hyco_https_dir: Path, run_node: NodeRunner
) -> None:
    """wss:// and https:// end to end: the emulator serves the test PKI's server certificate."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(test_pki.server.cert_path, test_pki.server.key_path)
    client_ctx = ssl.create_default_context(cafile=str(test_pki.ca.cert_path))
    async with RelayEmulator(ssl=server_ctx) as emu:
        assert emu.url.startswith("wss://")
        env = {"NODE_EXTRA_CA_CERTS": str(test_pki.ca.cert_path)}
        async with run_node(hyco_https_dir, "listener.js", *_key_args(emu), env=env):
            client = HybridConnectionClient(emu.address("hc1"), emu.token_provider(), ssl=client_ctx)
            upload = os.urandom(100_000)
            response = await client.request("POST", "secure", body=upload)
            assert response.status == 200, response.text
            assert json.loads(response.body)["sha256"] == hashlib.sha256(upload).hexdigest()
        # and a client that does not trust the test CA is refused by TLS, not by the relay
        untrusting = HybridConnectionClient(
            emu.address("hc1"), emu.token_provider(), ssl=ssl.create_default_context()
        )
        with pytest.raises(RelayConnectionError):
            await untrusting.request("GET")
