"""Benchmarks of the relay: HTTP requests/s through the listener, tunnel vs direct TCP throughput, and
an OFTP2 session (OFTPClient/OFTPServer) through the tunnel vs direct (three processes: partner,
relay emulator, gateway; target ratio ≥ 0.5, a warning below).

Run with ``make bench`` (or ``pytest -s tests/benchmarks/test_bench_relay.py``).  Each figure is
reported as a ratio against a baseline measured in the same run on the same machine (a plain HTTP
server / a direct TCP connection on loopback); no absolute timing is asserted, only correctness.
Sizes: ``OFTP2_BENCH_RELAY_REQUESTS`` (default 2000), ``OFTP2_BENCH_RELAY_MB`` (default 256),
``OFTP2_BENCH_RELAY_OFTP_MIB`` (default 128) and ``OFTP2_BENCH_ROUNDS`` (interleaved rounds, default 3).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.relay import (
    HybridConnectionClient,
    HybridConnectionListener,
    RelayedHttpRequest,
    RelayEmulator,
    relay_forward_listener,
    relay_forward_sender,
)
from oftp2_provider.relay._http import read_body, read_request_head, serialize_head

REQUESTS = int(os.environ.get("OFTP2_BENCH_RELAY_REQUESTS", "2000"))
SIZE_MB = int(os.environ.get("OFTP2_BENCH_RELAY_MB", "256"))
CONCURRENCY = 16
CHUNK = 1024 * 1024


async def _plain_http_server() -> asyncio.Server:
    """The baseline: answers every request directly, same HTTP code path, no relay."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request_head(reader)
        body = await read_body(reader, head.headers, 1 << 20)
        writer.write(
            serialize_head("HTTP/1.1 200 OK", [("Content-Length", str(len(body))), ("Connection", "close")])
        )
        writer.write(body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _drive(client: HybridConnectionClient) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = f"request {i}".encode()
            response = await client.request("POST", "bench", body=body)
            assert response.status == 200 and response.body == body

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return REQUESTS / (time.perf_counter() - start)


async def test_http_requests_per_second_through_the_listener() -> None:
    async with (
        RelayEmulator() as emu,
        HybridConnectionListener(emu.address("hc1"), emu.token_provider()) as lst,
    ):

        async def answer() -> None:
            async for event in lst:
                assert isinstance(event, RelayedHttpRequest)
                await event.respond(200, {}, event.body)

        responder = asyncio.create_task(answer())
        relayed = await _drive(HybridConnectionClient(emu.address("hc1"), emu.token_provider()))
        responder.cancel()

    server = await _plain_http_server()
    port = server.sockets[0].getsockname()[1]
    from oftp2_provider.relay import HybridConnectionAddress

    direct_address = HybridConnectionAddress("bench.local", "hc1", endpoint=f"ws://127.0.0.1:{port}")
    direct = await _drive(HybridConnectionClient(direct_address))
    server.close()
    print(
        f"\nrelay HTTP: {relayed:.0f} req/s through emulator+listener, {direct:.0f} req/s direct "
        f"({CONCURRENCY} concurrent, {REQUESTS} requests); ratio relay/direct = {relayed / direct:.2f}"
    )
    assert relayed > 0 and direct > 0


async def _sink() -> tuple[asyncio.Server, asyncio.Future[str]]:
    digest: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = hashlib.sha256()
        while data := await reader.read(CHUNK):
            h.update(data)
        writer.write(h.hexdigest().encode())
        await writer.drain()
        writer.close()
        if not digest.done():
            digest.set_result(h.hexdigest())

    return await asyncio.start_server(handle, "127.0.0.1", 0), digest


async def _push(port: int) -> float:
    block = os.urandom(CHUNK)
    expected = hashlib.sha256()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(SIZE_MB):
        writer.write(block)
        expected.update(block)
        await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    elapsed = time.perf_counter() - start
    writer.close()
    assert answer.decode() == expected.hexdigest()
    return SIZE_MB / elapsed


async def test_tunnel_vs_direct_tcp_throughput() -> None:
    server, _ = await _sink()
    direct = await _push(server.sockets[0].getsockname()[1])
    server.close()

    server, _ = await _sink()
    port = server.sockets[0].getsockname()[1]
    async with RelayEmulator(hybrid_connections=["tunnel"]) as emu:
        address, tokens = emu.address("tunnel"), emu.token_provider()
        async with (
            relay_forward_listener(address, tokens, {"sink": ("127.0.0.1", port)}),
            relay_forward_sender(address, tokens, "sink") as local_port,
        ):
            tunnelled = await _push(local_port)
    server.close()
    print(
        f"\nrelay tunnel: {tunnelled:.0f} MiB/s through sender→emulator→listener, {direct:.0f} MiB/s direct TCP "
        f"({SIZE_MB} MiB, one process, 2 extra WebSocket hops); ratio tunnel/direct = {tunnelled / direct:.3f}"
    )
    assert tunnelled > 0


# ---------------------------------------------------------------------------------------------------
# OFTP2 through the relay tunnel vs direct, as deployed: three processes (partner, relay, gateway).

OFTP_MIB = int(os.environ.get("OFTP2_BENCH_RELAY_OFTP_MIB", "128"))
OFTP_ROUNDS = int(os.environ.get("OFTP2_BENCH_ROUNDS", "3"))

OFTP_WORKER = textwrap.dedent(
    r"""
    import asyncio, json, ssl, sys, time
    from pathlib import Path

    def server_ctx(a):
        if not a["cert"]:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a["cert"], a["key"])
        return ctx

    def client_ctx(a):
        return ssl.create_default_context(cafile=a["ca"]) if a["ca"] else None

    def relay(a):
        from oftp2_provider.relay import HybridConnectionAddress, SasTokenProvider
        address = HybridConnectionAddress("bench.local", "oftp", endpoint=f"ws://127.0.0.1:{a['relay_port']}")
        return address, SasTokenProvider("bench", a["relay_key"])

    async def emulator(a):
        from oftp2_provider.relay import RelayEmulator
        emu = RelayEmulator(namespace="bench.local", keys={"bench": a["relay_key"]}, hybrid_connections=["oftp"])
        await emu.start()
        print(emu.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin
        await emu.stop()
        return {}

    async def gateway(a):
        from oftp2_provider.protocol.api import SessionConfig, SessionHandlerBase
        from oftp2_provider.protocol.transport import OFTPServer
        from oftp2_provider.relay import relay_forward_listener
        handlers = []
        def factory(ctx):
            h = SessionHandlerBase(a["inbox"])
            handlers.append(h)
            return h
        srv = OFTPServer(SessionConfig("O0013SERVER", "SPW"), factory)
        await srv.start("127.0.0.1", 0, ssl=server_ctx(a))
        if a["relay_port"]:
            address, tokens = relay(a)
            async with relay_forward_listener(address, tokens, {"oftp": ("127.0.0.1", srv.port)}):
                print(srv.port, flush=True)  # the forwarder is online once entered
                await srv.wait_sessions(1, timeout=600)
        else:
            print(srv.port, flush=True)
            await srv.wait_sessions(1, timeout=600)
        await srv.close()
        return {"size": handlers[0].received[0].size if handlers and handlers[0].received else -1}

    async def partner(a):
        from oftp2_provider.protocol.api import OutboundFile, SessionConfig
        from oftp2_provider.protocol.transport import OFTPClient
        from oftp2_provider.relay import relay_forward_sender
        async def send(port):
            t = time.perf_counter()
            async with OFTPClient(
                SessionConfig("O0013CLIENT", "CPW"), "127.0.0.1", port,
                ssl=client_ctx(a), server_hostname="localhost" if a["ca"] else None,
            ) as c:
                r = await c.send_file(OutboundFile("BENCH", "O0013CLIENT", "O0013SERVER", path=Path(a["file"])))
            return {"seconds": time.perf_counter() - t, "ok": r.ok}
        if not a["relay_port"]:
            return await send(a["port"])
        address, tokens = relay(a)
        async with relay_forward_sender(address, tokens, "oftp") as local_port:
            return await send(local_port)

    a = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(globals()[a["role"]](a))), flush=True)
    """
)


def _run_oftp(common: dict[str, Any], inbox: Path, relay_port: int) -> float:
    args = {**common, "relay_port": relay_port}
    gateway = subprocess.Popen(
        [sys.executable, "-c", OFTP_WORKER, json.dumps({**args, "role": "gateway", "inbox": str(inbox)})],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert gateway.stdout is not None
        port = int(gateway.stdout.readline())
        partner = subprocess.run(
            [sys.executable, "-c", OFTP_WORKER, json.dumps({**args, "role": "partner", "port": port})],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        result = json.loads(partner.stdout.strip().splitlines()[-1])
        gateway_result = json.loads(gateway.communicate(timeout=60)[0].strip().splitlines()[-1])
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
    assert result["ok"] and gateway_result["size"] == OFTP_MIB * CHUNK
    shutil.rmtree(inbox)  # the next round receives the same DSN afresh
    inbox.mkdir()
    return OFTP_MIB / float(result["seconds"])


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_oftp2_through_the_relay_tunnel_vs_direct(tmp_path: Path, test_pki: PKIBundle, tls: bool) -> None:
    """OFTPClient → relay_forward_sender → emulator → relay_forward_listener → OFTPServer, each side in
    its own process (partner host, Azure, gateway host), against OFTPClient → OFTPServer direct."""
    src = tmp_path / "bench.bin"
    with src.open("wb") as handle:
        for _ in range(OFTP_MIB):
            handle.write(os.urandom(CHUNK))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    relay_key = base64.b64encode(os.urandom(32)).decode()
    common = {
        "file": str(src),
        "relay_key": relay_key,
        "cert": str(test_pki.server.cert_path) if tls else "",
        "key": str(test_pki.server.key_path) if tls else "",
        "ca": str(test_pki.ca.cert_path) if tls else "",
    }
    emulator = subprocess.Popen(
        [sys.executable, "-c", OFTP_WORKER, json.dumps({**common, "role": "emulator", "relay_port": 0})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    direct: list[float] = []
    tunnel: list[float] = []
    try:
        assert emulator.stdout is not None
        relay_port = int(emulator.stdout.readline())
        for _ in range(OFTP_ROUNDS):  # interleaved, best of each: robust against a busy machine
            direct.append(_run_oftp(common, inbox, 0))
            tunnel.append(_run_oftp(common, inbox, relay_port))
    finally:
        assert emulator.stdin is not None
        emulator.stdin.close()
        try:
            emulator.wait(15)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()
    ratio = max(tunnel) / max(direct)
    mode = "TLS" if tls else "TCP"
    print(
        f"\nOFTP2 over {mode}, {OFTP_MIB} MiB, SDEB 99999 / credit 999, best of {OFTP_ROUNDS}:\n"
        f"| path | MiB/s (best) | all rounds |\n|---|---|---|\n"
        f"| direct | {max(direct):.0f} | {', '.join(f'{v:.0f}' for v in direct)} |\n"
        f"| relay tunnel | {max(tunnel):.0f} | {', '.join(f'{v:.0f}' for v in tunnel)} |\n"
        f"ratio tunnel/direct = {ratio:.2f} (target ≥ 0.5)"
    )
    if ratio < 0.5:
        warnings.warn(f"OFTP2 relay tunnel ratio {ratio:.2f} below the 0.5 target", stacklevel=1)
