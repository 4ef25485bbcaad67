"""Triggers on the transfer ledger: wait for end-to-end receipts, and turn received files into events.

Both triggers only read the ledger (through :class:`~oftp2_provider.ledger.AsyncLedger`, whose calls
run in worker threads), so the triggerer's event loop never blocks on the database.  Events carry
ids and small values; the data stays in the ledger.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer

from oftp2_provider.hooks.ledger import ledger_ref, open_async_ledger_nb
from oftp2_provider.ledger import AsyncLedger, Direction, Transfer, TransferNotFound, TransferStatus

log = logging.getLogger(__name__)

_FINAL_OUTBOUND = (TransferStatus.DELIVERED, TransferStatus.REFUSED)


def transfer_summary(transfer: Transfer, verification: str | None = None) -> dict[str, Any]:
    """The JSON-friendly view of a transfer used in trigger events and XCom."""
    return {
        "transfer_id": transfer.id,
        "direction": transfer.direction.value,
        "partner": transfer.partner,
        "status": transfer.status.value,
        "dsn": transfer.key.dsn,
        "date": transfer.key.date,
        "time": transfer.key.time,
        "originator": transfer.key.originator,
        "destination": transfer.key.destination,
        "virtual_file_key": str(transfer.key),
        "path": transfer.local_path,
        "size": transfer.size,
        "sha256": transfer.sha256,
        "nerp_code": transfer.nerp_code,
        "nerp_text": transfer.nerp_text,
        "receipt_verification": verification,
    }


async def _verification(ledger: AsyncLedger, transfer: Transfer) -> str | None:
    """Verification outcome of the newest receipt recorded for ``transfer`` (None when none)."""
    receipts = await ledger.receipts(transfer.id)
    return receipts[-1].verification if receipts else None


class OFTP2EERPTrigger(BaseTrigger):
    """Wait until every given outbound transfer is ``delivered`` (EERP) or ``refused`` (NERP/refusal).

    :param transfer_ids: ledger ids of the outbound transfers to wait for.
    :param ledger_conn_id: Airflow SQL connection of the ledger (``None``: embedded SQLite).
    :param ledger_path: SQLite file of the embedded ledger (``None``: the default path).
    :param poll_interval: seconds between two ledger reads.
    :param deadline: UNIX time after which a ``timeout`` event is sent (``None``: wait forever).

    Events: ``{"status": "done", "transfers": [...]}`` once all are final, ``{"status":
    "timeout", ...}`` at the deadline, ``{"status": "error", "message": ...}`` for an unknown id.
    """

    def __init__(
        self,
        transfer_ids: Sequence[int],
        ledger_conn_id: str | None = None,
        ledger_path: str | None = None,
        poll_interval: float = 5.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.transfer_ids = [int(i) for i in transfer_ids]
        self.ledger_conn_id = ledger_conn_id
        self.ledger_path = ledger_path
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline) if deadline is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the plain kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "transfer_ids": list(self.transfer_ids),
                "ledger_conn_id": self.ledger_conn_id,
                "ledger_path": self.ledger_path,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the ledger until all transfers are final or the deadline passes."""
        ledger = await open_async_ledger_nb(self.ledger_conn_id, self.ledger_path)
        while True:
            transfers: list[Transfer] = []
            for transfer_id in self.transfer_ids:
                try:
                    found = await ledger.get(transfer_id)
                except TransferNotFound:
                    found = None
                if found is None or found.direction is not Direction.OUTBOUND:
                    message = f"no outbound transfer with id {transfer_id}"
                    yield TriggerEvent({"status": "error", "message": message})  # type: ignore[no-untyped-call]
                    return
                transfers.append(found)
            pending = [t.id for t in transfers if t.status not in _FINAL_OUTBOUND]
            if not pending or (self.deadline is not None and time.time() >= self.deadline):
                summaries = [transfer_summary(t, await _verification(ledger, t)) for t in transfers]
                status = "timeout" if pending else "done"
                payload = {"status": status, "pending": pending, "transfers": summaries}
                yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
                return
            await asyncio.sleep(self._sleep_for())

    def _sleep_for(self) -> float:
        if self.deadline is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, self.deadline - time.time()))


def _matches(raw: dict[str, Any], partner: str | None, dsn_pattern: str | None) -> bool:
    if partner is not None and raw["partner"] != partner:
        return False
    return dsn_pattern is None or fnmatch.fnmatchcase(raw["dsn"], dsn_pattern)


class _InboundProducer(SharedStreamProducer):
    """Ack-mode producer: yields undispatched received files; marks them dispatched in ``advance``."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.ledger_conn_id: str | None = kwargs.get("ledger_conn_id")
        self.ledger_path: str | None = kwargs.get("ledger_path")
        self.partner: str | None = kwargs.get("partner")
        self.poll_interval = float(kwargs.get("poll_interval", 5.0))
        self.batch_size = int(kwargs.get("batch_size", 100))
        self._in_flight: set[int] = set()
        self._ledger: AsyncLedger | None = None

    async def _get_ledger(self) -> AsyncLedger:
        if self._ledger is None:
            self._ledger = await open_async_ledger_nb(self.ledger_conn_id, self.ledger_path)
        return self._ledger

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        """Yield ``(file summary, transfer id)`` for each received, not yet dispatched file, forever."""
        ledger = await self._get_ledger()
        while True:
            limit = self.batch_size + len(self._in_flight)
            for transfer in await ledger.undispatched_inbound(limit, partner=self.partner):
                if transfer.id in self._in_flight:
                    continue  # broadcast already; waiting for its advance
                self._in_flight.add(transfer.id)
                yield transfer_summary(transfer), transfer.id
            await asyncio.sleep(self.poll_interval)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """Mark accepted (or rejected) events dispatched; leave failed ones for redelivery."""
        ledger = await self._get_ledger()
        done: list[int] = []
        for item in batch:
            transfer_id = int(item.broker_payload)
            outcome = item.outcome
            if outcome.failed:
                log.warning("inbound transfer %s: event not persisted; it will be offered again", transfer_id)
                self._in_flight.discard(transfer_id)
            elif outcome.rejected:
                log.warning(
                    "inbound transfer %s: event rejected by a watcher; not offered again", transfer_id
                )
                done.append(transfer_id)
            elif outcome.acked:
                done.append(transfer_id)
            else:  # no subscriber was online at fan-out: offer it again at the next poll
                self._in_flight.discard(transfer_id)
        if done:
            await ledger.mark_dispatched(done)
            # Only now may the poll forget them: before the commit they still look undispatched.
            self._in_flight.difference_update(done)


class OFTP2InboundFileTrigger(BaseEventTrigger):
    """One event per newly received file, for ``AssetWatcher`` (event-driven DAGs).

    Runs in the 3.3 shared-stream **ack mode**: one ledger poll per (ledger, partner) serves every
    watcher, and a row is marked dispatched only after Airflow persisted the events derived from it,
    so a crash between "event yielded" and "event stored" re-offers the file instead of losing it.
    The ledger records a resent file (same virtual-file key) as a duplicate and never offers it
    again, so a resend never starts a second DAG run.

    :param partner: only files from this partner Odette ID (``None``: every partner).
    :param dsn_pattern: only files whose DSN matches this ``fnmatch`` pattern (``None``: all).
      Files the pattern excludes are still marked dispatched for this stream; use one watcher per
      stream or the ``partner`` filter (part of the stream key) to split files between DAGs.
    :param ledger_conn_id: Airflow SQL connection of the ledger (``None``: embedded SQLite).
    :param ledger_path: SQLite file of the embedded ledger.
    :param poll_interval: seconds between two ledger reads.
    :param batch_size: rows read per poll.

    Event payload: the :func:`transfer_summary` of the file (``transfer_id``, ``dsn``, ``path``,
    ``sha256``, ``virtual_file_key`` …).
    """

    def __init__(
        self,
        partner: str | None = None,
        dsn_pattern: str | None = None,
        ledger_conn_id: str | None = None,
        ledger_path: str | None = None,
        poll_interval: float = 5.0,
        batch_size: int = 100,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.partner = partner
        self.dsn_pattern = dsn_pattern
        self.ledger_conn_id = ledger_conn_id
        self.ledger_path = ledger_path
        self.poll_interval = float(poll_interval)
        self.batch_size = int(batch_size)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and the plain kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "partner": self.partner,
                "dsn_pattern": self.dsn_pattern,
                "ledger_conn_id": self.ledger_conn_id,
                "ledger_path": self.ledger_path,
                "poll_interval": self.poll_interval,
                "batch_size": self.batch_size,
            },
        )

    def shared_stream_key(self) -> Hashable | None:
        """One poll per (ledger, partner filter)."""
        return ("oftp2-inbound", *ledger_ref(self.ledger_conn_id, self.ledger_path), self.partner or "*")

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        """Opt into ack mode: the producer marks rows dispatched only after persistence."""
        return _InboundProducer(kwargs)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Turn each broadcast file summary that matches this watcher into a trigger event."""
        async for raw in shared_stream:
            if _matches(raw, self.partner, self.dsn_pattern):
                yield TriggerEvent(raw)  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Stand-alone mode (no shared stream): yield each file, then mark it dispatched.

        Used when the triggerer does not run shared streams; the row is marked once the triggerer
        took the event, which is at-least-once only up to the event queue (prefer ack mode).
        """
        producer = _InboundProducer(self.serialize()[1])
        ledger = await producer._get_ledger()
        while True:
            for transfer in await ledger.undispatched_inbound(self.batch_size, partner=self.partner):
                raw = transfer_summary(transfer)
                if not _matches(raw, self.partner, None):
                    continue
                if _matches(raw, self.partner, self.dsn_pattern):
                    yield TriggerEvent(raw)  # type: ignore[no-untyped-call]
                await ledger.mark_dispatched([transfer.id])
            await asyncio.sleep(self.poll_interval)
