"""OFTP commands as typed, immutable, self-validating objects.

Field values are the *logical* values (text right-trimmed, numbers as ``int``); the per-level wire
layouts live in :mod:`oftp2_provider.protocol.codec`.  Validation here covers what holds at every
protocol level; the codec adds the level-specific width checks (for example a 13-digit file size
that does not fit the 7 digits of OFTP 1.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import ClassVar

from .errors import FieldError

#: Characters allowed in ``X(n)`` fields by the RFC.  Decoding is liberal (lower case is accepted);
#: building commands checks only printable 7-bit ASCII so that partners' real-world IDs still work.
_PRINTABLE_ASCII = frozenset(range(0x20, 0x7F))


class ProtocolLevel(IntEnum):
    """SSIDLEV values."""

    V1_2 = 1  # OFTP 1.2, and RFC 2204 implementations of 1.3
    V1_3 = 2
    V1_4 = 4
    V2_0 = 5


class SendReceive(str, Enum):
    """SSIDSR: what this side can do in the session."""

    SEND = "S"
    RECEIVE = "R"
    BOTH = "B"


class RecordFormat(str, Enum):
    """SFIDFMT."""

    FIXED = "F"
    VARIABLE = "V"
    UNSTRUCTURED = "U"
    TEXT = "T"


class SecurityLevel(IntEnum):
    """SFIDSEC."""

    NONE = 0
    ENCRYPTED = 1
    SIGNED = 2
    ENCRYPTED_AND_SIGNED = 3


def _text(
    cmd: str, field: str, value: str, width: int, *, allow_empty: bool = True, secret: bool = False
) -> None:
    # A secret (the SSID password) is never echoed in the error: only its length is shown.
    shown: object = f"<{len(value)} characters>" if secret and isinstance(value, str) else value
    if not isinstance(value, str):
        raise FieldError(cmd, field, "<not a string>" if secret else value, "must be a string")
    data = value.encode("ascii", "replace")
    if len(value) > width:
        raise FieldError(cmd, field, shown, f"longer than {width} characters")
    if not value.isascii() or any(b not in _PRINTABLE_ASCII for b in data):
        raise FieldError(cmd, field, shown, "only printable 7-bit ASCII is allowed")
    if not allow_empty and not value.strip():
        raise FieldError(cmd, field, shown, "must not be empty")


def _number(cmd: str, field: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(cmd, field, value, "must be an integer")
    if not low <= value <= high:
        raise FieldError(cmd, field, value, f"must be between {low} and {high}")


def _utf8(cmd: str, field: str, value: str, limit: int = 999) -> None:
    if not isinstance(value, str):
        raise FieldError(cmd, field, value, "must be a string")
    if len(value.encode("utf-8")) > limit:
        raise FieldError(cmd, field, value, f"longer than {limit} UTF-8 octets")


def _binary(cmd: str, field: str, value: bytes, limit: int = 0xFFFF) -> None:
    if not isinstance(value, bytes):
        raise FieldError(cmd, field, value, "must be bytes")
    if len(value) > limit:
        raise FieldError(cmd, field, value, f"longer than {limit} octets")


@dataclass(frozen=True, slots=True)
class SSRM:
    """Start Session Ready Message (Responder → Initiator)."""

    ident: ClassVar[bytes] = b"I"
    message: str = "ODETTE FTP READY"


@dataclass(frozen=True, slots=True)
class SSID:
    """Start Session: identification and capability proposal/answer."""

    ident: ClassVar[bytes] = b"X"
    level: ProtocolLevel
    code: str
    password: str = field(repr=False)
    sdeb: int
    send_receive: SendReceive = SendReceive.BOTH
    compression: bool = False
    restart: bool = False
    special_logic: bool = False
    credit: int = 999
    secure_auth: bool = False
    user_data: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.level, ProtocolLevel):
            try:
                object.__setattr__(self, "level", ProtocolLevel(self.level))
            except ValueError:
                raise FieldError("SSID", "level", self.level, "must be 1, 2, 4 or 5") from None
        _text("SSID", "code", self.code, 25, allow_empty=False)
        _text("SSID", "password", self.password, 8, secret=True)
        _number("SSID", "sdeb", self.sdeb, 128, 99999)
        try:
            object.__setattr__(self, "send_receive", SendReceive(self.send_receive))
        except ValueError:
            raise FieldError("SSID", "send_receive", self.send_receive, "must be S, R or B") from None
        _number("SSID", "credit", self.credit, 1, 999)
        _text("SSID", "user_data", self.user_data, 8)


@dataclass(frozen=True, slots=True)
class SECD:
    """Security Change Direction."""

    ident: ClassVar[bytes] = b"J"


@dataclass(frozen=True, slots=True)
class AUCH:
    """Authentication Challenge: a DER CMS EnvelopedData holding 20 random octets."""

    ident: ClassVar[bytes] = b"A"
    challenge: bytes

    def __post_init__(self) -> None:
        _binary("AUCH", "challenge", self.challenge)


@dataclass(frozen=True, slots=True)
class AURP:
    """Authentication Response: the decrypted 20-octet challenge."""

    ident: ClassVar[bytes] = b"S"
    response: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.response, bytes) or len(self.response) != 20:
            raise FieldError("AURP", "response", self.response, "must be exactly 20 octets")


@dataclass(frozen=True, slots=True)
class SFID:
    """Start File.  Sizes are in 1 KiB blocks; ``restart`` is a record number or a 1 KiB block offset."""

    ident: ClassVar[bytes] = b"H"
    dsn: str
    date: str
    time: str
    destination: str
    originator: str
    format: RecordFormat = RecordFormat.UNSTRUCTURED
    lrecl: int = 0
    file_size: int = 0
    original_size: int = 0
    restart: int = 0
    user_data: str = ""
    security: SecurityLevel = SecurityLevel.NONE
    cipher_suite: int = 0
    compression: int = 0
    envelope: int = 0
    signed_eerp: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        _text("SFID", "dsn", self.dsn, 26, allow_empty=False)
        if not (self.date.isdigit() and len(self.date) in (6, 8)):
            raise FieldError("SFID", "date", self.date, "must be CCYYMMDD (or YYMMDD below level 4)")
        if not (self.time.isdigit() and len(self.time) in (6, 10)):
            raise FieldError("SFID", "time", self.time, "must be HHMMSScccc (or HHMMSS below level 4)")
        _text("SFID", "destination", self.destination, 25, allow_empty=False)
        _text("SFID", "originator", self.originator, 25, allow_empty=False)
        _text("SFID", "user_data", self.user_data, 8)
        try:
            object.__setattr__(self, "format", RecordFormat(self.format))
        except ValueError:
            raise FieldError("SFID", "format", self.format, "must be F, V, U or T") from None
        _number("SFID", "lrecl", self.lrecl, 0, 99999)
        _number("SFID", "file_size", self.file_size, 0, 9_999_999_999_999)
        _number("SFID", "original_size", self.original_size, 0, 9_999_999_999_999)
        _number("SFID", "restart", self.restart, 0, 99_999_999_999_999_999)
        try:
            object.__setattr__(self, "security", SecurityLevel(self.security))
        except ValueError:
            raise FieldError("SFID", "security", self.security, "must be 00, 01, 02 or 03") from None
        _number("SFID", "cipher_suite", self.cipher_suite, 0, 99)
        _number("SFID", "compression", self.compression, 0, 9)
        _number("SFID", "envelope", self.envelope, 0, 9)
        _utf8("SFID", "description", self.description)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """The virtual-file identity: (DSN, date, time, originator, destination)."""
        return (self.dsn, self.date, self.time, self.originator, self.destination)


@dataclass(frozen=True, slots=True)
class SFPA:
    """Start File Positive Answer; ``accepted_restart`` ≤ the SFID's restart position."""

    ident: ClassVar[bytes] = b"2"
    accepted_restart: int = 0

    def __post_init__(self) -> None:
        _number("SFPA", "accepted_restart", self.accepted_restart, 0, 99_999_999_999_999_999)


@dataclass(frozen=True, slots=True)
class SFNA:
    """Start File Negative Answer."""

    ident: ClassVar[bytes] = b"3"
    reason: int
    retry: bool = False
    text: str = ""

    def __post_init__(self) -> None:
        _number("SFNA", "reason", int(self.reason), 0, 99)
        _utf8("SFNA", "text", self.text)


@dataclass(frozen=True, slots=True)
class DATA:
    """Data Exchange Buffer; ``payload`` is everything after the ``D`` octet (subrecord headers included)."""

    ident: ClassVar[bytes] = b"D"
    payload: bytes

    def __post_init__(self) -> None:
        _binary("DATA", "payload", self.payload, 99998)


@dataclass(frozen=True, slots=True)
class CDT:
    """Set Credit."""

    ident: ClassVar[bytes] = b"C"


@dataclass(frozen=True, slots=True)
class EFID:
    """End File: exact record count (F/V) and octet count of the whole virtual file."""

    ident: ClassVar[bytes] = b"T"
    record_count: int = 0
    unit_count: int = 0

    def __post_init__(self) -> None:
        _number("EFID", "record_count", self.record_count, 0, 99_999_999_999_999_999)
        _number("EFID", "unit_count", self.unit_count, 0, 99_999_999_999_999_999)


@dataclass(frozen=True, slots=True)
class EFPA:
    """End File Positive Answer; ``change_direction`` asks the Speaker for the turn."""

    ident: ClassVar[bytes] = b"4"
    change_direction: bool = False


@dataclass(frozen=True, slots=True)
class EFNA:
    """End File Negative Answer."""

    ident: ClassVar[bytes] = b"5"
    reason: int
    text: str = ""

    def __post_init__(self) -> None:
        _number("EFNA", "reason", int(self.reason), 0, 99)
        _utf8("EFNA", "text", self.text)


@dataclass(frozen=True, slots=True)
class ESID:
    """End Session."""

    ident: ClassVar[bytes] = b"F"
    reason: int = 0
    text: str = ""

    def __post_init__(self) -> None:
        _number("ESID", "reason", int(self.reason), 0, 99)
        _utf8("ESID", "text", self.text)


@dataclass(frozen=True, slots=True)
class CD:
    """Change Direction."""

    ident: ClassVar[bytes] = b"R"


@dataclass(frozen=True, slots=True)
class EERP:
    """End to End Response.  ``destination`` is the file's originator, ``originator`` its final recipient."""

    ident: ClassVar[bytes] = b"E"
    dsn: str
    date: str
    time: str
    destination: str
    originator: str
    user_data: str = ""
    file_hash: bytes = b""
    signature: bytes = b""

    def __post_init__(self) -> None:
        _text("EERP", "dsn", self.dsn, 26, allow_empty=False)
        _text("EERP", "date", self.date, 8)
        _text("EERP", "time", self.time, 10)
        _text("EERP", "destination", self.destination, 25, allow_empty=False)
        _text("EERP", "originator", self.originator, 25, allow_empty=False)
        _text("EERP", "user_data", self.user_data, 8)
        _binary("EERP", "file_hash", self.file_hash)
        _binary("EERP", "signature", self.signature)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """The acknowledged file's identity: (DSN, date, time, file originator, file destination)."""
        return (self.dsn, self.date, self.time, self.destination, self.originator)


@dataclass(frozen=True, slots=True)
class NERP:
    """Negative End Response (level ≥ 4)."""

    ident: ClassVar[bytes] = b"N"
    dsn: str
    date: str
    time: str
    destination: str
    originator: str
    creator: str
    reason: int
    text: str = ""
    file_hash: bytes = b""
    signature: bytes = b""

    def __post_init__(self) -> None:
        _text("NERP", "dsn", self.dsn, 26, allow_empty=False)
        _text("NERP", "date", self.date, 8)
        _text("NERP", "time", self.time, 10)
        _text("NERP", "destination", self.destination, 25, allow_empty=False)
        _text("NERP", "originator", self.originator, 25, allow_empty=False)
        _text("NERP", "creator", self.creator, 25, allow_empty=False)
        _number("NERP", "reason", int(self.reason), 0, 99)
        _utf8("NERP", "text", self.text)
        _binary("NERP", "file_hash", self.file_hash)
        _binary("NERP", "signature", self.signature)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """The refused file's identity: (DSN, date, time, file originator, file destination)."""
        return (self.dsn, self.date, self.time, self.destination, self.originator)


@dataclass(frozen=True, slots=True)
class RTR:
    """Ready To Receive."""

    ident: ClassVar[bytes] = b"P"


Command = (
    SSRM
    | SSID
    | SECD
    | AUCH
    | AURP
    | SFID
    | SFPA
    | SFNA
    | DATA
    | CDT
    | EFID
    | EFPA
    | EFNA
    | ESID
    | CD
    | EERP
    | NERP
    | RTR
)

COMMAND_TYPES: dict[bytes, type[Command]] = {
    cls.ident: cls
    for cls in (
        SSRM,
        SSID,
        SECD,
        AUCH,
        AURP,
        SFID,
        SFPA,
        SFNA,
        DATA,
        CDT,
        EFID,
        EFPA,
        EFNA,
        ESID,
        CD,
        EERP,
        NERP,
        RTR,
    )
}
