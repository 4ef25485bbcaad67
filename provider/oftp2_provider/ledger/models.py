"""Value types of the transfer ledger: keys, statuses, rows and the ledger's errors.

Everything here is an immutable plain value so it can cross threads, processes and Airflow trigger
events (as ids) without surprises.  The SQL lives in :mod:`oftp2_provider.ledger.store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class Direction(str, Enum):
    """Which way a virtual file travels, seen from this node."""

    INBOUND = "in"
    OUTBOUND = "out"


class TransferStatus(str, Enum):
    """Where a transfer is in its life.

    Outbound: ``queued`` → ``sending`` (claimed by one worker) → ``sent`` (EFPA received, or the
    gateway got SFNA 13 "duplicate" for a re-send: waiting for the EERP) → ``delivered`` (EERP) or
    ``refused`` (SFNA/EFNA without retry, or NERP); ``failed`` when the session broke or the
    partner refused with "retry later" (a failed transfer can be requeued).  A receipt also
    settles a transfer that is ``queued`` again for a re-send.

    Inbound: ``receiving`` (SFID accepted) → ``received`` (EFID accepted, file renamed into place)
    → ``released`` (the local processing decided the EERP/NERP); ``failed`` when the reception
    broke or was refused (a later restart of the same virtual file resumes the same row).
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    REFUSED = "refused"
    FAILED = "failed"
    RECEIVING = "receiving"
    RECEIVED = "received"
    RELEASED = "released"


class ReceiptState(str, Enum):
    """State of the EERP/NERP this node owes for an *inbound* file.

    ``none`` while receiving, ``held`` when the receipt waits for local processing (released later
    with :meth:`Ledger.release_receipt`), ``due`` when the gateway should send it at the next
    chance, ``sent`` once it went out (RTR received).
    """

    NONE = "none"
    HELD = "held"
    DUE = "due"
    SENT = "sent"


class ReceiptKind(str, Enum):
    """End-to-end response kinds."""

    EERP = "EERP"
    NERP = "NERP"


class _KeyFields(Protocol):
    dsn: str
    date: str
    time: str
    originator: str
    destination: str


class _ReceiptFields(Protocol):
    dsn: str
    date: str
    time: str
    originator: str
    destination: str


@dataclass(frozen=True)
class VirtualFileKey:
    """Identity of a virtual file: SFIDDSN + SFIDDATE + SFIDTIME + SFIDORIG + SFIDDEST.

    The values are kept exactly as they appear on the wire (right-trimmed text); an EERP/NERP must
    echo them byte for byte, so they are never re-formatted.
    """

    dsn: str
    date: str
    time: str
    originator: str
    destination: str

    def __post_init__(self) -> None:
        for name in ("dsn", "date", "time", "originator", "destination"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"VirtualFileKey.{name} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise ValueError(f"VirtualFileKey.{name} must not be empty")
            if value != value.strip():
                raise ValueError(f"VirtualFileKey.{name}={value!r} has leading or trailing spaces")

    @classmethod
    def from_sfid(cls, sfid: _KeyFields) -> VirtualFileKey:
        """The key of the file an SFID (or anything with the same five fields) announces."""
        return cls(sfid.dsn, sfid.date, sfid.time, sfid.originator, sfid.destination)

    @classmethod
    def from_receipt(cls, receipt: _ReceiptFields) -> VirtualFileKey:
        """The key of the file an EERP/NERP acknowledges.

        In EERP/NERP the roles are mirrored: the receipt's *destination* is the file's originator
        and the receipt's *originator* is the file's final recipient.
        """
        return cls(receipt.dsn, receipt.date, receipt.time, receipt.destination, receipt.originator)

    def __str__(self) -> str:
        return f"{self.dsn}@{self.date}{self.time} {self.originator}->{self.destination}"


@dataclass(frozen=True)
class Transfer:
    """One row of the ``transfers`` table: a virtual file in one direction.

    Sizes are in octets; ``sha256`` is the hex digest of the local (plain) file.
    ``transmitted_size``/``transmitted_digest`` describe the octets actually sent (after
    signing/compression/encryption) — the EERP hash is computed over those.
    """

    id: int
    direction: Direction
    partner: str
    key: VirtualFileKey
    status: TransferStatus
    local_path: str | None
    size: int | None
    sha256: str | None
    transmitted_size: int | None
    transmitted_digest: str | None
    security_level: int
    cipher_suite: int
    compression: int
    envelope: int
    signed_eerp: bool
    record_format: str
    max_record_length: int
    user_data: str
    description: str
    receipt_state: ReceiptState
    nerp_code: int | None
    nerp_text: str | None
    attempts: int
    restart_offset: int
    worker: str | None
    session_id: str | None
    dispatched: bool
    dispatched_at: str | None
    last_error: str | None
    created_at: str
    updated_at: str

    @property
    def is_final(self) -> bool:
        """True when nothing more will happen to this transfer."""
        if self.direction is Direction.OUTBOUND:
            return self.status in (TransferStatus.DELIVERED, TransferStatus.REFUSED)
        return self.status is TransferStatus.RELEASED or (
            self.status is TransferStatus.RECEIVED and self.receipt_state is ReceiptState.SENT
        )


@dataclass(frozen=True)
class Receipt:
    """One received EERP/NERP, kept verbatim for audit (``receipts`` table)."""

    id: int
    transfer_id: int | None
    key: VirtualFileKey
    kind: ReceiptKind
    raw: bytes
    verification: str
    reason: int | None
    reason_text: str | None
    received_at: str


@dataclass(frozen=True)
class LedgerEvent:
    """One audit-trail entry (``events`` table). ``detail`` is a JSON object."""

    id: int
    transfer_id: int | None
    session_id: str | None
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: str = ""


class LedgerError(Exception):
    """Base class of the ledger's errors."""


class TransferNotFound(LedgerError, KeyError):
    """No transfer with this id (or key)."""

    def __init__(self, what: object) -> None:
        self.what = what
        super().__init__(f"no transfer {what}")

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidTransition(LedgerError):
    """A compare-and-set on the status failed: the transfer is not in a state that allows the change.

    Raised also when another worker changed the row first (the lost race of a compare-and-set).
    """

    def __init__(self, transfer_id: int, action: str, actual: str, allowed: tuple[str, ...]) -> None:
        self.transfer_id = transfer_id
        self.action = action
        self.actual = actual
        self.allowed = allowed
        super().__init__(
            f"transfer {transfer_id}: cannot {action} while status is {actual!r} "
            f"(allowed from: {', '.join(allowed)})"
        )


class KeyConflict(LedgerError):
    """The same virtual-file key was enqueued again with different content (size or SHA-256)."""

    def __init__(self, key: VirtualFileKey, field_name: str, existing: object, new: object) -> None:
        self.key = key
        self.field_name = field_name
        super().__init__(
            f"virtual file {key} already queued with {field_name}={existing!r}, not {new!r}; "
            "a new file needs a new DSN/date/time"
        )


class SchemaError(LedgerError):
    """The database holds a ledger schema this code does not know (newer version) or is broken."""
