"""Reason codes (RFC 5024 §5.3) and the error types of the protocol core.

Two error families say whose fault a failure is, each carrying the answer to give the peer:

* :class:`LocalProtocolError` — our own caller asked for something the protocol forbids
  (an oversize field, a command in the wrong state).  Nothing has been sent.
* :class:`RemoteProtocolError` — the peer sent something unacceptable.  ``reason`` is the ESID
  reason code the session answers with.
"""

from __future__ import annotations

from enum import IntEnum


class EsidReason(IntEnum):
    """ESIDREAS — why a session ends (RFC 5024 §5.3.11)."""

    NORMAL = 0
    COMMAND_NOT_RECOGNISED = 1
    PROTOCOL_VIOLATION = 2
    USER_CODE_NOT_KNOWN = 3
    INVALID_PASSWORD = 4
    LOCAL_SITE_EMERGENCY_CLOSE_DOWN = 5
    COMMAND_CONTAINED_INVALID_DATA = 6
    EXCHANGE_BUFFER_SIZE_ERROR = 7
    RESOURCES_NOT_AVAILABLE = 8
    TIME_OUT = 9
    MODE_OR_CAPABILITIES_INCOMPATIBLE = 10
    INVALID_CHALLENGE_RESPONSE = 11
    SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE = 12
    UNSPECIFIED = 99


class SfnaReason(IntEnum):
    """SFNAREAS — why a file is refused at start (RFC 5024 §5.3.5)."""

    INVALID_FILENAME = 1
    INVALID_DESTINATION = 2
    INVALID_ORIGIN = 3
    RECORD_FORMAT_NOT_SUPPORTED = 4
    MAXIMUM_RECORD_LENGTH_NOT_SUPPORTED = 5
    FILE_SIZE_TOO_BIG = 6
    INVALID_RECORD_COUNT = 10
    INVALID_BYTE_COUNT = 11
    ACCESS_METHOD_FAILURE = 12
    DUPLICATE_FILE = 13
    FILE_DIRECTION_REFUSED = 14
    CIPHER_SUITE_NOT_SUPPORTED = 15
    ENCRYPTED_FILE_NOT_ALLOWED = 16
    UNENCRYPTED_FILE_NOT_ALLOWED = 17
    COMPRESSION_NOT_ALLOWED = 18
    SIGNED_FILE_NOT_ALLOWED = 19
    UNSIGNED_FILE_NOT_ALLOWED = 20
    UNSPECIFIED = 99


class EfnaReason(IntEnum):
    """EFNAREAS — why a file is refused at its end (RFC 5024 §5.3.10): the SFNA codes plus 21–23."""

    INVALID_FILENAME = 1
    INVALID_DESTINATION = 2
    INVALID_ORIGIN = 3
    RECORD_FORMAT_NOT_SUPPORTED = 4
    MAXIMUM_RECORD_LENGTH_NOT_SUPPORTED = 5
    FILE_SIZE_TOO_BIG = 6
    INVALID_RECORD_COUNT = 10
    INVALID_BYTE_COUNT = 11
    ACCESS_METHOD_FAILURE = 12
    DUPLICATE_FILE = 13
    FILE_DIRECTION_REFUSED = 14
    CIPHER_SUITE_NOT_SUPPORTED = 15
    ENCRYPTED_FILE_NOT_ALLOWED = 16
    UNENCRYPTED_FILE_NOT_ALLOWED = 17
    COMPRESSION_NOT_ALLOWED = 18
    SIGNED_FILE_NOT_ALLOWED = 19
    UNSIGNED_FILE_NOT_ALLOWED = 20
    INVALID_FILE_SIGNATURE = 21
    FILE_DECRYPTION_FAILURE = 22
    FILE_DECOMPRESSION_FAILURE = 23
    UNSPECIFIED = 99


class NerpReason(IntEnum):
    """NERPREAS — why a delivered file was not processed (RFC 5024 §5.3.14)."""

    ESID_USER_CODE_NOT_KNOWN = 3
    ESID_INVALID_PASSWORD = 4
    ESID_UNSPECIFIED = 9
    INVALID_FILE_NAME = 11
    INVALID_DESTINATION = 12
    INVALID_ORIGIN = 13
    INVALID_STORAGE_RECORD_FORMAT = 14
    MAXIMUM_RECORD_LENGTH_NOT_SUPPORTED = 15
    FILE_SIZE_TOO_BIG = 16
    INVALID_RECORD_COUNT = 20
    INVALID_BYTE_COUNT = 21
    ACCESS_METHOD_FAILURE = 22
    DUPLICATE_FILE = 23
    FILE_DIRECTION_REFUSED = 24
    CIPHER_SUITE_NOT_SUPPORTED = 25
    ENCRYPTED_FILE_NOT_ALLOWED = 26
    UNENCRYPTED_FILE_NOT_ALLOWED = 27
    COMPRESSION_NOT_ALLOWED = 28
    SIGNED_FILE_NOT_ALLOWED = 29
    UNSIGNED_FILE_NOT_ALLOWED = 30
    FILE_SIGNATURE_NOT_VALID = 31
    FILE_DECOMPRESSION_FAILED = 32
    FILE_DECRYPTION_FAILED = 33
    FILE_PROCESSING_FAILED = 34
    NOT_DELIVERED_TO_RECIPIENT = 35
    NOT_ACKNOWLEDGED_BY_RECIPIENT = 36
    TRANSMISSION_STOPPED_BY_OPERATOR = 50
    FILE_SIZE_INCOMPATIBLE_WITH_PROTOCOL_VERSION = 90
    UNSPECIFIED = 99


def nerp_for_refusal(code: int) -> int:
    """Map a final SFNA/EFNA code (01–20) to the NERP code an intermediate node sends (code + 10)."""
    if 1 <= code <= 20:
        return code + 10
    return int(NerpReason.UNSPECIFIED)


class OFTPError(Exception):
    """Base class of every error raised by the protocol core."""


class FieldError(OFTPError, ValueError):
    """A command field does not fit its RFC format (raised when building or encoding a command)."""

    def __init__(self, command: str, field: str, value: object, problem: str) -> None:
        self.command = command
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{command}.{field}={value!r}: {problem}")


class ProtocolError(OFTPError):
    """A protocol rule was broken; ``reason`` is the ESID code that ends the session."""

    def __init__(self, message: str, reason: EsidReason = EsidReason.PROTOCOL_VIOLATION) -> None:
        self.reason = reason
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """Our caller asked for something the protocol does not allow in this state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something unacceptable; answer it with ESID ``reason``."""


class DecodeError(RemoteProtocolError):
    """Bytes from the peer could not be decoded (ESID 01, 06 or 07)."""


class SessionRejected(OFTPError):
    """The peer ended the session with a non-zero ESID reason."""

    def __init__(self, reason: int, text: str = "") -> None:
        self.reason = reason
        self.text = text
        try:
            name = EsidReason(reason).name.replace("_", " ").lower()
        except ValueError:
            name = "unknown reason"
        detail = f": {text}" if text else ""
        super().__init__(f"ESID {reason:02d} ({name}){detail}")
