"""Commands ⇄ exchange-buffer bytes, one field table per protocol level.

Every command has a layout per *layout family*: ``v13`` (levels 1 and 2, RFC 2204), ``v14`` (level 4,
OFTP 1.4) and ``v20`` (level 5, RFC 5024).  A layout is a tuple of :class:`_Field` entries read and
written in order; the command octet at position 0 is implied.

Encoding is strict: a value that does not fit its field at the session's level raises
:class:`~oftp2_provider.protocol.errors.FieldError` (a 13-digit file size at level 4, a description
below level 5, a NERP below level 4 …).  Nothing is ever truncated.

Decoding is liberal where real peers deviate harmlessly and strict where the protocol has an answer:

* accepted: CR, LF, ``0x8D`` or no terminator at all after SSRM/SSID/ESID; one stray trailing CR/LF
  (or CR LF) after any other command; lower-case flags and alphanumerics; a 1-octet CDT; a space in
  SSID position 47 (read as ``N``); ESID in either the v1 or the v2 layout at every level;
* refused with :class:`~oftp2_provider.protocol.errors.DecodeError`: an unknown command octet
  (or one that does not exist at the level) → ESID 01; a field whose content is invalid (non-digits
  in a numeric field, a bad flag, invalid UTF-8, a value out of range) → ESID 06; a buffer whose
  length differs from the length implied by the command code and its length fields → ESID 07
  (RFC 5024 §5.3.11 defines reason 07 exactly like that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from .commands import (
    CDT,
    COMMAND_TYPES,
    DATA,
    EERP,
    ESID,
    NERP,
    SFID,
    SSID,
    Command,
    ProtocolLevel,
)
from .errors import DecodeError, EsidReason, FieldError

__all__ = [
    "MAX_EXCHANGE_BUFFER",
    "decode",
    "decode_esid",
    "decode_ssid",
    "eerp_signed_content",
    "encode",
    "layout_family",
    "nerp_signed_content",
]

#: Largest exchange buffer any command may have (the STB length limit minus its header).
MAX_EXCHANGE_BUFFER: Final = 99_999
CR: Final = 0x0D
LF: Final = 0x0A
CR_HIGH: Final = 0x8D
_TERMINATORS: Final = frozenset((CR, LF, CR_HIGH))
_STRAY_TAILS: Final = (b"\r", b"\n", b"\x8d", b"\r\n")

_INVALID = EsidReason.COMMAND_CONTAINED_INVALID_DATA
_SIZE = EsidReason.EXCHANGE_BUFFER_SIZE_ERROR
_UNKNOWN = EsidReason.COMMAND_NOT_RECOGNISED

# Field kinds.
_X = "X"  # alphanumeric X(n): left-justified, space padded; decoded right-trimmed
_N = "9"  # numeric 9(n) holding an int
_D = "D"  # numeric 9(n) holding a digit string of exactly n digits (dates, times)
_Y = "Y"  # flag X(1) Y/N holding a bool
_E = "E"  # one-character code X(1) holding a str enum value (SSIDSR, SFIDFMT)
_R = "R"  # reserved X(n): spaces on output, ignored on input
_T = "T"  # 9(3) octet length + UTF-8 text
_U = "U"  # U(2) big-endian length + binary
_B = "B"  # fixed-length binary U(n)
_CR = "CR"  # terminating carriage return (optional on input)


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    kind: str
    width: int = 0


def _f(attr: str, kind: str, width: int = 0) -> _Field:
    return _Field(attr, kind, width)


def _reserved(width: int) -> _Field:
    return _Field("", _R, width)


_TERM = _Field("", _CR, 0)

Layout = tuple[_Field, ...]

_SSRM: Layout = (_f("message", _X, 17), _TERM)


def _ssid_layout(auth: bool) -> Layout:
    middle = (_f("secure_auth", _Y, 1), _reserved(4)) if auth else (_reserved(5),)
    return (
        _f("level", _N, 1),
        _f("code", _X, 25),
        _f("password", _X, 8),
        _f("sdeb", _N, 5),
        _f("send_receive", _E, 1),
        _f("compression", _Y, 1),
        _f("restart", _Y, 1),
        _f("special_logic", _Y, 1),
        _f("credit", _N, 3),
        *middle,
        _f("user_data", _X, 8),
        _TERM,
    )


_FILE_ID_V13: Layout = (
    _f("dsn", _X, 26),
    _reserved(9),
    _f("date", _D, 6),
    _f("time", _D, 6),
    _f("user_data", _X, 8),
    _f("destination", _X, 25),
    _f("originator", _X, 25),
)
_FILE_ID_V14: Layout = (
    _f("dsn", _X, 26),
    _reserved(3),
    _f("date", _D, 8),
    _f("time", _D, 10),
    _f("user_data", _X, 8),
    _f("destination", _X, 25),
    _f("originator", _X, 25),
)
_EERP_V13: Layout = (
    _f("dsn", _X, 26),
    _reserved(9),
    _f("date", _X, 6),
    _f("time", _X, 6),
    _f("user_data", _X, 8),
    _f("destination", _X, 25),
    _f("originator", _X, 25),
)
_NERP_V14: Layout = (
    _f("dsn", _X, 26),
    _reserved(6),
    _f("date", _D, 8),
    _f("time", _D, 10),
    _f("destination", _X, 25),
    _f("originator", _X, 25),
    _f("creator", _X, 25),
    _f("reason", _N, 2),
)
_SFID_TAIL_V1X: Layout = (
    _f("format", _E, 1),
    _f("lrecl", _N, 5),
    _f("file_size", _N, 7),
    _f("restart", _N, 9),
)

#: layout family → command octet → field table (the command octet itself is not listed).
_LAYOUTS: Final[dict[str, dict[bytes, Layout]]] = {
    "v13": {
        b"I": _SSRM,
        b"X": _ssid_layout(auth=False),
        b"H": _FILE_ID_V13 + _SFID_TAIL_V1X,
        b"2": (_f("accepted_restart", _N, 9),),
        b"3": (_f("reason", _N, 2), _f("retry", _Y, 1)),
        b"C": (_reserved(2),),
        b"T": (_f("record_count", _N, 9), _f("unit_count", _N, 12)),
        b"4": (_f("change_direction", _Y, 1),),
        b"5": (_f("reason", _N, 2),),
        b"F": (_f("reason", _N, 2), _TERM),
        b"R": (),
        b"E": _EERP_V13,
        b"P": (),
    },
    "v14": {
        b"I": _SSRM,
        b"X": _ssid_layout(auth=False),
        b"H": _FILE_ID_V14 + _SFID_TAIL_V1X,
        b"2": (_f("accepted_restart", _N, 9),),
        b"3": (_f("reason", _N, 2), _f("retry", _Y, 1)),
        b"C": (_reserved(2),),
        b"T": (_f("record_count", _N, 9), _f("unit_count", _N, 12)),
        b"4": (_f("change_direction", _Y, 1),),
        b"5": (_f("reason", _N, 2),),
        b"F": (_f("reason", _N, 2), _TERM),
        b"R": (),
        b"E": _FILE_ID_V14,
        b"N": _NERP_V14,
        b"P": (),
    },
    "v20": {
        b"I": _SSRM,
        b"X": _ssid_layout(auth=True),
        b"J": (),
        b"A": (_f("challenge", _U),),
        b"S": (_f("response", _B, 20),),
        b"H": (
            *_FILE_ID_V14,
            _f("format", _E, 1),
            _f("lrecl", _N, 5),
            _f("file_size", _N, 13),
            _f("original_size", _N, 13),
            _f("restart", _N, 17),
            _f("security", _N, 2),
            _f("cipher_suite", _N, 2),
            _f("compression", _N, 1),
            _f("envelope", _N, 1),
            _f("signed_eerp", _Y, 1),
            _f("description", _T),
        ),
        b"2": (_f("accepted_restart", _N, 17),),
        b"3": (_f("reason", _N, 2), _f("retry", _Y, 1), _f("text", _T)),
        b"C": (_reserved(2),),
        b"T": (_f("record_count", _N, 17), _f("unit_count", _N, 17)),
        b"4": (_f("change_direction", _Y, 1),),
        b"5": (_f("reason", _N, 2), _f("text", _T)),
        b"F": (_f("reason", _N, 2), _f("text", _T), _TERM),
        b"R": (),
        b"E": (*_FILE_ID_V14, _f("file_hash", _U), _f("signature", _U)),
        b"N": (*_NERP_V14, _f("text", _T), _f("file_hash", _U), _f("signature", _U)),
        b"P": (),
    },
}

_FAMILY: Final[dict[ProtocolLevel, str]] = {
    ProtocolLevel.V1_2: "v13",
    ProtocolLevel.V1_3: "v13",
    ProtocolLevel.V1_4: "v14",
    ProtocolLevel.V2_0: "v20",
}

#: (command, attribute) pairs whose value may be dropped below level 5 without losing information.
_LOSSLESS_DROP: Final = {("SFID", "original_size")}


def layout_family(level: ProtocolLevel | int) -> str:
    """Return the layout family (``"v13"``, ``"v14"`` or ``"v20"``) used at a protocol level."""
    try:
        return _FAMILY[ProtocolLevel(level)]
    except ValueError:
        raise FieldError("SSID", "level", level, "must be 1, 2, 4 or 5") from None


# --------------------------------------------------------------------------------------------------
# encoding


def _encode_field(cmd: str, field: _Field, value: Any, level: int, out: bytearray) -> None:
    kind, width = field.kind, field.width
    if kind == _X:
        text = str(value)
        if len(text) > width:
            raise FieldError(
                cmd, field.attr, value, f"longer than {width} characters at protocol level {level}"
            )
        out += text.encode("ascii").ljust(width, b" ")
    elif kind == _N:
        number = int(value)
        digits = b"%0*d" % (width, number)
        if number < 0 or len(digits) > width:
            raise FieldError(cmd, field.attr, value, f"does not fit {width} digits at protocol level {level}")
        out += digits
    elif kind == _D:
        if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) == width):
            raise FieldError(
                cmd, field.attr, value, f"must be exactly {width} digits at protocol level {level}"
            )
        out += value.encode("ascii")
    elif kind == _Y:
        out += b"Y" if value else b"N"
    elif kind == _E:
        out += str(value.value if isinstance(value, Enum) else value).encode("ascii")
    elif kind == _R:
        out += b" " * width
    elif kind == _T:
        raw = value.encode("utf-8")
        if len(raw) > 999:
            raise FieldError(cmd, field.attr, value, "longer than 999 UTF-8 octets")
        out += b"%03d" % len(raw)
        out += raw
    elif kind == _U:
        if len(value) > 0xFFFF:
            raise FieldError(cmd, field.attr, value, "longer than 65535 octets")
        out += len(value).to_bytes(2, "big")
        out += value
    elif kind == _B:
        if len(value) != width:
            raise FieldError(cmd, field.attr, value, f"must be exactly {width} octets")
        out += value
    else:  # _CR
        out.append(CR)


def _check_absent_fields(command: Command, layout: Layout, level: int) -> None:
    """Refuse values that have no field in this level's layout (never drop information silently)."""
    cmd = type(command).__name__
    present = {f.attr for f in layout}
    for spec in dataclasses.fields(command):
        if spec.name in present:
            continue
        value = getattr(command, spec.name)
        default = spec.default
        if value == default:
            continue
        if (cmd, spec.name) in _LOSSLESS_DROP and isinstance(command, SFID) and value == command.file_size:
            continue
        raise FieldError(cmd, spec.name, value, f"not available at protocol level {level}")


def encode(command: Command, level: ProtocolLevel) -> bytes:
    """Encode ``command`` as an exchange buffer (without Stream Transmission Header) for ``level``.

    SSID is always laid out by its own ``SSIDLEV`` (``command.level``), because the SSID exchange
    happens before a session level exists.  Raises :class:`FieldError` when a value does not fit
    the layout of the level or the command does not exist at that level.
    """
    ident = command.ident
    if isinstance(command, DATA):
        return b"D" + command.payload
    if isinstance(command, SSID):
        level = command.level
    family = layout_family(level)
    layout = _LAYOUTS[family].get(ident)
    name = type(command).__name__
    if layout is None:
        raise FieldError(
            name, "ident", ident.decode(), f"{name} does not exist at protocol level {int(level)}"
        )
    _check_absent_fields(command, layout, int(level))
    out = bytearray(ident)
    for field in layout:
        value = getattr(command, field.attr) if field.attr else None
        _encode_field(name, field, value, int(level), out)
    if len(out) > MAX_EXCHANGE_BUFFER:
        raise FieldError(
            name,
            "length",
            len(out),
            f"the encoded command exceeds the {MAX_EXCHANGE_BUFFER}-octet exchange buffer",
        )
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# decoding


def _fail(reason: EsidReason, message: str) -> DecodeError:
    return DecodeError(message, reason)


class _Reader:
    """Sequential field reader over one exchange buffer."""

    __slots__ = ("buf", "cmd", "pos")

    def __init__(self, buf: bytes, cmd: str) -> None:
        self.buf = buf
        self.cmd = cmd
        self.pos = 1

    def take(self, width: int, what: str) -> bytes:
        end = self.pos + width
        if end > len(self.buf):
            raise _fail(
                _SIZE,
                f"{self.cmd}: buffer of {len(self.buf)} octets ends inside field {what} (needs {end} octets)",
            )
        chunk = self.buf[self.pos : end]
        self.pos = end
        return chunk

    def read(self, field: _Field) -> Any:
        kind, width, attr = field.kind, field.width, field.attr
        where = f"{self.cmd}.{attr}"
        if kind == _X:
            raw = self.take(width, attr)
            try:
                return raw.decode("ascii").rstrip(" ")
            except UnicodeDecodeError:
                shown = "<password>" if attr == "password" else repr(raw)  # never echo a password
                raise _fail(_INVALID, f"{where}: {shown} is not 7-bit ASCII") from None
        if kind == _N:
            raw = self.take(width, attr)
            if not raw.isdigit():
                raise _fail(_INVALID, f"{where}: {raw!r} is not a {width}-digit number")
            return int(raw)
        if kind == _D:
            raw = self.take(width, attr)
            if not raw.isdigit():
                raise _fail(_INVALID, f"{where}: {raw!r} is not {width} digits")
            return raw.decode("ascii")
        if kind == _Y:
            raw = self.take(1, attr).upper()
            if raw == b"Y":
                return True
            if raw == b"N":
                return False
            raise _fail(_INVALID, f"{where}: {raw!r} is neither Y nor N")
        if kind == _E:
            raw = self.take(1, attr).upper()
            return raw.decode("ascii", "replace")
        if kind == _R:
            self.take(width, "reserved")
            return None
        if kind == _T:
            raw = self.take(3, attr + " length")
            if not raw.isdigit():
                raise _fail(_INVALID, f"{where}: length {raw!r} is not a 3-digit number")
            data = self.take(int(raw), attr)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise _fail(_INVALID, f"{where}: text is not valid UTF-8") from None
        if kind == _U:
            size = int.from_bytes(self.take(2, attr + " length"), "big")
            return self.take(size, attr)
        if kind == _B:
            return self.take(width, attr)
        # _CR: optional on input, CR, LF or 0x8D (and CR LF) accepted
        if self.pos < len(self.buf) and self.buf[self.pos] in _TERMINATORS:
            self.pos += 1
            if self.buf[self.pos - 1] == CR and self.buf[self.pos : self.pos + 1] == b"\n":
                self.pos += 1
        return None

    def finish(self) -> None:
        rest = self.buf[self.pos :]
        if rest and rest not in _STRAY_TAILS:
            raise _fail(
                _SIZE,
                f"{self.cmd}: buffer is {len(self.buf)} octets, the command implies {self.pos}",
            )


def _build(cls: type[Command], kwargs: dict[str, Any]) -> Command:
    try:
        return cls(**kwargs)
    except ValueError as exc:  # FieldError is a ValueError; so are bad enum values
        raise _fail(_INVALID, f"{cls.__name__}: {exc}") from None


def _decode_layout(buf: bytes, cls: type[Command], layout: Layout) -> Command:
    reader = _Reader(buf, cls.__name__)
    kwargs: dict[str, Any] = {}
    for field in layout:
        value = reader.read(field)
        if field.attr:
            kwargs[field.attr] = value
    reader.finish()
    return _build(cls, kwargs)


def decode_ssid(buffer: bytes | memoryview) -> SSID:
    """Decode an SSID at any level (61 octets everywhere; the terminator may be CR, LF, 0x8D or absent).

    Position 47 is SSIDAUTH at level 5 and reserved below; a space there reads as ``N``.  An SSIDLEV
    that is a digit but not a level this implementation knows (0, 3, 6–9) raises
    :class:`DecodeError` with reason 10 (mode or capabilities incompatible).
    """
    buf = bytes(buffer)
    if buf[:1] != b"X":
        raise _fail(_UNKNOWN, f"not an SSID: command octet {buf[:1]!r}")
    level_octet = buf[1:2]
    if level_octet.isdigit() and int(level_octet) not in (1, 2, 4, 5):
        raise _fail(
            EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
            f"SSID.level: protocol level {level_octet.decode()} is not supported",
        )
    below_v2 = level_octet.isdigit() and int(level_octet) < 5
    if len(buf) > 47 and (below_v2 or buf[47:48] == b" "):
        # position 47 is reserved below level 5 (content ignored); a space there reads as N
        buf = buf[:47] + b"N" + buf[48:]
    result = _decode_layout(buf, SSID, _ssid_layout(auth=True))
    assert isinstance(result, SSID)
    return result


def decode_esid(buffer: bytes | memoryview) -> ESID:
    """Decode an ESID in either layout: ``F`` + reason (+ CR), or ``F`` + reason + 9(3) length + text (+ CR).

    ESIDs are sent before the session level is settled (for example to refuse an SSID), so both the
    v1 and the v2 layout are accepted at every level; the terminator may be CR, LF, 0x8D or absent.
    """
    buf = bytes(buffer)
    if buf[:1] != b"F":
        raise _fail(_UNKNOWN, f"not an ESID: command octet {buf[:1]!r}")
    reader = _Reader(buf, "ESID")
    reason = reader.read(_f("reason", _N, 2))
    text = ""
    if reader.pos < len(buf) and buf[reader.pos] not in _TERMINATORS:
        text = reader.read(_f("text", _T))
    reader.read(_TERM)
    reader.finish()
    result = _build(ESID, {"reason": reason, "text": text})
    assert isinstance(result, ESID)
    return result


def _decode_cdt(buf: bytes) -> CDT:
    # CDTRSV1 is reserved; some peers omit it (1-octet CDT). Its content is ignored.
    if len(buf) <= 3 or (len(buf) == 4 and buf[3] in _TERMINATORS):
        return CDT()
    raise _fail(_SIZE, f"CDT: buffer is {len(buf)} octets, the command implies 3")


def decode(buffer: bytes | memoryview, level: ProtocolLevel) -> Command:
    """Decode one exchange buffer (without Stream Transmission Header) received at ``level``.

    Raises :class:`DecodeError` whose ``reason`` is the ESID code to answer with: 01 for an unknown
    command octet (or a command that does not exist at ``level``), 06 for invalid field content,
    07 for a buffer length that differs from the length the command implies.
    """
    if not buffer:
        raise _fail(_SIZE, "empty exchange buffer")
    if len(buffer) > MAX_EXCHANGE_BUFFER:
        raise _fail(_SIZE, f"exchange buffer of {len(buffer)} octets exceeds {MAX_EXCHANGE_BUFFER}")
    ident = bytes(buffer[:1])
    if ident == b"D":
        return DATA(bytes(buffer[1:]))
    cls = COMMAND_TYPES.get(ident)
    if cls is None:
        raise _fail(_UNKNOWN, f"unknown command octet {ident!r}")
    if cls is SSID:
        return decode_ssid(buffer)
    if cls is ESID:
        return decode_esid(buffer)
    buf = bytes(buffer)
    if cls is CDT:
        return _decode_cdt(buf)
    family = layout_family(level)
    layout = _LAYOUTS[family].get(ident)
    if layout is None:
        raise _fail(
            _UNKNOWN, f"command {cls.__name__} ({ident!r}) does not exist at protocol level {int(level)}"
        )
    return _decode_layout(buf, cls, layout)


# --------------------------------------------------------------------------------------------------
# signed content of end-to-end responses (RFC 5024 §5.3.13, §5.3.14)


def _x(value: str, width: int) -> bytes:
    return value.encode("ascii").ljust(width, b" ")


def eerp_signed_content(eerp: EERP) -> bytes:
    """Octets covered by an EERP signature: ``DSN(26)|DATE(8)|TIME(10)|DEST(25)|ORIG(25)|HSH``."""
    return (
        _x(eerp.dsn, 26)
        + _x(eerp.date, 8)
        + _x(eerp.time, 10)
        + _x(eerp.destination, 25)
        + _x(eerp.originator, 25)
        + eerp.file_hash
    )


def nerp_signed_content(nerp: NERP) -> bytes:
    """Octets covered by a NERP signature: ``DSN(26)|DATE(8)|TIME(10)|DEST(25)|ORIG(25)|CREA(25)|HSH``."""
    return (
        _x(nerp.dsn, 26)
        + _x(nerp.date, 8)
        + _x(nerp.time, 10)
        + _x(nerp.destination, 25)
        + _x(nerp.originator, 25)
        + _x(nerp.creator, 25)
        + nerp.file_hash
    )
