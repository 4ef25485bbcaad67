"""Chaos harness: a connection-cutting TCP proxy and a retrying OFTP transfer loop on loopback.

The :class:`CuttingProxy` sits between an :class:`OFTPClient` and an :class:`OFTPServer` and
forwards octets both ways; each accepted connection takes the next *budget* from a schedule and,
once that many octets (both directions together) have passed, kills both sides — with a FIN
(graceful close) or an RST (``SO_LINGER`` 0), chosen at random.  The proxy works below TLS, so a
TLS session is cut in the middle of a record just like a plain one.

:func:`run_chaos` sends files of random sizes in both directions (the Initiator sends; or the
Responder sends after the Initiator's CD), each with a random schedule of cuts, and retries like
a real gateway: a new session re-offers every file not yet confirmed, the receiver resumes from its
partial file (restart) and refuses a file it already has with SFNA 13 (duplicate), which the
sender takes as delivered.  :meth:`ChaosReport.check` then asserts that every file was delivered
exactly once with the right SHA-256, that nothing partial is visible, and that no attempt needed
a protocol timeout to notice the cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oftp2_provider.protocol.api import (
    FileDecision,
    OutboundFile,
    OutboundItem,
    PartnerConfig,
    ReceivedFile,
    SendResult,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
    SessionOutcome,
    Timeouts,
)
from oftp2_provider.protocol.commands import SFID, ProtocolLevel, RecordFormat
from oftp2_provider.protocol.errors import EsidReason, SessionRejected, SfnaReason
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer, SessionAborted

CLIENT = "O0013CHAOSCLIENT"
SERVER = "O0013CHAOSSERVER"
CLIENT_PW = "CPW"
SERVER_PW = "SPW"
#: Protocol timers.  A cut must be noticed at once (EOF/RST): a session that only ends when one
#: of these expires (ESID 09 on either side, or a client attempt running longer) is a hang.
TIMEOUTS = Timeouts(connect=8, read=8, idle=8)


class _FrameWatch:
    """Follows the stream-buffer framing (STH) of one direction to find the first buffer of a command."""

    def __init__(self, command: bytes) -> None:
        self.command = command[0]
        self.skip = 0  # octets of the current buffer still to pass over
        self.head = bytearray()  # STH + command octet collected so far
        self.head_start = 0  # where the collected header started, relative to the current chunk

    def find(self, data: bytes) -> int | None:
        """Offset in ``data`` where a buffer of the command starts (≤ 0: it began earlier), or None."""
        i, n = 0, len(data)
        while i < n:
            if self.skip:
                step = min(self.skip, n - i)
                self.skip -= step
                i += step
                continue
            if not self.head:
                self.head_start = i
            take = data[i : i + 5 - len(self.head)]
            self.head += take
            i += len(take)
            if len(self.head) < 5:
                self.head_start -= n  # the header continues in the next chunk
                return None
            length = int.from_bytes(self.head[1:4], "big")
            start, found = self.head_start, self.head[4] == self.command
            self.head.clear()
            if found:
                return start
            self.skip = max(0, length - 5)
        return None


Budget = int | str  # an octet count, or "efpa": cut just before the first EFPA (plain TCP only)


class CuttingProxy:
    """Loopback TCP proxy that kills each connection after the next budget of octets.

    A budget ``"efpa"`` cuts right before the receiver's EFPA reaches the sender: the file is
    complete and committed on one side while the sender does not know it (the case a receiver's
    duplicate check exists for).
    """

    def __init__(self, target_port: int, rng: random.Random) -> None:
        self.target_port = target_port
        self.rng = rng
        self.schedule: list[Budget] = []
        self.cuts: list[tuple[Budget, str]] = []  # (budget, "fin"|"rst") of every cut made
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_connection(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        budget = self.schedule.pop(0) if self.schedule else None
        mode = self.rng.choice(("fin", "rst"))
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            c_writer.close()
            self._tasks.discard(task)
            return
        left: list[int | None] = [budget if isinstance(budget, int) else None]
        cut = asyncio.Event()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            watch = _FrameWatch(b"4") if budget == "efpa" else None
            try:
                while not cut.is_set():
                    data = await src.read(65536)
                    if not data:
                        if dst.can_write_eof():
                            dst.write_eof()
                        return
                    if watch is not None:
                        at = watch.find(data)
                        if at is not None:
                            dst.write(data[: max(0, at)])
                            left[0] = 0
                            cut.set()
                            return
                    remaining = left[0]
                    if remaining is not None and len(data) >= remaining:
                        dst.write(data[:remaining])
                        left[0] = 0
                        cut.set()
                        return
                    if remaining is not None:
                        left[0] = remaining - len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                cut.set()

        pumps = [
            asyncio.create_task(pump(c_reader, s_writer)),
            asyncio.create_task(pump(s_reader, c_writer)),
        ]
        waiter = asyncio.create_task(cut.wait())
        try:
            done, _ = await asyncio.wait([*pumps, waiter], return_when=asyncio.FIRST_COMPLETED)
            if waiter in done or cut.is_set():
                if budget is not None and left[0] == 0:
                    self.cuts.append((budget, mode))
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                await _kill(c_writer, mode)
                await _kill(s_writer, mode)
            else:
                # one direction ended normally: let the other finish
                await asyncio.gather(*pumps, return_exceptions=True)
                waiter.cancel()
                for w in (c_writer, s_writer):
                    w.close()
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            waiter.cancel()
            for p in pumps:
                p.cancel()
            for w in (c_writer, s_writer):
                if not w.is_closing():
                    w.close()
            self._tasks.discard(task)


async def _kill(writer: asyncio.StreamWriter, mode: str) -> None:
    if writer.is_closing():
        return
    if mode == "rst":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return
    with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.drain(), 2)
    writer.close()


# ---------------------------------------------------------------------------------------------------
# both ends: a receiver that deduplicates and a sender outbox that survives sessions


@dataclass
class Book:
    """One side's durable state across sessions: what it received and what it still has to send."""

    inbox: Path
    #: received files by DSN (unique in a run; at levels 1/2 the SFID carries a shortened date/time)
    received: dict[str, list[ReceivedFile]] = field(default_factory=dict)
    outbox: dict[str, OutboundFile] = field(default_factory=dict)
    results: list[SendResult] = field(default_factory=list)

    def pending(self) -> list[OutboundItem]:
        return list(self.outbox.values())

    def sent(self, result: SendResult) -> None:
        self.results.append(result)
        delivered = result.ok or (result.refused_at == "SFNA" and result.reason == SfnaReason.DUPLICATE_FILE)
        if delivered:
            self.outbox.pop(result.sfid.dsn, None)


class ChaosHandler(SessionHandlerBase):
    """Receives into ``book.inbox`` (restart on), refuses duplicates (SFNA 13), sends ``book.outbox``."""

    def __init__(self, book: Book, own_id: str) -> None:
        super().__init__(book.inbox, own_id=own_id)
        self.book = book
        self._offered = False

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        if sfid.dsn in self.book.received:
            # the engine drops the text below level 5 (test_engine_findings.py)
            return FileDecision.refuse(SfnaReason.DUPLICATE_FILE, retry=False, text="already received")
        return await super().accept_file(sfid, ctx)

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        self.book.received.setdefault(received.sfid.dsn, []).append(received)
        await super().file_received(received, ctx)

    async def file_sent(self, result: SendResult, ctx: SessionContext) -> None:
        self.book.sent(result)
        await super().file_sent(result, ctx)

    async def outbound(self, ctx: SessionContext) -> list[OutboundItem]:
        # every unconfirmed file once per session (a second call in the same session gets nothing)
        if self._offered:
            return []
        self._offered = True
        return self.book.pending()


# ---------------------------------------------------------------------------------------------------
# the run


@dataclass
class Transfer:
    """One file, its direction, its schedule of cuts and what happened to it."""

    index: int
    direction: str  # "send": Initiator → Responder; "receive": Responder → Initiator after CD
    source: Path
    sha256: str
    item: OutboundFile
    schedule: list[Budget]
    config: dict[str, object]
    attempts: list[tuple[float, str]] = field(default_factory=list)  # (seconds, error or "")

    def describe(self) -> str:
        return (
            f"transfer {self.index} {self.direction} {self.item.dsn} {self.source.stat().st_size} octets "
            f"{self.config} cuts {self.schedule} attempts {self.attempts}"
        )


@dataclass
class ChaosReport:
    """Everything :func:`run_chaos` observed, with :meth:`check` for the invariants."""

    seed: int
    tls: bool
    transfers: list[Transfer]
    client: Book
    server: Book
    proxy_cuts: list[tuple[Budget, str]]
    seconds: float
    server_outcomes: list[SessionOutcome] = field(default_factory=list)
    #: responder sessions still running 5 s after the last transfer
    server_lingering: int = 0

    @property
    def duplicates_refused(self) -> int:
        """Re-offers answered with SFNA 13: the cut had hidden an EFPA from the sender."""
        return sum(
            1
            for book in (self.client, self.server)
            for r in book.results
            if r.refused_at == "SFNA" and r.reason == SfnaReason.DUPLICATE_FILE
        )

    @property
    def restarts(self) -> int:
        return sum(
            1
            for book in (self.client, self.server)
            for files in book.received.values()
            for r in files
            if r.restart_offset > 0
        )

    def check(self) -> None:
        where = f"seed {self.seed} ({'tls' if self.tls else 'plain'})"
        for t in self.transfers:
            receiver = self.server if t.direction == "send" else self.client
            sender = self.client if t.direction == "send" else self.server
            key = t.item.dsn
            got = receiver.received.get(key, [])
            assert len(got) == 1, f"{where}: delivered {len(got)} times: {t.describe()}"
            assert got[0].sha256 == t.sha256, f"{where}: wrong SHA-256: {t.describe()}"
            final = receiver.inbox / t.item.dsn
            digest = hashlib.sha256(final.read_bytes()).hexdigest()
            assert digest == t.sha256, f"{where}: file on disk differs: {t.describe()}"
            assert key not in sender.outbox, f"{where}: sender never learned of the delivery: {t.describe()}"
            hung = [a for a in t.attempts if a[0] >= TIMEOUTS.read or "ESID 09" in a[1] or "Timeout" in a[1]]
            assert not hung, f"{where}: an attempt hung until a protocol timer: {t.describe()}"
        timed_out = [o for o in self.server_outcomes if o.reason == EsidReason.TIME_OUT]
        assert not timed_out, f"{where}: responder sessions ended by a timer: {timed_out}"
        assert self.server_lingering == 0, f"{where}: {self.server_lingering} responder sessions hang"
        for book in (self.client, self.server):
            expected = sorted(
                t.item.dsn for t in self.transfers if (t.direction == "send") == (book is self.server)
            )
            visible = sorted(p.name for p in book.inbox.iterdir() if p.is_file())
            assert visible == expected, f"{where}: unexpected files in {book.inbox}: {visible}"
            partial = book.inbox / ".partial"
            left = sorted(p.name for p in partial.iterdir()) if partial.exists() else []
            assert left == [], f"{where}: partial files left behind in {partial}: {left}"

    def table(self) -> str:
        attempts = [a for t in self.transfers for a in t.attempts]
        octets = sum(t.source.stat().st_size for t in self.transfers)
        return (
            f"chaos seed {self.seed} {'tls' if self.tls else 'plain'}: {len(self.transfers)} transfers, "
            f"{octets} octets, {len(self.proxy_cuts)} cuts "
            f"({sum(1 for _, m in self.proxy_cuts if m == 'rst')} rst), {len(attempts)} sessions, "
            f"{self.restarts} restarts, {self.duplicates_refused} duplicates refused, slowest session {max(a[0] for a in attempts):.2f} s, "
            f"total {self.seconds:.1f} s"
        )


def _content(fmt: RecordFormat, size: int, rng: random.Random) -> tuple[bytes, int]:
    """Random file content of about ``size`` octets in format ``fmt`` and its LRECL."""
    if fmt is RecordFormat.FIXED:
        lrecl = rng.choice((80, 128, 1000))
        return rng.randbytes(size - size % lrecl), lrecl
    if fmt is RecordFormat.TEXT:
        words = [b"ODETTE", b"OFTP2", b"  ", b"4711", b"\r\n", b"WIDGET", b";", b" " * 40]
        return b"".join(rng.choices(words, k=size // 6)), 0
    if fmt is RecordFormat.VARIABLE:
        # records each prefixed with their 2-octet length, as OutboundFile expects for V
        out = bytearray()
        longest = 1
        while len(out) < size:
            record = rng.randbytes(rng.choice((0, 1, 63, 64, rng.randint(0, 3000))))
            longest = max(longest, len(record))
            out += len(record).to_bytes(2, "big") + record
        return bytes(out), longest
    return rng.randbytes(size), 0


def _random_transfer(
    index: int, rng: random.Random, directory: Path, max_size: int, tls: bool, seed: int
) -> Transfer:
    direction = rng.choice(("send", "receive"))
    fmt = RecordFormat(rng.choice("UUTFV"))
    data, lrecl = _content(fmt, rng.randint(0, max_size), rng)
    path = directory / f"src-{index}.bin"
    path.write_bytes(data)
    originator, destination = (CLIENT, SERVER) if direction == "send" else (SERVER, CLIENT)
    dsn = f"CHAOS.S{seed}.F{index}"
    item = OutboundFile(
        dsn=dsn,
        originator=originator,
        destination=destination,
        path=path,
        format=fmt,
        lrecl=lrecl,
        date="20261124",
        time=f"{index % 240000:06d}{seed % 10000:04d}",
    )
    config: dict[str, object] = {
        "sdeb": rng.choice((128, 256, 1000, 4096, rng.randint(128, 99_999), 99_999)),
        "credit": rng.choice((1, 2, 7, 99, 999)),
        "compression": rng.random() < 0.25,
        "level": rng.choice(
            (
                ProtocolLevel.V1_2,
                ProtocolLevel.V1_3,
                ProtocolLevel.V1_4,
                ProtocolLevel.V2_0,
                ProtocolLevel.V2_0,
            )
        ),
    }
    # cut points spread over the whole exchange (handshake, TLS setup, data, EFID/EFPA, ESID)
    span = len(data) + 2_000 + (6_000 if tls else 0)
    schedule: list[Budget] = [rng.randint(0, span) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
    if not tls and rng.random() < 0.2:
        schedule.insert(rng.randint(0, len(schedule)), "efpa")
    return Transfer(index, direction, path, hashlib.sha256(data).hexdigest(), item, schedule, config)


async def _attempt(
    transfer: Transfer,
    proxy: CuttingProxy,
    client_book: Book,
    ssl_ctx: ssl.SSLContext | None,
) -> str:
    cfg = SessionConfig(
        CLIENT,
        CLIENT_PW,
        timeouts=TIMEOUTS,
        **transfer.config,  # type: ignore[arg-type]
    )
    handler = ChaosHandler(client_book, CLIENT)
    client = OFTPClient(
        cfg,
        "127.0.0.1",
        proxy.port,
        partner=PartnerConfig(SERVER, SERVER_PW),
        ssl=ssl_ctx,
        server_hostname="localhost" if ssl_ctx else None,
        handler=handler,
    )
    try:
        await client.connect()
        if transfer.direction == "send":
            for item in handler.book.pending():
                assert isinstance(item, OutboundFile)
                client_book.sent(await client.send_file(item))
        else:
            await client.receive()
        outcome = await client.close()
        if outcome.ok:
            return ""
        by = "partner" if outcome.by_peer else "us"
        return f"ended by {by} with ESID {outcome.reason:02d} {outcome.text}"
    except (SessionAborted, SessionRejected, ConnectionError, OSError, asyncio.TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.abort()
        return f"{type(exc).__name__}: {exc}"


async def run_chaos(
    seed: int,
    count: int,
    workdir: Path,
    *,
    max_size: int,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    progress: Callable[[Transfer], None] | None = None,
) -> ChaosReport:
    """Run ``count`` random transfers through a :class:`CuttingProxy`; see the module docstring."""
    rng = random.Random(seed)
    started = time.monotonic()
    sources = workdir / "sources"
    sources.mkdir(parents=True)
    client_book = Book(workdir / "client-inbox")
    server_book = Book(workdir / "server-inbox")
    for book in (client_book, server_book):
        book.inbox.mkdir()

    def factory(ctx: SessionContext) -> ChaosHandler:
        return ChaosHandler(server_book, SERVER)

    server = OFTPServer(
        SessionConfig(SERVER, SERVER_PW, timeouts=TIMEOUTS),
        factory,
        partners={CLIENT: PartnerConfig(CLIENT, CLIENT_PW)},
    )
    await server.start("127.0.0.1", 0, ssl=tls[0] if tls else None)
    proxy = CuttingProxy(server.port, rng)
    await proxy.start()
    transfers: list[Transfer] = []
    try:
        for index in range(count):
            t = _random_transfer(index, rng, sources, max_size, tls is not None, seed)
            transfers.append(t)
            owner = client_book if t.direction == "send" else server_book
            owner.outbox[t.item.dsn] = t.item
            proxy.schedule = list(t.schedule)
            for _ in range(len(t.schedule) + 3):
                began = time.monotonic()
                error = await _attempt(t, proxy, client_book, tls[1] if tls else None)
                t.attempts.append((round(time.monotonic() - began, 3), error))
                if (
                    not owner.outbox
                    and t.item.dsn in (server_book if t.direction == "send" else client_book).received
                ):
                    break
            proxy.schedule = []
            if progress is not None:
                progress(t)
        # every responder session must end by itself once its connection is gone (a connection cut
        # during the TLS handshake never becomes a session, so count running sessions, not connections)
        deadline = time.monotonic() + 5
        while server.active_sessions and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.05)
        lingering = server.active_sessions
    finally:
        await proxy.close()
        await server.close()
    return ChaosReport(
        seed,
        tls is not None,
        transfers,
        client_book,
        server_book,
        list(proxy.cuts),
        time.monotonic() - started,
        list(server.outcomes),
        lingering,
    )
