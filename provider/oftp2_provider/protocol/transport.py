"""asyncio drivers for the sans-I/O :class:`~oftp2_provider.protocol.session.Session`.

* :class:`OFTPClient` — the Initiator: connect over TCP or TLS, send files and receipts, hand the
  turn over and receive what the partner has queued, end the session with the CD/ESID dance.
* :class:`OFTPServer` — the Responder: many concurrent sessions, partner checks, per-session
  :class:`~oftp2_provider.protocol.api.SessionHandler` from a factory, ``max_sessions`` (ESID 08).

The drivers own the I/O: sockets, timeouts (ESID 09) and file streaming.  Files are read and
written in chunks (never whole in memory); a received file is written to
``<dir>/.partial/<name>``, fsynced and renamed into place only after EFID passed its checks, and
the partial file is kept for a restart (with a small side file recording which virtual file it
belongs to, so a restart never resumes a different file of the same name).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import ssl as _ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ._compat import timeout as _timeout
from .api import (
    AcceptDecision,
    ConnectionRequest,
    EndFileDecision,
    FileDecision,
    Negotiated,
    OutboundFile,
    OutboundItem,
    PartnerConfig,
    ReceivedFile,
    Role,
    SendResult,
    SessionConfig,
    SessionContext,
    SessionHandler,
    SessionHandlerBase,
    SessionOutcome,
    passwords_match,
)
from .certs import harden_ssl_context
from .commands import EERP, NERP, SFID, ProtocolLevel, RecordFormat, SecurityLevel
from .errors import EfnaReason, EsidReason, LocalProtocolError, OFTPError, SessionRejected
from .files import ChunkReader, PartialFile, hash_prefix
from .session import (
    ConnectionRequested,
    CreditReceived,
    DataReceived,
    EERPReceived,
    Event,
    FileAccepted,
    FileConfirmed,
    FileEnded,
    FileOffered,
    FileRefused,
    FileRejected,
    NERPReceived,
    ReceiptAcknowledged,
    Session,
    SessionEnded,
    SessionStarted,
    TurnReceived,
    restart_unit,
    restarts_in_v_records,
)
from .state import State
from .vrecords import VRecordScan, VRecordWalker, scan_v_records

__all__ = [
    "OFTPClient",
    "OFTPServer",
    "SessionAborted",
    "client_ssl_context",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 20
_DRAIN_ABOVE = 1 << 20
_AHEAD_OCTETS = (
    2 << 20
)  # DATA encoded ahead of the credit, at most  # backpressure: wait for the socket when more than this is buffered
_STREAM_LIMIT = 1 << 20
_SHUTDOWN_LINGER = 2.0  # after a shutdown ESID: how long the peer may take to read it and close
_SHUTDOWN_DEADLINE = 10.0  # after that: sessions still running are cut without further ceremony
_SETTLE_TIMEOUT = 10.0
_ids = itertools.count(1)
_T = TypeVar("_T")


class SessionAborted(OFTPError):
    """The session ended abnormally on our side: timeout, a protocol error of the peer, or a lost
    connection.  ``reason`` is the ESID code we sent (or 99 for a lost connection)."""

    def __init__(self, reason: int, text: str = "", *, connection_lost: bool = False) -> None:
        self.reason = int(reason)
        self.text = text
        self.connection_lost = connection_lost
        try:
            name = EsidReason(self.reason).name.replace("_", " ").lower()
        except ValueError:
            name = "unknown reason"
        what = "connection lost" if connection_lost else f"ESID {self.reason:02d} ({name})"
        super().__init__(f"{what}: {text}" if text else what)


# ---------------------------------------------------------------------------------------------------
# TLS helpers


def client_ssl_context(
    cafile: str | os.PathLike[str] | None = None,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> _ssl.SSLContext:
    """A TLS ≥ 1.2 client context (system CAs unless ``cafile``; optional client certificate).

    Forward-secret cipher suites only (:func:`.certs.harden_ssl_context`).
    """
    ctx = _ssl.create_default_context(cafile=str(cafile) if cafile else None)
    harden_ssl_context(ctx)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return ctx


def server_ssl_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str],
    *,
    cafile: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
) -> _ssl.SSLContext:
    """A TLS ≥ 1.2 server context; with ``cafile`` client certificates are verified (optional or required).

    Forward-secret cipher suites only (:func:`.certs.harden_ssl_context`).
    """
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    harden_ssl_context(ctx)
    ctx.load_cert_chain(str(certfile), str(keyfile))
    if cafile:
        ctx.load_verify_locations(str(cafile))
        ctx.verify_mode = _ssl.CERT_REQUIRED if require_client_cert else _ssl.CERT_OPTIONAL
    return ctx


def _enforce_tls12(ctx: _ssl.SSLContext | None) -> None:
    if ctx is not None and ctx.minimum_version < _ssl.TLSVersion.TLSv1_2:
        ctx.minimum_version = _ssl.TLSVersion.TLSv1_2


def _peer_certificate(writer: asyncio.StreamWriter) -> bytes | None:
    """DER of the certificate the peer presented in the TLS handshake (None: plain TCP or none sent)."""
    tls = writer.get_extra_info("ssl_object")
    if not isinstance(tls, (_ssl.SSLObject, _ssl.SSLSocket)):
        return None
    der: bytes | None = tls.getpeercert(binary_form=True)
    return der


# ---------------------------------------------------------------------------------------------------
# helpers


async def _settle(aw: Awaitable[_T]) -> _T:
    """Run a step that records an outcome (rename + EFPA + ``file_received``, ``file_sent``, a
    receipt) to its end even when the session task is cancelled meanwhile (server shutdown): the
    cancellation is delivered after it, at most :data:`_SETTLE_TIMEOUT` seconds later, so that a
    delivered file or a confirmed send is never left half recorded."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), _SETTLE_TIMEOUT)
        raise


def _sfid_timestamp(date: str, time_: str, level: ProtocolLevel) -> tuple[str, str]:
    """Dates/times for the negotiated level: YYMMDD/HHMMSS below 1.4."""
    if level < ProtocolLevel.V1_4:
        return (date[-6:] if len(date) == 8 else date), time_[:6]
    return date, time_


# ---------------------------------------------------------------------------------------------------
# the shared driver


class _Driver:
    """One session on one stream pair: reading, writing, timeouts, file streaming."""

    def __init__(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: SessionConfig,
        ctx: SessionContext,
    ) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.config = config
        self.ctx = ctx
        self.outcome: SessionOutcome | None = None
        self.progress: Callable[[int], None] | None = None
        self._eof = False

    # -- low level ------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def flush(self) -> None:
        """Write what the session queued; wait for the socket only when much is buffered."""
        out = self.session.data_to_send()
        if out:
            self.write(out)
        await self.drain_if_needed()

    async def drain_if_needed(self) -> None:
        if self.writer.is_closing():
            return
        try:
            buffered = self.writer.transport.get_write_buffer_size()
        except AttributeError:  # Python 3.10's TLS transport once the connection is lost
            return
        if buffered > _DRAIN_ABOVE:
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass

    async def next_event(self, timeout: float) -> Event:
        """The next session event, reading from the network as needed (ESID 09 on timeout)."""
        await self.flush()
        while True:
            ev = self.session.next_event()
            if ev is not None:
                if isinstance(ev, SessionEnded):
                    await self._ended(ev)
                return ev
            ended = self.session.ended
            if ended is not None:
                # the session is over (reported before): keep answering with its end
                await self._ended(ended)
                return ended
            if self._eof:
                self.session.connection_lost()
                continue
            self.write(self.session.data_to_send())
            try:
                async with _timeout(timeout):  # no extra task per read, unlike wait_for()
                    data = await self.reader.read(_READ_SIZE)
            except asyncio.TimeoutError:
                log.warning("%s: no data from the partner for %.1f s", self.ctx.connection_id, timeout)
                self.write(self.session.end_session(EsidReason.TIME_OUT, f"no data for {timeout:g} s"))
                continue
            except (ConnectionError, OSError) as exc:
                log.warning("%s: connection error: %s", self.ctx.connection_id, exc)
                data = b""
            if not data:
                self._eof = True
                continue
            self.session.receive_data(data)
            if self.session.has_output:  # a CDT due for a window that has fully arrived
                self.write(self.session.data_to_send())

    async def _ended(self, ev: SessionEnded) -> None:
        self.outcome = SessionOutcome(ev.reason, ev.text, ev.by_peer)
        with contextlib.suppress(ConnectionError, OSError):
            self.write(self.session.data_to_send())
            await self.writer.drain()

    def failure(self, ev: SessionEnded) -> OFTPError:
        if ev.by_peer and not ev.connection_lost:
            return SessionRejected(ev.reason, ev.text)
        return SessionAborted(ev.reason, ev.text, connection_lost=ev.connection_lost)

    async def close_transport(self) -> None:
        with contextlib.suppress(Exception):
            self.write(self.session.data_to_send())
        if not self.writer.is_closing():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.drain(), 5)
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    async def wait_peer_close(self, timeout: float = 5.0) -> None:
        """After sending ESID: give the peer a moment to close first (WF_NDISC)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.drain(), timeout)
        if self._eof:
            return
        with contextlib.suppress(Exception):
            async with _timeout(timeout):
                while await self.reader.read(_READ_SIZE):
                    pass

    # -- speaker: files ---------------------------------------------------------------------------
    async def send_file(self, item: OutboundFile) -> SendResult:
        s = self.session
        neg = s.negotiated
        assert neg is not None
        started = time.monotonic()
        if item.path is not None:
            size = (await asyncio.to_thread(os.stat, item.path)).st_size
        else:
            assert item.size is not None
            size = item.size
        blocks = (size + 1023) // 1024
        date, time_ = _sfid_timestamp(item.date, item.time, neg.level)
        v2 = neg.level >= ProtocolLevel.V2_0
        probe = SFID(
            dsn=item.dsn,
            date=date,
            time=time_,
            destination=item.destination,
            originator=item.originator,
            format=item.format,
            lrecl=item.lrecl,
            security=item.security if v2 else SecurityLevel.NONE,
            compression=item.file_compression if v2 else 0,
            envelope=item.envelope if v2 else 0,
        )
        unit = restart_unit(probe)
        most = 99_999_999_999_999_999 if v2 else 999_999_999  # SFIDREST: 17 digits at level 5, else 9
        offer = 0
        v_scan: VRecordScan | None = None  # V: where the offered records end (reused when all accepted)
        if neg.restart and unit:
            full = min(size // unit, most)
            offer = full if item.restart is None else min(item.restart, full)
        elif neg.restart and restarts_in_v_records(probe) and item.restart != 0:
            limit = most if item.restart is None else min(item.restart, most)
            if item.path is not None:  # the records the file has (up to an explicit offer)
                v_scan = await asyncio.to_thread(scan_v_records, item.path, limit)
                offer = v_scan.records
            elif item.restart is not None:  # a source is not counted (it would be read whole)
                offer = limit
        sfid = SFID(
            dsn=item.dsn,
            date=date,
            time=time_,
            destination=item.destination,
            originator=item.originator,
            format=item.format,
            lrecl=item.lrecl,
            file_size=blocks,
            original_size=((item.original_size + 1023) // 1024 if item.original_size is not None else blocks)
            if v2
            else 0,
            restart=offer,
            user_data=item.user_data,
            security=item.security if v2 else SecurityLevel.NONE,
            cipher_suite=item.cipher_suite if v2 else 0,
            compression=item.file_compression if v2 else 0,
            envelope=item.envelope if v2 else 0,
            signed_eerp=item.signed_eerp if v2 else False,
            description=item.description if v2 else "",
        )
        self.write(s.send_sfid(sfid))
        ev = await self.next_event(self.config.timeouts.read)
        if isinstance(ev, FileRefused):
            return SendResult(
                sfid,
                False,
                reason=ev.reason,
                retry=ev.retry,
                text=ev.text,
                refused_at="SFNA",
                duration=time.monotonic() - started,
            )
        if isinstance(ev, SessionEnded):
            raise self.failure(ev)
        if not isinstance(ev, FileAccepted):
            raise SessionAborted(EsidReason.PROTOCOL_VIOLATION, f"unexpected {type(ev).__name__} after SFID")
        offset = ev.restart_offset
        hasher: Any = hashlib.sha256()
        if ev.restart and restarts_in_v_records(sfid):
            offset, hasher = await self._v_restart_point(item, ev.restart, v_scan)
        elif offset and item.path is not None:
            hasher = await asyncio.to_thread(hash_prefix, item.path, offset)
        if item.path is not None:
            sent = await self._stream_path(item, item.path, offset, hasher)
        else:
            sent = await self._stream_source(item, offset, hasher)
        await self._wait_unblocked()
        while True:
            try:
                self.write(s.end_file())
                break
            except LocalProtocolError:
                await self._wait_credit()
        ev = await self.next_event(self.config.timeouts.read)
        duration = time.monotonic() - started
        if isinstance(ev, SessionEnded):
            raise self.failure(ev)
        if isinstance(ev, FileConfirmed):
            return SendResult(
                sfid,
                True,
                octets_sent=sent,
                sha256=hasher.hexdigest(),
                restart_offset=offset,
                record_count=0,
                duration=duration,
            )
        if isinstance(ev, FileRejected):
            return SendResult(
                sfid,
                True,
                octets_sent=sent,
                sha256=hasher.hexdigest(),
                restart_offset=offset,
                reason=ev.reason,
                text=ev.text,
                refused_at="EFNA",
                duration=duration,
            )
        raise SessionAborted(EsidReason.PROTOCOL_VIOLATION, f"unexpected {type(ev).__name__} after EFID")

    async def _v_restart_point(
        self, item: OutboundFile, count: int, known: VRecordScan | None
    ) -> tuple[int, Any]:
        """V restart: the octet offset where record ``count`` ends and a hasher over the octets before.

        Walks the length prefixes from the start (a file in a worker thread, a source from offset
        0) unless ``known`` already ends there; tells the session the data octets skipped.  A file
        with fewer records than the partner accepted ends the session (ESID 99).
        """
        if known is not None and known.records == count and item.path is not None:
            scan = known
            hasher = await asyncio.to_thread(hash_prefix, item.path, scan.offset)
        else:
            hasher = hashlib.sha256()
            if item.path is not None:
                scan = await asyncio.to_thread(scan_v_records, item.path, count, hasher=hasher)
            else:
                assert item.source is not None
                walker = VRecordWalker(count, hasher)
                chunks = item.source(0)
                try:
                    async for chunk in chunks:
                        if await asyncio.to_thread(walker.feed, chunk):
                            break
                finally:
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                scan = walker.result
        if scan.records < count:
            text = f"{item.dsn}: restart at record {count}, but the V content has only {scan.records}"
            log.error("%s: %s", self.ctx.connection_id, text)
            self.write(self.session.end_session(EsidReason.UNSPECIFIED, text))
            await self.flush()
            raise SessionAborted(EsidReason.UNSPECIFIED, text)
        self.session.set_restart_octets(scan.data_octets)
        return scan.offset, hasher

    def _check_alive(self) -> None:
        """Stop streaming into a connection that is gone (writes to it would be dropped silently)."""
        if self.writer.is_closing():
            self.session.connection_lost()
            raise SessionAborted(
                EsidReason.UNSPECIFIED, "connection lost while sending", connection_lost=True
            )

    async def _wait_credit(self) -> None:
        await self.drain_if_needed()
        ev = await self.next_event(self.config.timeouts.read)
        if isinstance(ev, SessionEnded):
            raise self.failure(ev)
        if not isinstance(ev, CreditReceived):
            raise SessionAborted(EsidReason.PROTOCOL_VIOLATION, f"unexpected {type(ev).__name__} during DATA")
        self.write(self.session.data_to_send())  # the DATA the CDT released

    async def _wait_unblocked(self) -> None:
        while self.session.data_blocked:
            await self._wait_credit()

    async def _push(self, data: bytes | memoryview, eor: bool, hasher: Any | None) -> None:
        """Encode ``data``; what the credit allows goes out now, the rest waits for CDT.

        At most one credit window (and at most about 2 MiB) stays encoded ahead, so encoding the
        next window overlaps with the partner processing the current one while memory stays small.
        """
        if hasher is not None:
            hasher.update(data)
        if self.progress is not None:
            self.progress(len(data))
        self._check_alive()
        s = self.session
        out = s.send_data(data, eor)
        if out:
            self.write(out)
            await self.drain_if_needed()
        neg = s.negotiated
        ahead = max(1, min(neg.credit, _AHEAD_OCTETS // neg.sdeb)) if neg else 1
        while s.held_buffers > ahead:
            await self._wait_credit()

    async def _push_records(self, recs: list[bytes]) -> None:
        """Send complete records in one session call (F/V), with the same backpressure as ``_push``."""
        if self.progress is not None:
            self.progress(sum(map(len, recs)))
        self._check_alive()
        s = self.session
        out = s.send_records(recs)
        if out:
            self.write(out)
            await self.drain_if_needed()
        neg = s.negotiated
        ahead = max(1, min(neg.credit, _AHEAD_OCTETS // neg.sdeb)) if neg else 1
        while s.held_buffers > ahead:
            await self._wait_credit()

    async def _send_record_stream(
        self, item: OutboundFile, chunks: AsyncIterator[bytes], hasher: Any | None
    ) -> int:
        """Cut F (``lrecl`` octets) or V (2-octet length prefix) content into records across chunk borders."""
        sent = 0
        buf = bytearray()
        fixed = item.format is RecordFormat.FIXED
        async for chunk in chunks:
            if hasher is not None:
                hasher.update(chunk)
            buf += chunk
            pos = 0
            recs: list[bytes] = []
            while True:
                if fixed:
                    size, start = item.lrecl, pos
                else:
                    if len(buf) - pos < 2:
                        break
                    size, start = int.from_bytes(buf[pos : pos + 2], "big"), pos + 2
                if len(buf) - start < size:
                    break
                recs.append(bytes(buf[start : start + size]))
                pos = start + size
            del buf[:pos]
            if recs:
                await self._push_records(recs)
                sent += sum(map(len, recs))
        if buf:
            if not fixed:
                raise ValueError(f"{item.dsn}: V content ends inside a record")
            await self._push_records([bytes(buf)])  # a short last F record
            sent += len(buf)
        return sent

    def _chunk_size(self) -> int:
        """Octets handed to the encoder at a time: about one credit window (at most ``io_chunk``),
        so encoding the next window overlaps with the partner decoding this one."""
        neg = self.session.negotiated
        assert neg is not None
        window = neg.credit * (neg.sdeb - 1)
        return max(neg.sdeb, min(self.config.io_chunk, window))

    async def _stream_path(self, item: OutboundFile, path: Path, offset: int, hasher: Any) -> int:
        """Send the file from ``offset``; the reader hashes in its worker thread (so ``_push`` does not)."""
        sent = 0
        piece = self._chunk_size()
        # disk reads (and their hashing) in io_chunk pieces — fewer thread hand-offs — while the
        # encoder gets window-sized slices of them
        reader = ChunkReader(path, offset, max(piece, self.config.io_chunk), hasher)
        try:
            if item.format in (RecordFormat.FIXED, RecordFormat.VARIABLE):

                async def chunks() -> AsyncIterator[bytes]:
                    while block := await reader.read():
                        yield block

                sent = await self._send_record_stream(item, chunks(), None)
            else:
                block = await reader.read()
                while True:
                    nxt = await reader.read() if block else b""
                    last = not nxt
                    if len(block) <= piece:
                        await self._push(block, last, None)
                    else:
                        with memoryview(block) as view:
                            for at in range(0, len(block), piece):
                                end = at + piece
                                await self._push(view[at:end], last and end >= len(block), None)
                    sent += len(block)
                    if last:
                        break
                    block = nxt
        finally:
            await reader.close()
        return sent

    async def _stream_source(self, item: OutboundFile, offset: int, hasher: Any) -> int:
        """Send from an async source; F/V content is cut into records across chunk borders."""
        assert item.source is not None
        if item.format in (RecordFormat.FIXED, RecordFormat.VARIABLE):
            return await self._send_record_stream(item, item.source(offset), hasher)
        sent = 0
        pending: bytes | None = None
        async for chunk in item.source(offset):
            if pending is not None:
                await self._push(pending, False, hasher)
                sent += len(pending)
            pending = chunk
        await self._push(pending or b"", True, hasher)
        sent += len(pending or b"")
        return sent

    async def send_receipt(self, receipt: EERP | NERP) -> None:
        s = self.session
        self.write(s.send_eerp(receipt) if isinstance(receipt, EERP) else s.send_nerp(receipt))
        ev = await self.next_event(self.config.timeouts.read)
        if isinstance(ev, SessionEnded):
            raise self.failure(ev)
        if not isinstance(ev, ReceiptAcknowledged):
            raise SessionAborted(
                EsidReason.PROTOCOL_VIOLATION, f"unexpected {type(ev).__name__} after EERP/NERP"
            )

    async def send_items(self, handler: SessionHandler) -> int:
        """Speaker: send what the handler has, until it returns nothing.  Returns the item count."""
        count = 0
        while True:
            items: Sequence[OutboundItem] = await handler.outbound(self.ctx)
            if not items:
                return count
            for item in items:
                if isinstance(item, OutboundFile):
                    result = await self.send_file(item)
                    await _settle(handler.file_sent(result, self.ctx))
                elif isinstance(item, NERP) and self.session.level < ProtocolLevel.V1_4:
                    log.warning(
                        "%s: NERP cannot be sent at level %d; kept back",
                        self.ctx.connection_id,
                        self.session.level,
                    )
                    continue
                else:
                    await self.send_receipt(item)
                count += 1

    # -- listener ------------------------------------------------------------------------------------
    async def listen(self, handler: SessionHandler) -> bool:
        """Listener: process the partner's commands until we get the turn (True) or the session ends (False)."""
        while True:
            ev = await self.next_event(self.config.timeouts.idle)
            if isinstance(ev, FileOffered):
                await self.receive_file(ev.sfid, handler)
            elif isinstance(ev, EERPReceived):
                await _settle(handler.eerp_received(ev.eerp, self.ctx))
            elif isinstance(ev, NERPReceived):
                await _settle(handler.nerp_received(ev.nerp, self.ctx))
            elif isinstance(ev, TurnReceived):
                return True
            elif isinstance(ev, SessionEnded):
                return False
            else:
                log.warning("%s: unexpected %s while listening", self.ctx.connection_id, type(ev).__name__)

    async def receive_file(self, sfid: SFID, handler: SessionHandler) -> None:
        s = self.session
        neg = s.negotiated
        assert neg is not None
        started = time.monotonic()
        try:
            decision: FileDecision = await handler.accept_file(sfid, self.ctx)
        except Exception as exc:  # a handler bug must not kill the session without an answer
            log.exception("%s: accept_file failed", self.ctx.connection_id)
            decision = FileDecision.refuse(99, retry=True, text=f"receiver error: {type(exc).__name__}")
        if not decision.accepted or decision.target is None:
            self.write(s.refuse_file(decision.reason or 99, decision.retry, decision.text))
            return
        target = decision.target
        unit = restart_unit(sfid)
        v_records = restarts_in_v_records(sfid)
        sink = PartialFile(target, sfid)
        want_restart = bool(decision.restart and neg.restart and sfid.restart and (unit or v_records))
        try:
            restart = await sink.open(unit, want_restart, v_records=v_records)
        except OSError as exc:
            log.error("%s: cannot store %s in %s: %s", self.ctx.connection_id, sfid.dsn, sink.path, exc)
            self.write(s.refuse_file(12, True, f"cannot store the file: {exc.strerror}"))
            return
        offset = sink.size  # where the kept units end (V: each record kept has a 2-octet prefix)
        self.write(s.accept_file(restart, restart_octets=offset - 2 * restart if v_records else None))
        try:
            while True:
                # take what is already decoded without a trip through the event loop; read when empty
                nev = s.next_event()
                ev = nev if nev is not None else await self.next_event(self.config.timeouts.read)
                if isinstance(ev, DataReceived):
                    out = s.data_to_send()  # a CDT goes out as soon as it is due
                    if out:
                        self.write(out)
                    if sink.append(ev.data):
                        await sink.dispatch()
                    continue
                if nev is not None and isinstance(ev, SessionEnded):
                    await self._ended(ev)
                if isinstance(ev, SessionEnded):
                    await sink.close()
                    log.warning(
                        "%s: session ended during %s after %d octets; partial kept for restart",
                        self.ctx.connection_id,
                        sfid.dsn,
                        sink.size,
                    )
                    return
                if not isinstance(ev, FileEnded):
                    raise SessionAborted(
                        EsidReason.PROTOCOL_VIOLATION, f"unexpected {type(ev).__name__} in a file"
                    )
                break
            # EFID received
            await sink.flush()
            if sink.error is not None:
                self.write(
                    s.answer_end_file(False, EfnaReason.ACCESS_METHOD_FAILURE, f"write failed: {sink.error}")
                )
                return
            if not ev.counts_match:
                await sink.truncate()
                code = EfnaReason.INVALID_BYTE_COUNT
                if ev.efid.unit_count == ev.octets:
                    code = EfnaReason.INVALID_RECORD_COUNT
                log.warning(
                    "%s: %s counts differ: EFID %d octets/%d records, received %d/%d",
                    self.ctx.connection_id,
                    sfid.dsn,
                    ev.efid.unit_count,
                    ev.efid.record_count,
                    ev.octets,
                    ev.records,
                )
                self.write(
                    s.answer_end_file(False, code, "record/octet count differs from what was received")
                )
                return
            try:
                answer: EndFileDecision = await handler.end_file(sfid, ev.efid, sink.path, self.ctx)
            except Exception as exc:
                log.exception("%s: end_file failed", self.ctx.connection_id)
                answer = EndFileDecision.refuse(99, f"receiver error: {type(exc).__name__}")
            if not answer.ok:
                self.write(s.answer_end_file(False, answer.reason or 99, answer.text))
                return

            async def deliver() -> None:
                try:
                    await sink.commit()
                except OSError as exc:
                    self.write(
                        s.answer_end_file(
                            False, EfnaReason.ACCESS_METHOD_FAILURE, f"cannot store: {exc.strerror}"
                        )
                    )
                    return
                self.write(s.answer_end_file(True))
                received = ReceivedFile(
                    sfid=sfid,
                    path=target,
                    size=sink.size,
                    sha256=sink.sha256,
                    record_count=ev.records,
                    restart_offset=offset,
                    duration=time.monotonic() - started,
                )
                await self.flush()
                await handler.file_received(received, self.ctx)

            # rename, EFPA and the handler's record belong together: a shutdown waits for them
            await _settle(deliver())
        finally:
            await sink.close()

    # -- turn handling ---------------------------------------------------------------------------------
    async def conversation(self, handler: SessionHandler, *, speaker: bool) -> SessionOutcome:
        """Alternate Speaker/Listener roles until the session ends; the generic loop of both roles."""
        s = self.session
        while not s.closed:
            if speaker:
                sent = await self.send_items(handler)
                if s.state is State.IDLESPCD and not sent:
                    self.write(s.end_session(EsidReason.NORMAL))
                    await self.flush()
                    break
                self.write(s.change_direction())
            speaker = await self.listen(handler)
        return self.outcome or SessionOutcome(EsidReason.NORMAL)


# ---------------------------------------------------------------------------------------------------
# Initiator


class OFTPClient:
    """The Initiator side: ``async with OFTPClient(...) as c: await c.send_file(...)``.

    ``partner`` (optional) makes the client check the Responder's SSID code and password.  After
    :meth:`connect` we are the Speaker: :meth:`send_file`, :meth:`send_eerp`, :meth:`send_nerp`;
    :meth:`receive` hands the turn over and processes what the partner sends; :meth:`close` ends
    the session properly (CD, let the partner send, ESID 00).
    """

    def __init__(
        self,
        config: SessionConfig,
        host: str,
        port: int,
        *,
        partner: PartnerConfig | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        handler: SessionHandler | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.partner = partner
        self.ssl = ssl
        _enforce_tls12(ssl)
        self.server_hostname = server_hostname
        self.handler: SessionHandler = handler or SessionHandlerBase()
        self.session = Session(Role.INITIATOR, config, partner=partner, name=f"client-{next(_ids)}")
        self.ctx = SessionContext(self.session.name, Role.INITIATOR, (host, port), tls=ssl is not None)
        self._driver: _Driver | None = None
        #: Called with the number of file octets after each chunk sent (progress display).
        self.progress: Callable[[int], None] | None = None

    @property
    def negotiated(self) -> Negotiated | None:
        """What the SSID exchange agreed (None before :meth:`connect`)."""
        return self.session.negotiated

    @property
    def outcome(self) -> SessionOutcome | None:
        """How the session ended (None while running)."""
        return self._driver.outcome if self._driver else None

    async def connect(self) -> Negotiated:
        """Open the connection and run the SSID exchange (and secure authentication)."""
        t = self.config.timeouts
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=(self.server_hostname or self.host) if self.ssl else None,
                    limit=_STREAM_LIMIT,
                ),
                t.connect,
            )
        except asyncio.TimeoutError:
            raise SessionAborted(
                EsidReason.TIME_OUT, f"connect to {self.host}:{self.port} timed out"
            ) from None
        self.ctx.peer_certificate = _peer_certificate(writer)
        self._driver = _Driver(self.session, reader, writer, self.config, self.ctx)
        try:
            ev = await self._driver.next_event(t.connect)
            while isinstance(ev, ConnectionRequested):  # pragma: no cover - responder only
                ev = await self._driver.next_event(t.connect)
            if isinstance(ev, SessionEnded):
                await self._driver.close_transport()
                raise self._driver.failure(ev)
            if not isinstance(ev, SessionStarted):
                raise SessionAborted(
                    EsidReason.PROTOCOL_VIOLATION, f"unexpected {type(ev).__name__} at start"
                )
        except BaseException:
            await self._driver.close_transport()
            raise
        self.ctx.negotiated = ev.negotiated
        return ev.negotiated

    def _need(self) -> _Driver:
        if self._driver is None:
            raise LocalProtocolError("not connected: call connect() first")
        if self.session.closed:
            raise LocalProtocolError("the session is over")
        return self._driver

    async def _guard(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except (SessionRejected, SessionAborted):
            assert self._driver is not None
            await self._driver.close_transport()
            raise
        except (ConnectionError, OSError) as exc:
            assert self._driver is not None
            self.session.connection_lost()
            await self._driver.close_transport()
            raise SessionAborted(99, str(exc), connection_lost=True) from exc

    async def _regain_turn(self) -> None:
        d = self._need()
        if not self.session.is_speaker:
            raise LocalProtocolError("we do not hold the turn")
        del d

    async def send_file(self, item: OutboundFile) -> SendResult:
        """Send one file; returns the result (refusals are results, session failures raise)."""
        d = self._need()
        await self._regain_turn()
        d.progress = self.progress
        result: SendResult = await self._guard(d.send_file(item))
        if self.session.state is not State.IDLESP and self.session.state is not State.IDLESPCD:
            # the partner asked for the turn with EFPA(Y): listen until it gives it back
            if self.session.is_listener:
                back = await self._guard(d.listen(self.handler))
                if not back and self.session.closed:
                    return result
        return result

    async def send_eerp(self, eerp: EERP) -> None:
        """Send an EERP and wait for RTR."""
        d = self._need()
        await self._guard(d.send_receipt(eerp))

    async def send_nerp(self, nerp: NERP) -> None:
        """Send a NERP (level ≥ 4) and wait for RTR."""
        d = self._need()
        await self._guard(d.send_receipt(nerp))

    async def receive(self, handler: SessionHandler | None = None) -> bool:
        """Hand the turn over (CD) and process what the partner sends.

        Returns True when the partner gave the turn back (we may send more or :meth:`close`),
        False when the partner ended the session.
        """
        d = self._need()
        if handler is not None:
            self.handler = handler
        if self.session.is_speaker:
            d.write(self.session.change_direction())
        back: bool = await self._guard(d.listen(self.handler))
        return back

    async def close(self) -> SessionOutcome:
        """End the session: CD (the partner may still send), then ESID 00; close the connection."""
        d = self._driver
        if d is None:
            return SessionOutcome(EsidReason.NORMAL, "never connected")
        try:
            s = self.session
            if not s.closed:
                await self._guard(d.conversation(self.handler, speaker=s.is_speaker))
                if s.state is State.WF_NDISC:
                    await d.wait_peer_close(2.0)
        except (SessionRejected, SessionAborted) as exc:
            log.info("%s: session ended: %s", self.ctx.connection_id, exc)
        finally:
            await d.close_transport()
        ended = self.session.ended
        if d.outcome is None and ended is not None:
            d.outcome = SessionOutcome(ended.reason, ended.text, ended.by_peer)
        outcome = d.outcome or SessionOutcome(EsidReason.NORMAL)
        with contextlib.suppress(Exception):
            await self.handler.session_ended(self.ctx, outcome)
        return outcome

    async def abort(self, reason: int = EsidReason.UNSPECIFIED, text: str = "") -> None:
        """End the session at once with ESID ``reason`` and close the connection."""
        if self._driver is None:
            return
        self._driver.write(self.session.end_session(reason, text))
        await self._driver.close_transport()

    async def __aenter__(self) -> OFTPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.close()
        elif self._driver is not None:
            if not self.session.closed:
                with contextlib.suppress(Exception):
                    await self.abort(EsidReason.UNSPECIFIED, "client error")
            await self._driver.close_transport()


# ---------------------------------------------------------------------------------------------------
# Responder


HandlerFactory = Callable[[SessionContext], SessionHandler]


class OFTPServer:
    """The Responder: accepts Initiators, checks their SSID, runs one session per connection.

    ``partners`` maps Odette IDs (upper case) to :class:`PartnerConfig`; an unknown code gets ESID
    03, a wrong password ESID 04.  Without ``partners`` every code is passed to the handler's
    ``accept_connection``.  ``handler_factory`` builds a handler per session.

    Admission: ``max_sessions`` counts only sessions past the SSID decision (more get ESID 08).
    Connections that have not sent their SSID yet are capped separately: at most ``max_pending``
    (default ``2 × max_sessions``) wait at once, the oldest is dropped when a new one arrives over
    the cap, and each waits at most ``ssid_timeout`` seconds (ESID 09), so a flood of idle
    connections cannot lock partners out.

    Shutting down: :meth:`stop_accepting` closes the listening socket and refuses connections
    that still arrive (ESID 05) while running sessions go on; :meth:`close` then gives them
    ``grace`` seconds and ends the rest with an ESID (05 by default) before closing the
    connections.  Partially received files stay in ``.partial`` for the partner's restart.
    """

    def __init__(
        self,
        config: SessionConfig,
        handler_factory: HandlerFactory | None = None,
        *,
        partners: Mapping[str, PartnerConfig] | None = None,
        max_sessions: int = 100,
        max_pending: int | None = None,
        ssid_timeout: float = 15.0,
    ) -> None:
        if max_sessions < 1 or (max_pending is not None and max_pending < 1) or not ssid_timeout > 0:
            raise ValueError("OFTPServer: max_sessions and max_pending must be >= 1, ssid_timeout > 0")
        self.config = config
        self.handler_factory: HandlerFactory = handler_factory or (lambda ctx: SessionHandlerBase())
        self.partners = {k.strip().upper(): v for k, v in (partners or {}).items()}
        self.max_sessions = max_sessions
        self.max_pending = max_pending if max_pending is not None else 2 * max_sessions
        self.ssid_timeout = ssid_timeout
        # connections waiting for their SSID (oldest first), and sessions admitted at SSID
        self._pending: dict[asyncio.Task[None], None] = {}
        self._admitted: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        self.sessions_completed = 0
        self.outcomes: list[SessionOutcome] = []
        self._tls = False
        self._done = asyncio.Event()
        self._accepting = True
        self._shutdown: tuple[int, str] | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._server is None or not self._server.sockets:
            raise LocalProtocolError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        """Sessions currently running."""
        return self._active

    @property
    def pending_connections(self) -> int:
        """Connections that have not sent their SSID yet (at most :attr:`max_pending`)."""
        return len(self._pending)

    @property
    def admitted_sessions(self) -> int:
        """Sessions past the SSID decision (what :attr:`max_sessions` limits)."""
        return len(self._admitted)

    async def start(self, host: str = "127.0.0.1", port: int = 0, ssl: _ssl.SSLContext | None = None) -> None:
        """Start listening (port 0 = any free port; read it back from :attr:`port`)."""
        _enforce_tls12(ssl)
        self._tls = ssl is not None
        self._server = await asyncio.start_server(
            self._on_connection, host, port, ssl=ssl, limit=_STREAM_LIMIT
        )

    async def serve_forever(self) -> None:
        """Serve until :meth:`close`."""
        if self._server is None:
            raise LocalProtocolError("server not started")
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    async def wait_sessions(self, count: int, timeout: float | None = None) -> None:
        """Wait until ``count`` sessions have completed in total."""
        async with _timeout(timeout):
            while self.sessions_completed < count:
                self._done.clear()
                await self._done.wait()

    @property
    def accepting(self) -> bool:
        """False after :meth:`stop_accepting` or :meth:`close`."""
        return self._accepting

    def stop_accepting(self) -> None:
        """Close the listening socket; running sessions go on undisturbed.

        Connections that still reach the server (already queued by the kernel, or handed to
        :meth:`handle_connection`) are refused at SSID with ESID 05.
        """
        self._accepting = False
        if self._server is not None:
            self._server.close()

    async def close(
        self,
        reason: int = EsidReason.LOCAL_SITE_EMERGENCY_CLOSE_DOWN,
        text: str = "server shutting down",
        grace: float = 0.0,
    ) -> None:
        """Stop accepting; let running sessions finish for ``grace`` seconds; end the rest with ESID.

        Each remaining session is interrupted where it is (between two protocol steps: buffers
        already encoded go out whole), its partial inbound file is flushed and kept for a restart,
        ESID ``reason``/``text`` is sent, and the partner gets a moment to read it and disconnect
        before the connection is closed.
        """
        self.stop_accepting()
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        if self._tasks:
            self._shutdown = (int(reason), text)
            log.warning(
                "ending %d running session(s) with ESID %02d: %s", len(self._tasks), int(reason), text
            )
            for task in list(self._tasks):
                task.cancel()
            _, late = await asyncio.wait(set(self._tasks), timeout=_SHUTDOWN_DEADLINE)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> OFTPServer:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool | None = None
    ) -> None:
        """Run one Responder session on an already connected stream pair (Azure Relay, tunnels).

        Counts towards ``max_sessions`` and ``sessions_completed`` like a TCP connection; ``tls``
        (default: whether this server listens with TLS) is what handlers see in ``ctx.tls``.
        """
        await self._on_connection(reader, writer, tls=tls)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool | None = None
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._active += 1
        while len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            log.warning("%d connections without an SSID: dropping the oldest", self.max_pending)
            oldest.cancel()
        self._pending[task] = None
        try:
            await self._run(reader, writer, self._tls if tls is None else tls)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("responder session crashed")
        finally:
            self._active -= 1
            self._pending.pop(task, None)
            self._admitted.discard(task)
            self._tasks.discard(task)
            self.sessions_completed += 1
            self._done.set()

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        peer = writer.get_extra_info("peername")
        peer_addr = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        session = Session(Role.RESPONDER, self.config, name=f"server-{next(_ids)}")
        ctx = SessionContext(
            session.name, Role.RESPONDER, peer_addr, tls=tls, peer_certificate=_peer_certificate(writer)
        )
        driver = _Driver(session, reader, writer, self.config, ctx)
        handler = self.handler_factory(ctx)
        t = self.config.timeouts
        outcome: SessionOutcome | None = None
        try:
            driver.write(session.start())
            ev = await driver.next_event(min(t.connect, self.ssid_timeout))
            if isinstance(ev, ConnectionRequested):
                driver.write(await self._decide(session, ev, ctx, handler))
                ev = await driver.next_event(t.connect)
            if isinstance(ev, SessionStarted):
                ctx.negotiated = ev.negotiated
                outcome = await driver.conversation(handler, speaker=False)
                if not outcome.by_peer:
                    await driver.wait_peer_close(2.0)
            elif isinstance(ev, SessionEnded):
                outcome = driver.outcome
                if not ev.by_peer:
                    await driver.wait_peer_close(1.0)
        except (SessionRejected, SessionAborted) as exc:
            log.info("%s: %s", ctx.connection_id, exc)
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection error: %s", ctx.connection_id, exc)
            session.connection_lost()
        except asyncio.CancelledError:
            if self._shutdown is None:
                raise
            task = asyncio.current_task()
            if task is not None and sys.version_info >= (3, 11):
                # 3.11+ counts cancellations: without this the timeouts below would not fire as
                # TimeoutError; 3.10 (async-timeout) keeps no count and has no Task.uncancel()
                task.uncancel()
            reason, text = self._shutdown
            if not session.closed:
                log.warning("%s: ended by shutdown (ESID %02d)", ctx.connection_id, reason)
                driver.write(session.end_session(reason, text))
                outcome = SessionOutcome(reason, text, False)
                await driver.wait_peer_close(_SHUTDOWN_LINGER)
        except Exception:
            # a handler bug: end the session properly instead of just dropping the connection
            log.exception("%s: session handler failed", ctx.connection_id)
            if not session.closed:
                driver.write(session.end_session(EsidReason.UNSPECIFIED, "internal error"))
        finally:
            await driver.close_transport()
            outcome = (
                outcome or driver.outcome or SessionOutcome(EsidReason.UNSPECIFIED, "connection lost", True)
            )
            self.outcomes.append(outcome)
            with contextlib.suppress(Exception):
                await handler.session_ended(ctx, outcome)

    async def _decide(
        self, session: Session, ev: ConnectionRequested, ctx: SessionContext, handler: SessionHandler
    ) -> bytes:
        ssid = ev.ssid
        task = asyncio.current_task()
        if task is not None:
            self._pending.pop(task, None)
        if not self._accepting:
            reason, text = self._shutdown or (EsidReason.LOCAL_SITE_EMERGENCY_CLOSE_DOWN, "")
            return session.reject_connection(reason, text or "not accepting new sessions")
        if len(self._admitted) >= self.max_sessions:
            return session.reject_connection(
                EsidReason.RESOURCES_NOT_AVAILABLE, "too many sessions, retry later"
            )
        partner: PartnerConfig | None = None
        if self.partners:
            partner = self.partners.get(ssid.code.strip().upper())
            if partner is None:
                log.warning("%s: unknown Odette ID %r", ctx.connection_id, ssid.code)
                return session.reject_connection(EsidReason.USER_CODE_NOT_KNOWN, "user code not known")
            if not passwords_match(
                partner.password, ssid.password, case_sensitive=self.config.password_case_sensitive
            ):
                log.warning("%s: wrong password for %r", ctx.connection_id, ssid.code)
                return session.reject_connection(EsidReason.INVALID_PASSWORD, "invalid password")
        request = ConnectionRequest(
            connection_id=ctx.connection_id,
            client_code=ssid.code,
            password=ssid.password,
            client_level=ssid.level,
            server_level=min(ssid.level, self.config.level),
            peer_address=ctx.peer_address,
            client_sdeb=ssid.sdeb,
            client_credit=ssid.credit,
            client_send_receive=ssid.send_receive,
            client_secure_auth=ssid.secure_auth,
            client_user_data=ssid.user_data,
            tls=ctx.tls,
        )
        if task is not None:
            self._admitted.add(task)  # reserve the slot while the handler decides
        try:
            decision: AcceptDecision = await handler.accept_connection(request)
        except Exception:
            log.exception("%s: accept_connection failed", ctx.connection_id)
            if task is not None:
                self._admitted.discard(task)
            return session.reject_connection(EsidReason.UNSPECIFIED, "internal error")
        if not decision.accepted and task is not None:
            self._admitted.discard(task)
        if decision.accepted and decision.partner is None and partner is not None:
            decision = AcceptDecision.accept(level=decision.level, partner=partner)
        return session.accept_connection(decision)
