"""Fuzz targets shared by the atheris runner (``make fuzz``) and the short hypothesis runs (``make test``).

Each target takes one byte string and feeds it to one decoder of the project.  The decoder may raise
only the documented typed errors listed in the target's ``allowed`` tuple; any other exception (or a
broken invariant, raised as :class:`Finding`) escapes and is a finding.  Targets that need keys or
certificates build them once per process with :func:`context`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from oftp2_provider.pki import PKIBundle, generate_test_pki
from oftp2_provider.protocol import auth, codec, framing, records
from oftp2_provider.protocol.api import CmsAuthenticator, Role, SessionConfig
from oftp2_provider.protocol.cms import open_envelope, protect_file, unprotect_file, verify_signed_bytes
from oftp2_provider.protocol.commands import (
    AUCH,
    AURP,
    CD,
    CDT,
    EERP,
    EFID,
    EFNA,
    EFPA,
    ESID,
    NERP,
    RTR,
    SECD,
    SFID,
    SFNA,
    SFPA,
    SSID,
    SSRM,
    Command,
    ProtocolLevel,
    RecordFormat,
)
from oftp2_provider.protocol.errors import DecodeError, FieldError
from oftp2_provider.protocol.session import Session, SessionEnded
from oftp2_provider.protocol.suites import SecurityError
from oftp2_provider.relay.emulator import RelayEmulator, _Control
from oftp2_provider.relay.errors import RelayConnectionClosed
from oftp2_provider.relay.listener import HybridConnectionListener

__all__ = ["TARGETS", "Finding", "Target", "context", "seeds"]

LEVELS = (ProtocolLevel.V1_2, ProtocolLevel.V1_3, ProtocolLevel.V1_4, ProtocolLevel.V2_0)
CLIENT, SERVER = "O0013CLIENT", "O0013SERVER"


class Finding(AssertionError):
    """A decoder broke one of its own invariants (not just an unexpected exception type)."""


@dataclass(frozen=True)
class Target:
    """One fuzz target: the function, the exceptions it may raise, its share of the input budget."""

    name: str
    run: Callable[[bytes], None]
    weight: float
    seeds: Callable[[], list[bytes]]


@dataclass
class _Context:
    pki: PKIBundle
    work: Path
    envelopes: dict[str, bytes]


@cache
def context() -> _Context:
    """Keys, certificates and protected sample files, built once per process."""
    work = Path(tempfile.mkdtemp(prefix="oftp2-fuzz-"))
    pki = generate_test_pki(work / "pki")
    plain = work / "plain"
    plain.write_bytes(b"ODETTE FILE " * 40 + bytes(range(256)))
    envelopes: dict[str, bytes] = {}
    variants: dict[str, dict[str, Any]] = {
        "signed": {"sign_key": pki.client.key, "sign_cert": pki.client.cert},
        "compressed": {"compress": True},
        "signed-compressed": {"sign_key": pki.client.key, "sign_cert": pki.client.cert, "compress": True},
        "encrypted": {"encrypt_for": pki.partner.cert},
        "all": {
            "sign_key": pki.client.key,
            "sign_cert": pki.client.cert,
            "compress": True,
            "encrypt_for": pki.partner.cert,
        },
    }
    for name, kwargs in variants.items():
        protect_file(plain, work / name, suite=2, chunk_size=200, **kwargs)
        envelopes[name] = (work / name).read_bytes()
    return _Context(pki, work, envelopes)


# ---------------------------------------------------------------------------------------------------
# protocol decoders


def stb(data: bytes) -> None:
    """Stream Transmission Buffer parser: random octets, split into reads at fuzz-chosen points."""
    dec = framing.StreamDecoder()
    step = (data[0] % 17 + 1) if data else 1
    got = 0
    try:
        for i in range(0, len(data), step):
            dec.feed(data[i : i + step])
            for buf in dec:
                got += len(buf) + framing.HEADER_SIZE
                if not framing.MIN_STB - framing.HEADER_SIZE <= len(buf) <= framing.MAX_STB:
                    raise Finding(f"STB parser returned a buffer of {len(buf)} octets")
    except DecodeError:
        return
    if got + dec.pending != len(data):
        raise Finding(f"STB parser lost octets: {got} returned + {dec.pending} pending != {len(data)} fed")


def commands(data: bytes) -> None:
    """``codec.decode`` at every level, ``decode_ssid`` and ``decode_esid`` on one buffer."""
    for level in LEVELS:
        try:
            cmd = codec.decode(data, level)
        except (DecodeError, FieldError):
            continue
        if not isinstance(cmd, Command):
            raise Finding(f"decode returned {type(cmd).__name__}")
        if not isinstance(cmd, ESID) and cmd.__class__.__name__ != "DATA":
            # what we accepted we must be able to send back (ESID: both layouts are read at every level)
            try:
                codec.encode(cmd, level)
            except FieldError as exc:
                raise Finding(f"decoded {cmd!r} at level {int(level)} cannot be re-encoded: {exc}") from exc
    for decoder in (codec.decode_ssid, codec.decode_esid):
        try:
            decoder(data)
        except (DecodeError, FieldError):
            pass


def data_records(data: bytes) -> None:
    """DATA payload decoding: ``decode_subrecords`` and every ``DataDecoder`` mode must agree."""
    try:
        parts = records.decode_subrecords(data)
    except DecodeError:
        parts = None
    expected = b"".join(chunk for chunk, _ in parts) if parts is not None else None
    for fmt in RecordFormat:
        for v_prefix in (False, True) if fmt is RecordFormat.VARIABLE else (False,):
            dec = records.DataDecoder(fmt, v_prefix=v_prefix)
            try:
                out, recs = dec.feed(data)
            except DecodeError:
                if parts is not None and not v_prefix:
                    raise Finding("DataDecoder refused a payload decode_subrecords accepted") from None
                continue
            if parts is None:
                raise Finding("DataDecoder accepted a payload decode_subrecords refused")
            if not v_prefix and out != expected:
                raise Finding("DataDecoder and decode_subrecords disagree on the octets")
            if recs != sum(1 for _, eor in parts if eor) or dec.unit_count != len(expected or b""):
                raise Finding("DataDecoder counts disagree with the subrecords")
            _feed_run_agrees(fmt, v_prefix, data, out, recs)


def _feed_run_agrees(fmt: RecordFormat, v_prefix: bool, payload: bytes, out: bytes, recs: int) -> None:
    """The run decoder (several STBs in one call) must give what ``feed`` gave, buffer after buffer."""
    if len(payload) + 5 > framing.MAX_STB:
        return
    stb = framing.frame(b"D" + payload)
    run = records.DataDecoder(fmt, v_prefix=v_prefix)
    got, got_recs, done, error = run.feed_run(stb * 2, [len(stb), 2 * len(stb)])
    second = records.DataDecoder(fmt, v_prefix=v_prefix)
    first_out, first_recs = second.feed(payload)
    try:
        again, again_recs = second.feed(payload)
    except DecodeError:
        if error is None or done != 1:
            raise Finding("feed_run accepted a second buffer that feed refused") from None
        return
    if error is not None or done != 2:
        raise Finding("feed_run refused buffers that feed accepted")
    if bytes(got) != first_out + again or got_recs != first_recs + again_recs:
        raise Finding("feed_run and feed disagree")
    if (run.unit_count, run.record_count, run.in_record) != (
        second.unit_count,
        second.record_count,
        second.in_record,
    ):
        raise Finding("feed_run and feed disagree on the counters")
    if first_out != out or first_recs != recs:
        raise Finding("DataDecoder.feed is not deterministic")


# ---------------------------------------------------------------------------------------------------
# CMS, secure authentication


_CMS_MODES = ((1, False), (0, True), (1, True), (2, False), (3, True), (3, False), (2, True))


def cms(data: bytes) -> None:
    """``unprotect_file`` (mode chosen by the first octet) plus the in-memory envelope/signature readers."""
    ctx = context()
    level, compressed = _CMS_MODES[data[0] % len(_CMS_MODES)] if data else (0, True)
    body = data[1:]
    src, dst = ctx.work / "fuzz-in", ctx.work / "fuzz-out"
    src.write_bytes(body)
    dst.unlink(missing_ok=True)
    try:
        unprotect_file(
            src,
            dst,
            security_level=level,
            compressed=compressed,
            suite=2,
            decrypt_key=ctx.pki.partner.key,
            decrypt_cert=ctx.pki.partner.cert,
            verify_certs=[ctx.pki.client.cert],
            chunk_size=97,
            max_output=1 << 20,
            fsync=False,
        )
    except SecurityError:
        if dst.exists():
            raise Finding("unprotect_file failed but left a file at the destination") from None
        leftovers = [p.name for p in ctx.work.iterdir() if p.name.startswith(".") or p.suffix == ".part"]
        if leftovers:
            raise Finding(f"unprotect_file left temporary files behind: {leftovers}") from None
    with contextlib.suppress(SecurityError):
        open_envelope(body, key=ctx.pki.partner.key, cert=ctx.pki.partner.cert)
    with contextlib.suppress(SecurityError):
        verify_signed_bytes(body, verify_certs=[ctx.pki.client.cert])


def auth_challenge(data: bytes) -> None:
    """``auth.answer_challenge`` on garbage or mutated AUCH challenges."""
    ctx = context()
    try:
        answer = auth.answer_challenge(data, ctx.pki.partner.key, ctx.pki.partner.cert)
    except SecurityError:
        return
    if len(answer) != auth.CHALLENGE_SIZE:
        raise Finding(f"answer_challenge returned {len(answer)} octets")


# ---------------------------------------------------------------------------------------------------
# sans-I/O sessions fed hostile buffers after a valid start


def _pair(secure: bool) -> tuple[Session, Session, list[object]]:
    ctx = context()
    if secure:
        c_auth = CmsAuthenticator(ctx.pki.client.key, ctx.pki.client.cert, {SERVER: ctx.pki.partner.cert})
        s_auth = CmsAuthenticator(ctx.pki.partner.key, ctx.pki.partner.cert, {CLIENT: ctx.pki.client.cert})
        ccfg = SessionConfig(CLIENT, "CPW", secure_auth=True, authenticator=c_auth, sdeb=512, credit=4)
        scfg = SessionConfig(SERVER, "SPW", secure_auth=True, authenticator=s_auth, sdeb=512, credit=4)
    else:
        ccfg = SessionConfig(CLIENT, "CPW", sdeb=512, credit=4)
        scfg = SessionConfig(SERVER, "SPW", sdeb=512, credit=4)
    c = Session(Role.INITIATOR, ccfg)
    s = Session(Role.RESPONDER, scfg)
    c.receive_data(s.start())
    c.events()
    s.receive_data(c.data_to_send())
    s.events()
    c.receive_data(s.accept_connection())
    events: list[object] = list(c.events())
    return c, s, events


_SAMPLE_SFID = SFID("FUZZ.FILE", "20240131", "1230450001", SERVER, CLIENT)

_SESSION_SEEDS: list[Command] = [
    SSRM(),
    SSID(level=ProtocolLevel.V2_0, code=CLIENT, password="CPW", sdeb=512, credit=4),
    SECD(),
    AUCH(b"\x30\x03\x02\x01\x00"),
    AURP(b"A" * 20),
    _SAMPLE_SFID,
    SFPA(0),
    SFNA(3, False, "no"),
    CDT(),
    EFID(1, 10),
    EFPA(False),
    EFNA(5, "bad"),
    ESID(0),
    CD(),
    RTR(),
    EERP("FUZZ.FILE", "20240131", "1230450001", SERVER, CLIENT),
    NERP("FUZZ.FILE", "20240131", "1230450001", SERVER, CLIENT, SERVER, 3),
]


def session(data: bytes) -> None:
    """Sans-I/O sessions: hostile buffers after a valid start, for every role and phase.

    Octet 0 picks the scenario (who receives, secure authentication on/off, file offered or not,
    or a fresh Responder before any SSID);
    the rest is split into exchange buffers at 0xFF octets, each sent with a valid Stream
    Transmission Header unless it starts with 0xFE (raw octets).  Nothing may raise.
    """
    mode = data[0] if data else 0
    secure = bool(mode & 1)
    c, s, _ = _pair(secure)
    target = c if mode & 2 else s
    if mode & 8:  # a fresh Responder that has only sent SSRM: hostile input before any SSID
        target = Session(Role.RESPONDER, s.config)
        target.start()
    elif mode & 4 and not secure:
        c.events()
        s.events()
        offer = c.send_sfid(_SAMPLE_SFID)
        s.receive_data(offer)
        s.events()
        c.receive_data(s.accept_file())
        c.events()
        target = s  # the listener in its data phase
    for piece in data[1:].split(b"\xff"):
        target.receive_data(piece[1:] if piece[:1] == b"\xfe" else framing.frame(piece[:99999] or b"C"))
        for ev in target.events():
            if isinstance(ev, SessionEnded) and not ev.by_peer:
                sent = framing.StreamDecoder()
                sent.feed(target.data_to_send())
                last = list(sent)[-1:]
                if not last or last[0][:1] != b"F":
                    raise Finding(
                        f"session ended by us (ESID {ev.reason:02d}) but its last buffer is {last!r}"
                    )
        if target.ended is not None:
            break
    target.data_to_send()
    target.connection_lost()
    target.events()


# ---------------------------------------------------------------------------------------------------
# relay control channel


class _FakeChannel:
    """Hands the listener a fixed list of control messages, then a close."""

    def __init__(self, messages: list[str | bytes]) -> None:
        self.messages = messages

    async def recv(self) -> str | bytes:
        if not self.messages:
            raise RelayConnectionClosed(1000, "done")
        return self.messages.pop(0)

    async def send(self, message: str | bytes) -> None:
        return None

    async def shutdown(self, code: int = 1000, reason: str = "") -> None:
        return None

    def abort(self) -> None:
        return None


class _CatchAllDetector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


async def _relay_run(messages: list[str | bytes]) -> None:
    from oftp2_provider.relay.address import HybridConnectionAddress

    address = HybridConnectionAddress("fuzz.servicebus.windows.net", "hc1", endpoint="ws://127.0.0.1:9")
    listener = HybridConnectionListener(address, lambda _resource: None, queue_size=4)  # type: ignore[arg-type,return-value]
    detector = _CatchAllDetector()
    logger = logging.getLogger("oftp2_provider.relay")
    logger.addHandler(detector)
    try:
        await listener._read_control(_FakeChannel(messages))  # type: ignore[arg-type]
        for task in list(listener._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    finally:
        logger.removeHandler(detector)
    # the emulator's side of the same channel: renewToken and response commands
    emulator = RelayEmulator(keys={"RootManageSharedAccessKey": "ZnV6eiBrZXk="}, hybrid_connections=["hc1"])
    await emulator._read_control(_Control(_FakeChannel(list(messages)), "hc1", 0))  # type: ignore[arg-type]
    if detector.records:
        rec = detector.records[0]
        raise Finding(f"relay listener hit its catch-all: {rec.getMessage()[:200]}; {rec.exc_info[1]!r}")  # type: ignore[index]


def relay_control(data: bytes) -> None:
    """Relay control channel, listener and emulator side: JSON messages split at 0x00 (0x01: binary)."""
    messages: list[str | bytes] = []
    for piece in data.split(b"\x00")[:8]:
        messages.append(piece.decode("utf-8", "replace") if not piece.startswith(b"\x01") else piece[1:])
    _relay_loop().run_until_complete(_relay_run(messages))


@cache
def _relay_loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


# ---------------------------------------------------------------------------------------------------
# seeds


def _command_seeds() -> list[bytes]:
    out = []
    for cmd in _SESSION_SEEDS:
        for level in LEVELS:
            with contextlib.suppress(FieldError):
                out.append(codec.encode(cmd, level))
    return out


def _data_seeds() -> list[bytes]:
    out = []
    for compression in (False, True):
        for buf in records.pack_records([b"A" * 70, b"", b"xyz" * 30 + b"B" * 20], 256, compression):
            out.append(buf[1:])
    return out


def _session_seeds() -> list[bytes]:
    bufs = _command_seeds()
    return [
        bytes([mode]) + b"\xff".join(bufs[i : i + 3]) for mode in range(16) for i in range(0, len(bufs), 9)
    ]


def _cms_seeds() -> list[bytes]:
    ctx = context()
    mode_of = {"signed": 0, "compressed": 1, "signed-compressed": 2, "encrypted": 3, "all": 4}
    return [bytes([mode_of[k]]) + v for k, v in ctx.envelopes.items()]


def _auth_seeds() -> list[bytes]:
    ctx = context()
    return [auth.make_challenge(ctx.pki.partner.cert, suite=s)[0] for s in (1, 2)]


def _relay_seeds() -> list[bytes]:
    msgs: list[dict[str, Any]] = [
        {"accept": {"address": "wss://ns/$hc/hc1?sb-hc-action=accept&sb-hc-id=1", "id": "1",
                    "connectHeaders": {"A": "b"}, "remoteEndpoint": {"address": "1.2.3.4", "port": 5}}},
        {"request": {"address": "wss://ns/$hc/hc1?sb-hc-action=request&sb-hc-id=2", "id": "2",
                     "requestTarget": "/hc1/x?y=1", "method": "POST", "requestHeaders": {"X": "1"},
                     "body": True}},
        {"request": {"address": "", "id": "3"}},
        {"renewToken": {"token": "x"}},
        {"renewToken": {"token": "SharedAccessSignature sr=http%3a%2f%2fns%2fhc1&sig=abc%3d&se=99&skn=k"}},
        {"response": {"requestId": "1", "statusCode": 200, "body": True}},
    ]  # fmt: skip
    return [json.dumps(m).encode() + (b"\x00\x01body" if "request" in m else b"") for m in msgs]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("stb", stb, 0.25, lambda: [framing.frame(b) for b in _command_seeds()]),
        Target("commands", commands, 0.25, _command_seeds),
        Target("data", data_records, 0.12, _data_seeds),
        Target("cms", cms, 0.05, _cms_seeds),
        Target("auth", auth_challenge, 0.10, _auth_seeds),
        Target("session", session, 0.08, _session_seeds),
        Target("relay", relay_control, 0.15, _relay_seeds),
    )
}


def seeds(name: str) -> list[bytes]:
    """The seed inputs of target ``name`` (valid encodings that mutation starts from)."""
    return TARGETS[name].seeds()
