"""``AsyncLedger``: the ledger's methods as coroutines that never block the event loop.

Every call runs the synchronous :class:`~oftp2_provider.ledger.store.Ledger` method in a worker
thread (``asyncio.to_thread``), so a gateway's or Airflow triggerer's loop keeps serving other
sessions and triggers while the database works.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from .models import Direction, LedgerEvent, Receipt, ReceiptKind, Transfer, TransferStatus, VirtualFileKey
from .store import Ledger

_TransferList = list[Transfer]
_ReceiptList = list[Receipt]
_EventList = list[LedgerEvent]


class AsyncLedger:
    """Async twin of :class:`Ledger`: the same methods and arguments, awaited.

    >>> ledger = AsyncLedger(Ledger.from_sqlite("/var/lib/oftp2/ledger.db"))  # doctest: +SKIP
    >>> transfer = await ledger.claim_outbound("O0013000000PARTNER", "gw-1")  # doctest: +SKIP
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def migrate(self) -> int:
        """See :meth:`Ledger.migrate`."""
        return await asyncio.to_thread(self.ledger.migrate)

    async def close(self) -> None:
        """See :meth:`Ledger.close`."""
        await asyncio.to_thread(self.ledger.close)

    async def enqueue_outbound(
        self,
        partner: str,
        key: VirtualFileKey,
        path: str | os.PathLike[str],
        size: int,
        sha256: str,
        **flags: Any,
    ) -> Transfer:
        """See :meth:`Ledger.enqueue_outbound` (flags as keyword arguments)."""
        return await asyncio.to_thread(
            self.ledger.enqueue_outbound, partner, key, path, size, sha256, **flags
        )

    async def claim_outbound(
        self, partner: str, worker: str, *, session_id: str | None = None
    ) -> Transfer | None:
        """See :meth:`Ledger.claim_outbound`."""
        return await asyncio.to_thread(self.ledger.claim_outbound, partner, worker, session_id=session_id)

    async def mark_sent(
        self,
        transfer_id: int,
        *,
        transmitted_size: int | None = None,
        transmitted_digest: str | None = None,
        worker: str | None = None,
        session_id: str | None = None,
    ) -> Transfer:
        """See :meth:`Ledger.mark_sent`."""
        return await asyncio.to_thread(
            self.ledger.mark_sent,
            transfer_id,
            transmitted_size=transmitted_size,
            transmitted_digest=transmitted_digest,
            worker=worker,
            session_id=session_id,
        )

    async def mark_delivered(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """See :meth:`Ledger.mark_delivered`."""
        return await asyncio.to_thread(self.ledger.mark_delivered, transfer_id, session_id=session_id)

    async def mark_refused(
        self, transfer_id: int, reason: int, text: str = "", *, session_id: str | None = None
    ) -> Transfer:
        """See :meth:`Ledger.mark_refused`."""
        return await asyncio.to_thread(
            self.ledger.mark_refused, transfer_id, reason, text, session_id=session_id
        )

    async def mark_failed(
        self,
        transfer_id: int,
        error: str,
        *,
        retry: bool = False,
        restart_offset: int | None = None,
        worker: str | None = None,
        session_id: str | None = None,
    ) -> Transfer:
        """See :meth:`Ledger.mark_failed`."""
        return await asyncio.to_thread(
            self.ledger.mark_failed,
            transfer_id,
            error,
            retry=retry,
            restart_offset=restart_offset,
            worker=worker,
            session_id=session_id,
        )

    async def requeue(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """See :meth:`Ledger.requeue`."""
        return await asyncio.to_thread(self.ledger.requeue, transfer_id, session_id=session_id)

    async def requeue_stale(self, older_than: timedelta, *, partner: str | None = None) -> _TransferList:
        """See :meth:`Ledger.requeue_stale`."""
        return await asyncio.to_thread(self.ledger.requeue_stale, older_than, partner=partner)

    async def set_restart_offset(
        self, transfer_id: int, offset: int, *, session_id: str | None = None
    ) -> Transfer:
        """See :meth:`Ledger.set_restart_offset`."""
        return await asyncio.to_thread(
            self.ledger.set_restart_offset, transfer_id, offset, session_id=session_id
        )

    async def begin_inbound(self, partner: str, key: VirtualFileKey, **flags: Any) -> tuple[Transfer, bool]:
        """See :meth:`Ledger.begin_inbound` (flags as keyword arguments)."""
        return await asyncio.to_thread(self.ledger.begin_inbound, partner, key, **flags)

    async def complete_inbound(
        self,
        transfer_id: int,
        path: str | os.PathLike[str],
        size: int,
        sha256: str,
        *,
        hold_receipt: bool = False,
        transmitted_size: int | None = None,
        transmitted_digest: str | None = None,
        session_id: str | None = None,
        guard_session: bool = False,
    ) -> Transfer:
        """See :meth:`Ledger.complete_inbound`."""
        return await asyncio.to_thread(
            self.ledger.complete_inbound,
            transfer_id,
            path,
            size,
            sha256,
            hold_receipt=hold_receipt,
            transmitted_size=transmitted_size,
            transmitted_digest=transmitted_digest,
            session_id=session_id,
            guard_session=guard_session,
        )

    async def fail_inbound(
        self,
        transfer_id: int,
        error: str,
        *,
        restart_offset: int = 0,
        refusal_code: int | None = None,
        session_id: str | None = None,
        guard_session: bool = False,
    ) -> Transfer:
        """See :meth:`Ledger.fail_inbound`."""
        return await asyncio.to_thread(
            self.ledger.fail_inbound,
            transfer_id,
            error,
            restart_offset=restart_offset,
            refusal_code=refusal_code,
            session_id=session_id,
            guard_session=guard_session,
        )

    async def release_receipt(
        self,
        transfer_id: int,
        ok: bool = True,
        *,
        nerp_code: int | None = None,
        text: str | None = None,
        session_id: str | None = None,
    ) -> Transfer:
        """See :meth:`Ledger.release_receipt`."""
        return await asyncio.to_thread(
            self.ledger.release_receipt,
            transfer_id,
            ok,
            nerp_code=nerp_code,
            text=text,
            session_id=session_id,
        )

    async def receipts_to_send(self, partner: str) -> _TransferList:
        """See :meth:`Ledger.receipts_to_send`."""
        return await asyncio.to_thread(self.ledger.receipts_to_send, partner)

    async def mark_receipt_sent(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """See :meth:`Ledger.mark_receipt_sent`."""
        return await asyncio.to_thread(self.ledger.mark_receipt_sent, transfer_id, session_id=session_id)

    async def resend_receipt(self, transfer_id: int, *, session_id: str | None = None) -> Transfer:
        """See :meth:`Ledger.resend_receipt`."""
        return await asyncio.to_thread(self.ledger.resend_receipt, transfer_id, session_id=session_id)

    async def claim_receipts(
        self,
        partner: str,
        worker: str,
        *,
        limit: int = 100,
        stale_after: timedelta = timedelta(minutes=10),
        session_id: str | None = None,
    ) -> _TransferList:
        """See :meth:`Ledger.claim_receipts`."""
        return await asyncio.to_thread(
            self.ledger.claim_receipts,
            partner,
            worker,
            limit=limit,
            stale_after=stale_after,
            session_id=session_id,
        )

    async def unclaim_receipt(
        self, transfer_id: int, worker: str, *, session_id: str | None = None
    ) -> Transfer:
        """See :meth:`Ledger.unclaim_receipt`."""
        return await asyncio.to_thread(
            self.ledger.unclaim_receipt, transfer_id, worker, session_id=session_id
        )

    async def undispatched_inbound(self, limit: int = 100, *, partner: str | None = None) -> _TransferList:
        """See :meth:`Ledger.undispatched_inbound`."""
        return await asyncio.to_thread(self.ledger.undispatched_inbound, limit, partner=partner)

    async def mark_dispatched(self, transfer_ids: Iterable[int], *, session_id: str | None = None) -> int:
        """See :meth:`Ledger.mark_dispatched`."""
        ids = list(transfer_ids)
        return await asyncio.to_thread(self.ledger.mark_dispatched, ids, session_id=session_id)

    async def record_receipt(
        self,
        key: VirtualFileKey,
        kind: ReceiptKind | str,
        raw: bytes,
        verification: str,
        reason: int | None = None,
        text: str | None = None,
        *,
        accepted: bool = True,
        session_id: str | None = None,
    ) -> Transfer | None:
        """See :meth:`Ledger.record_receipt`."""
        return await asyncio.to_thread(
            self.ledger.record_receipt,
            key,
            kind,
            raw,
            verification,
            reason,
            text,
            accepted=accepted,
            session_id=session_id,
        )

    async def receipts(self, transfer_id: int) -> _ReceiptList:
        """See :meth:`Ledger.receipts`."""
        return await asyncio.to_thread(self.ledger.receipts, transfer_id)

    async def get(self, transfer_id: int) -> Transfer:
        """See :meth:`Ledger.get`."""
        return await asyncio.to_thread(self.ledger.get, transfer_id)

    async def find(
        self, key: VirtualFileKey, direction: Direction | str = Direction.OUTBOUND
    ) -> Transfer | None:
        """See :meth:`Ledger.find`."""
        return await asyncio.to_thread(self.ledger.find, key, direction)

    async def list_transfers(
        self,
        *,
        partner: str | None = None,
        status: TransferStatus | str | Iterable[TransferStatus | str] | None = None,
        direction: Direction | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> _TransferList:
        """See :meth:`Ledger.list_transfers`."""
        statuses = status if status is None or isinstance(status, str) else list(status)
        return await asyncio.to_thread(
            self.ledger.list_transfers,
            partner=partner,
            status=statuses,
            direction=direction,
            limit=limit,
            offset=offset,
        )

    async def events(
        self,
        transfer_id: int | None = None,
        *,
        session_id: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> _EventList:
        """See :meth:`Ledger.events`."""
        return await asyncio.to_thread(
            self.ledger.events, transfer_id, session_id=session_id, kind=kind, limit=limit
        )

    async def add_event(
        self,
        kind: str,
        *,
        transfer_id: int | None = None,
        session_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> LedgerEvent:
        """See :meth:`Ledger.add_event`."""
        return await asyncio.to_thread(
            self.ledger.add_event, kind, transfer_id=transfer_id, session_id=session_id, detail=detail
        )

    async def purge_finished(self, older_than: timedelta, *, limit: int = 10_000) -> int:
        """See :meth:`Ledger.purge_finished`."""
        return await asyncio.to_thread(self.ledger.purge_finished, older_than, limit=limit)

    async def schema_version(self) -> int:
        """See :meth:`Ledger.schema_version`."""
        return await asyncio.to_thread(self.ledger.schema_version)

    list = list_transfers
