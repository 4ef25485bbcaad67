"""The embedding API of the OFTP engine: configuration, decisions, results and the handler protocol.

These plain, immutable types are what the gateway and the Airflow layer exchange with
:mod:`oftp2_provider.protocol.transport`.  Nothing here does I/O; the drivers call the
:class:`SessionHandler` callbacks at the points an embedder has to decide something (accept a
connection, accept a file, what to send when we hold the turn) and report results
(:class:`SendResult`, :class:`ReceivedFile`).

Decisions mirror the vocabulary of commercial OFTP components (an ``accept_connection`` hook that
can accept, reject with an ESID code or override the level) so that gateway policies map 1:1.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hmac
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from .commands import (
    EERP,
    EFID,
    NERP,
    SFID,
    ProtocolLevel,
    RecordFormat,
    SecurityLevel,
    SendReceive,
)
from .errors import EfnaReason, EsidReason, SfnaReason

__all__ = [
    "AcceptDecision",
    "Authenticator",
    "CmsAuthenticator",
    "ConnectionRequest",
    "EndFileDecision",
    "FileDecision",
    "Negotiated",
    "OutboundFile",
    "OutboundItem",
    "PartnerConfig",
    "ReceivedFile",
    "Role",
    "SendResult",
    "SessionConfig",
    "SessionContext",
    "SessionHandler",
    "SessionHandlerBase",
    "SessionOutcome",
    "Timeouts",
    "TimestampGenerator",
    "file_key",
    "make_eerp",
    "make_nerp",
    "make_timestamp",
    "passwords_match",
    "receipt_key",
]

# ---------------------------------------------------------------------------------------------------
# Configuration


class Role(str, enum.Enum):
    """Which end of the TCP connection this session is (fixed for the session)."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timers in seconds.

    ``connect``: TCP/TLS connect and SSRM/SSID exchange; ``read``: waiting for an awaited answer
    (SFPA, CDT, EFPA, RTR …); ``idle``: a Listener waiting for the Speaker's next command.  Expiry
    ends the session with ESID 09.
    """

    connect: float = 30.0
    read: float = 90.0
    idle: float = 300.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "idle"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"Timeouts.{name} must be > 0 seconds, got {value!r}")


@runtime_checkable
class Authenticator(Protocol):
    """OFTP2 secure authentication (SECD/AUCH/AURP) crypto, supplied by the embedder.

    ``make_challenge`` returns the AUCH challenge (DER CMS EnvelopedData for the partner's
    certificate) and the 20 secret octets it contains; ``answer_challenge`` decrypts a received
    challenge with our own key and returns the 20 octets.  Either may raise to fail the
    authentication (the session then ends with ESID 11).
    """

    def make_challenge(self, partner_code: str) -> tuple[bytes, bytes]:
        """Return ``(auch_challenge_der, secret20)`` for the partner identified by its SSID code."""
        ...

    def answer_challenge(self, challenge: bytes) -> bytes:
        """Decrypt ``challenge`` and return the 20 secret octets."""
        ...


class CmsAuthenticator:
    """:class:`Authenticator` backed by :mod:`oftp2_provider.protocol.auth` (CMS EnvelopedData challenges).

    ``own_key``/``own_cert`` decrypt the partner's challenges; ``partner_certs`` maps Odette IDs
    (compared upper case) to the certificates our challenges are encrypted for; ``suite`` selects
    the content cipher (default 01 = 3DES, widest compatibility).
    """

    def __init__(
        self, own_key: object, own_cert: object, partner_certs: dict[str, object], *, suite: int = 1
    ) -> None:
        self.own_key = own_key
        self.own_cert = own_cert
        self.partner_certs = {k.strip().upper(): v for k, v in partner_certs.items()}
        self.suite = suite

    def make_challenge(self, partner_code: str) -> tuple[bytes, bytes]:
        """Envelope 20 random octets for the partner's certificate."""
        from . import auth

        cert = self.partner_certs.get(partner_code.strip().upper())
        return auth.make_challenge(cert, suite=self.suite)  # type: ignore[arg-type]

    def answer_challenge(self, challenge: bytes) -> bytes:
        """Decrypt the partner's challenge with our key."""
        from . import auth

        return auth.answer_challenge(challenge, self.own_key, self.own_cert)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Our own side of a session: identity, proposals and timers.

    ``level`` is the highest level we speak (1, 2, 4 or 5); ``sdeb`` and ``credit`` are our
    proposals (Initiator) or upper bounds for the answer (Responder).  ``password_case_sensitive``
    is off by default because real partners send lower-case passwords.
    """

    odette_id: str
    password: str = field(repr=False)
    level: ProtocolLevel = ProtocolLevel.V2_0
    sdeb: int = 99999
    credit: int = 999
    compression: bool = False
    restart: bool = True
    send_receive: SendReceive = SendReceive.BOTH
    secure_auth: bool = False
    user_data: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)
    password_case_sensitive: bool = False
    authenticator: Authenticator | None = None
    #: Size of file reads/writes in the drivers (octets).
    io_chunk: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.odette_id or len(self.odette_id) > 25:
            raise ValueError(f"SessionConfig.odette_id must be 1–25 characters, got {self.odette_id!r}")
        if len(self.password) > 8:
            raise ValueError("SessionConfig.password must be at most 8 characters (SSIDPSWD is X(8))")
        object.__setattr__(self, "level", ProtocolLevel(self.level))
        object.__setattr__(self, "send_receive", SendReceive(self.send_receive))
        if not 128 <= self.sdeb <= 99999:
            raise ValueError(f"SessionConfig.sdeb must be 128–99999, got {self.sdeb}")
        if not 1 <= self.credit <= 999:
            raise ValueError(f"SessionConfig.credit must be 1–999, got {self.credit}")
        if len(self.user_data) > 8:
            raise ValueError("SessionConfig.user_data must be at most 8 characters")
        if self.secure_auth and self.level < ProtocolLevel.V2_0:
            raise ValueError("SessionConfig.secure_auth needs level 5 (OFTP 2.0)")


@dataclass(frozen=True, slots=True)
class PartnerConfig:
    """What a Responder (or an Initiator checking the answer) knows about one partner.

    ``password`` is the password the partner must present; ``our_password`` (optional) overrides
    the password we present to this partner.  ``max_level``/``sdeb``/``credit`` cap the
    negotiation for this partner; ``secure_auth`` is the SSIDAUTH value we require.
    """

    odette_id: str
    password: str = field(repr=False)
    our_password: str | None = field(default=None, repr=False)
    max_level: ProtocolLevel | None = None
    sdeb: int | None = None
    credit: int | None = None
    secure_auth: bool | None = None
    send_receive: SendReceive | None = None


def passwords_match(expected: str, presented: str, *, case_sensitive: bool = False) -> bool:
    """Compare two SSID passwords after right-trimming spaces (case-insensitive by default).

    The comparison takes the same time wherever the first difference is (``hmac.compare_digest``).
    """
    a, b = expected.rstrip(" "), presented.rstrip(" ")
    if not case_sensitive:
        a, b = a.upper(), b.upper()
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# Negotiation result and per-session context


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The parameters both sides agreed on in the SSID exchange."""

    level: ProtocolLevel
    sdeb: int
    credit: int
    compression: bool
    restart: bool
    secure_auth: bool
    #: Can *we* send files (our SR and the partner's SR allow it)?
    can_send: bool
    #: Can *we* receive files?
    can_receive: bool
    partner_code: str
    partner_password: str = field(repr=False)
    partner_user_data: str = ""


@dataclass(slots=True)
class SessionContext:
    """What a handler callback knows about the session it is called for (mutable ``data`` bag).

    ``peer_certificate`` is the DER encoding of the certificate the peer presented in the TLS
    handshake (the Initiator's client certificate on the Responder side, the server certificate on
    the Initiator side); ``None`` on plain TCP, on streams handed to
    :meth:`~oftp2_provider.protocol.transport.OFTPServer.handle_connection` without a TLS object,
    and when the peer sent no certificate.  It is set before the handler factory is called, so a
    Responder can tie the SSID code to the certificate in ``accept_connection``.
    """

    connection_id: str
    role: Role
    peer_address: tuple[str, int] | None = None
    negotiated: Negotiated | None = None
    tls: bool = False
    data: dict[str, object] = field(default_factory=dict)
    peer_certificate: bytes | None = field(default=None, repr=False)

    @property
    def partner_code(self) -> str:
        """The partner's SSIDCODE (empty before the SSID exchange)."""
        return self.negotiated.partner_code if self.negotiated else ""


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """How a session ended: the ESID reason, its text, and who sent it (``by_peer``)."""

    reason: int
    text: str = ""
    by_peer: bool = False

    @property
    def ok(self) -> bool:
        """True for a normal end (ESID 00)."""
        return self.reason == EsidReason.NORMAL


# ---------------------------------------------------------------------------------------------------
# Connection acceptance (Responder)


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    """An Initiator's SSID, presented to the Responder's ``accept_connection`` hook."""

    connection_id: str
    client_code: str
    password: str = field(repr=False)
    client_level: ProtocolLevel
    server_level: ProtocolLevel
    peer_address: tuple[str, int] | None
    client_sdeb: int
    client_credit: int
    client_send_receive: SendReceive
    client_secure_auth: bool
    client_user_data: str = ""
    tls: bool = False


@dataclass(frozen=True, slots=True)
class AcceptDecision:
    """The Responder's answer to a :class:`ConnectionRequest`.

    Use :meth:`accept` / :meth:`reject`.  On accept, ``partner`` (optional) caps the negotiation and
    ``level`` overrides the answered level (it must not exceed the client's).
    """

    accepted: bool
    reason: int = EsidReason.NORMAL
    text: str = ""
    level: ProtocolLevel | None = None
    partner: PartnerConfig | None = None

    @classmethod
    def accept(
        cls, *, level: ProtocolLevel | None = None, partner: PartnerConfig | None = None
    ) -> AcceptDecision:
        """Accept the connection (optionally answering a lower ``level``)."""
        return cls(True, EsidReason.NORMAL, "", level, partner)

    @classmethod
    def reject(cls, reason: int, text: str = "") -> AcceptDecision:
        """Reject with ESID ``reason`` (e.g. 03 unknown user, 04 bad password, 08 busy)."""
        if int(reason) == 0:
            raise ValueError("AcceptDecision.reject needs a non-zero ESID reason")
        return cls(False, int(reason), text)


# ---------------------------------------------------------------------------------------------------
# Files


class TimestampGenerator:
    """SFIDDATE/SFIDTIME generator: ``CCYYMMDD`` and ``HHMMSScccc`` with a per-second counter 0001–9999.

    Thread-safe; if more than 9999 stamps are requested within one second, the clock is advanced
    to the next second so stamps stay unique.
    """

    def __init__(self, clock: Callable[[], _dt.datetime] | None = None) -> None:
        self._clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._lock = threading.Lock()
        self._last: _dt.datetime | None = None
        self._counter = 0

    def __call__(self) -> tuple[str, str]:
        """Return the next unique ``(date, time)`` pair."""
        with self._lock:
            now = self._clock().replace(microsecond=0)
            if self._last is not None and now <= self._last:
                now = self._last
                self._counter += 1
                if self._counter > 9999:
                    now = now + _dt.timedelta(seconds=1)
                    self._counter = 1
            else:
                self._counter = 1
            self._last = now
            return now.strftime("%Y%m%d"), now.strftime("%H%M%S") + f"{self._counter:04d}"


make_timestamp = TimestampGenerator()
"""The process-wide :class:`TimestampGenerator`."""


ByteSource = Callable[[int], AsyncIterator[bytes]]
"""An async byte source: called with the octet offset to start from, yields chunks."""


@dataclass(frozen=True, slots=True)
class OutboundFile:
    """A virtual file to send: a local ``path`` or an async ``source`` plus the SFID attributes.

    ``date``/``time`` default to a fresh unique stamp (:data:`make_timestamp`).  For ``F`` files the
    content is cut into ``lrecl``-octet records; for ``V`` files the content is a sequence of records
    each prefixed with a 2-octet big-endian length (the OFTP2 convention for secured V files).
    ``size`` is required with ``source`` (for SFIDFSIZ); with ``path`` it is read from the file.
    The security fields are passed through to the SFID unchanged (the content must already be
    the CMS envelope when they are set).
    """

    dsn: str
    originator: str
    destination: str
    path: Path | None = None
    source: ByteSource | None = None
    size: int | None = None
    format: RecordFormat = RecordFormat.UNSTRUCTURED
    lrecl: int = 0
    date: str = ""
    time: str = ""
    user_data: str = ""
    description: str = ""
    security: SecurityLevel = SecurityLevel.NONE
    cipher_suite: int = 0
    file_compression: int = 0
    envelope: int = 0
    signed_eerp: bool = False
    original_size: int | None = None
    #: SFIDREST to offer (records for unsecured F and V files, 1 KiB blocks otherwise).  ``None`` =
    #: when restart was negotiated, offer the whole file so the receiver resumes from whatever it
    #: kept of *this* file (it answers 0 if it has nothing); ``0`` = never restart.  A V ``path`` is
    #: counted by walking its length prefixes (one read of the file before SFID); a V ``source`` is
    #: not counted, so it offers only an explicit position (and is read from 0 up to the accepted
    #: record on a restart).
    restart: int | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.source is None):
            raise ValueError("OutboundFile needs exactly one of path= or source=")
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))
        if self.source is not None and self.size is None:
            raise ValueError("OutboundFile.size is required with source=")
        object.__setattr__(self, "format", RecordFormat(self.format))
        if self.format is RecordFormat.FIXED and self.lrecl <= 0:
            raise ValueError("OutboundFile.lrecl must be > 0 for F format")
        if not self.date or not self.time:
            date, time = make_timestamp()
            object.__setattr__(self, "date", self.date or date)
            object.__setattr__(self, "time", self.time or time)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one :class:`OutboundFile`.

    ``sha256`` covers the octets of the virtual file as transmitted (from offset 0, including the
    part a restart skipped, so it always identifies the whole file); ``restart_offset`` is the
    octet position the transfer resumed from (0 for a full transfer; for a V file a position in
    the stored form, length prefixes included, while ``octets_sent`` counts record data only).
    """

    sfid: SFID
    accepted: bool
    octets_sent: int = 0
    sha256: str = ""
    restart_offset: int = 0
    record_count: int = 0
    #: SFNA reason when refused at start, EFNA reason when refused at end (``refused_at``).
    reason: int = 0
    retry: bool = False
    text: str = ""
    refused_at: str = ""  # "", "SFNA" or "EFNA"
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the partner confirmed the file with EFPA."""
        return self.accepted and not self.refused_at


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A file received completely and renamed into its final place."""

    sfid: SFID
    path: Path
    size: int
    sha256: str
    record_count: int = 0
    restart_offset: int = 0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class FileDecision:
    """Answer to an offered file (SFID): accept into ``target`` or refuse with an SFNA code.

    On accept the driver writes ``<target.parent>/.partial/<target.name>``; with ``restart`` (and
    restart negotiated) it resumes from the whole 1 KiB blocks / records already in that partial
    file, up to the offered restart position.
    """

    accepted: bool
    target: Path | None = None
    restart: bool = True
    reason: int = 0
    retry: bool = False
    text: str = ""

    @classmethod
    def accept(cls, target: Path | str, *, restart: bool = True) -> FileDecision:
        """Accept the file; it will be stored as ``target`` once complete."""
        return cls(True, Path(target), restart)

    @classmethod
    def refuse(
        cls, reason: int = SfnaReason.UNSPECIFIED, *, retry: bool = False, text: str = ""
    ) -> FileDecision:
        """Refuse with SFNA ``reason`` (``retry`` = a later attempt may succeed)."""
        return cls(False, None, False, int(reason), retry, text)


@dataclass(frozen=True, slots=True)
class EndFileDecision:
    """Answer to EFID after the counts matched: confirm (EFPA) or refuse with an EFNA code."""

    ok: bool = True
    reason: int = 0
    text: str = ""

    @classmethod
    def confirm(cls) -> EndFileDecision:
        """Confirm the file (EFPA)."""
        return cls(True)

    @classmethod
    def refuse(cls, reason: int = EfnaReason.UNSPECIFIED, text: str = "") -> EndFileDecision:
        """Refuse with EFNA ``reason``."""
        return cls(False, int(reason), text)


OutboundItem = OutboundFile | EERP | NERP
"""Something a Speaker sends: a file, or a receipt."""


def file_key(sfid: SFID) -> tuple[str, str, str, str, str]:
    """The virtual file identity (DSN, date, time, originator, destination) used to match receipts."""
    return sfid.key


def receipt_key(receipt: EERP | NERP) -> tuple[str, str, str, str, str]:
    """The identity of the file an EERP/NERP answers, comparable with :func:`file_key`."""
    return receipt.key


def make_eerp(sfid: SFID, *, own_id: str | None = None, user_data: str = "") -> EERP:
    """Build the unsigned EERP answering ``sfid`` (destination = the file's originator)."""
    return EERP(
        dsn=sfid.dsn,
        date=sfid.date,
        time=sfid.time,
        destination=sfid.originator,
        originator=own_id or sfid.destination,
        user_data=user_data,
    )


def make_nerp(sfid: SFID, reason: int, *, creator: str, text: str = "") -> NERP:
    """Build the unsigned NERP for ``sfid`` created by ``creator`` with NERP ``reason``."""
    return NERP(
        dsn=sfid.dsn,
        date=sfid.date,
        time=sfid.time,
        destination=sfid.originator,
        originator=sfid.destination,
        creator=creator,
        reason=int(reason),
        text=text,
    )


# ---------------------------------------------------------------------------------------------------
# The handler protocol


@runtime_checkable
class SessionHandler(Protocol):
    """Callbacks the drivers await during a session (all optional via :class:`SessionHandlerBase`).

    * ``accept_connection`` — Responder only, after the Initiator's SSID.
    * ``accept_file`` — an SFID arrived: :class:`FileDecision`.
    * ``end_file`` — EFID arrived and counts matched: :class:`EndFileDecision` (before rename).
    * ``file_received`` — the file is complete and in place (after EFPA was sent).
    * ``file_sent`` — a file we sent was confirmed or refused.
    * ``eerp_received`` / ``nerp_received`` — receipts (match with :func:`receipt_key`).
    * ``outbound`` — we hold the turn: what to send now; called again until it returns nothing.
    * ``session_ended`` — always called once at the end.
    """

    async def accept_connection(self, request: ConnectionRequest) -> AcceptDecision:
        """Accept or reject an Initiator (Responder only)."""
        ...

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        """Decide on an offered file."""
        ...

    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        """Final check of a received file before it is confirmed and renamed into place."""
        ...

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        """A file was received completely and confirmed."""
        ...

    async def file_sent(self, result: SendResult, ctx: SessionContext) -> None:
        """A file we sent was confirmed (EFPA) or refused (SFNA/EFNA)."""
        ...

    async def eerp_received(self, eerp: EERP, ctx: SessionContext) -> None:
        """An End-to-End Response arrived."""
        ...

    async def nerp_received(self, nerp: NERP, ctx: SessionContext) -> None:
        """A Negative End Response arrived."""
        ...

    async def outbound(self, ctx: SessionContext) -> Sequence[OutboundItem]:
        """Items to send now that we are the Speaker (empty = nothing more)."""
        ...

    async def session_ended(self, ctx: SessionContext, outcome: SessionOutcome) -> None:
        """The session is over."""
        ...


class SessionHandlerBase:
    """A :class:`SessionHandler` with harmless defaults: accept nothing, send nothing.

    ``accept_connection`` accepts anybody (override it — or configure partners on the server);
    ``accept_file`` refuses with SFNA 14 unless ``inbox`` is set, then accepts into
    ``inbox/<DSN>``.  ``auto_eerp`` queues an EERP for every received file, sent when we next hold
    the turn.
    """

    def __init__(self, inbox: Path | str | None = None, *, auto_eerp: bool = False, own_id: str = "") -> None:
        self.inbox = Path(inbox) if inbox is not None else None
        self.auto_eerp = auto_eerp
        self.own_id = own_id
        self.pending: list[OutboundItem] = []
        self.received: list[ReceivedFile] = []
        self.sent: list[SendResult] = []
        self.eerps: list[EERP] = []
        self.nerps: list[NERP] = []
        self.outcome: SessionOutcome | None = None

    async def accept_connection(self, request: ConnectionRequest) -> AcceptDecision:
        """Accept everybody (servers normally check partners before calling this)."""
        return AcceptDecision.accept()

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        """Accept into ``inbox/<DSN>`` when an inbox is configured."""
        if self.inbox is None:
            return FileDecision.refuse(SfnaReason.FILE_DIRECTION_REFUSED, text="no inbox configured")
        return FileDecision.accept(self.inbox / safe_name(sfid.dsn))

    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        """Confirm every file whose counts matched."""
        return EndFileDecision.confirm()

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        """Record the file and queue its EERP when ``auto_eerp``."""
        self.received.append(received)
        if self.auto_eerp:
            self.pending.append(make_eerp(received.sfid, own_id=self.own_id or None))

    async def file_sent(self, result: SendResult, ctx: SessionContext) -> None:
        """Record the result."""
        self.sent.append(result)

    async def eerp_received(self, eerp: EERP, ctx: SessionContext) -> None:
        """Record the EERP."""
        self.eerps.append(eerp)

    async def nerp_received(self, nerp: NERP, ctx: SessionContext) -> None:
        """Record the NERP."""
        self.nerps.append(nerp)

    async def outbound(self, ctx: SessionContext) -> Sequence[OutboundItem]:
        """Hand out (and forget) everything queued in ``pending``."""
        items, self.pending = self.pending, []
        return items

    async def session_ended(self, ctx: SessionContext, outcome: SessionOutcome) -> None:
        """Remember the outcome."""
        self.outcome = outcome


def safe_name(dsn: str) -> str:
    """A file-system-safe file name for a DSN (path separators and leading dots replaced)."""
    name = "".join(c if (c.isalnum() or c in "-_.()&") else "_" for c in dsn.strip())
    name = name.lstrip(".") or "_"
    return name
