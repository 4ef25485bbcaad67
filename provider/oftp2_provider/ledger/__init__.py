"""The transfer ledger: durable state of OFTP2 transfers, receipts and audit events in SQL.

Works on any Airflow SQL connection through common-sql's ``DbApiHook`` (SQLite by default,
PostgreSQL in production)::

    from oftp2_provider.ledger import Ledger, VirtualFileKey

    ledger = Ledger.from_sqlite("/var/lib/oftp2/ledger.db")
    key = VirtualFileKey("INVOICE42", "20260101", "1200000001", "O0013000000ME", "O0013000000YOU")
    ledger.enqueue_outbound("O0013000000YOU", key, "/data/out/inv42", 1024, sha256_hex)
    transfer = ledger.claim_outbound("O0013000000YOU", worker="gw-1")
"""

from .aio import AsyncLedger
from .models import (
    Direction,
    InvalidTransition,
    KeyConflict,
    LedgerError,
    LedgerEvent,
    Receipt,
    ReceiptKind,
    ReceiptState,
    SchemaError,
    Transfer,
    TransferNotFound,
    TransferStatus,
    VirtualFileKey,
)
from .store import TRANSITIONS, Ledger

__all__ = [
    "TRANSITIONS",
    "AsyncLedger",
    "Direction",
    "InvalidTransition",
    "KeyConflict",
    "Ledger",
    "LedgerError",
    "LedgerEvent",
    "Receipt",
    "ReceiptKind",
    "ReceiptState",
    "SchemaError",
    "Transfer",
    "TransferNotFound",
    "TransferStatus",
    "VirtualFileKey",
]
