"""The session handler the hook gives the engine: every file and receipt goes through the ledger."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oftp2_provider.ledger import Ledger, ReceiptState, TransferStatus, VirtualFileKey
from oftp2_provider.protocol.api import (
    AcceptDecision,
    ConnectionRequest,
    EndFileDecision,
    FileDecision,
    OutboundItem,
    ReceivedFile,
    SendResult,
    SessionContext,
    SessionOutcome,
    safe_name,
)
from oftp2_provider.protocol.commands import EERP, EFID, NERP, SFID, ProtocolLevel
from oftp2_provider.protocol.errors import SfnaReason

log = logging.getLogger(__name__)


def _raw(command: EERP | NERP, ctx: SessionContext) -> bytes:
    """The receipt as it travels (for the ledger's audit copy); a readable form if encoding fails."""
    try:
        from oftp2_provider.protocol.codec import encode

        level = ctx.negotiated.level if ctx.negotiated else ProtocolLevel.V2_0
        return encode(command, level)
    except Exception:  # the audit copy must never break receipt handling
        return repr(command).encode("utf-8", "replace")


def _key(sfid: SFID) -> VirtualFileKey:
    return VirtualFileKey(*sfid.key)


def _verification(command: EERP | NERP) -> str:
    """Receipt verification outcome without the partner certificate: UNSIGNED or UNVERIFIED."""
    return "UNVERIFIED" if command.signature else "UNSIGNED"


def verify_signed_receipt(
    command: EERP | NERP, transfer: Any, partner_certs: Sequence[Any]
) -> tuple[str, str]:
    """Verify a receipt against the partner certificates and the hash of the file we sent.

    Returns ``(outcome, detail)`` with the outcome in upper case (``VERIFIED``, ``UNSIGNED``,
    ``BAD_SIGNATURE``, ``HASH_MISMATCH``, ``UNKNOWN_CERTIFICATE``).  CPU and file work: call it in a
    worker thread.
    """
    from oftp2_provider.protocol.receipts import file_hash, verify_receipt

    suite = int(getattr(transfer, "cipher_suite", 0) or 0) or 1
    expected = None
    path = getattr(transfer, "local_path", None)
    if path and Path(path).is_file():
        expected = file_hash(path, suite)
    result = verify_receipt(command, suite=suite, partner_certs=list(partner_certs), expected_hash=expected)
    return result.outcome.name, str(getattr(result, "detail", "") or "")


class LedgerSessionHandler:
    """A :class:`~oftp2_provider.protocol.api.SessionHandler` that records everything in the ledger.

    * offered files are registered with ``begin_inbound``; a virtual file already received is
      refused with SFNA 13 (duplicate) and its receipt is queued again, so a resend never yields a
      second inbound row;
    * complete files are stored in ``inbox`` and recorded with ``complete_inbound`` (receipt held
      when ``hold_receipts``, else due at once);
    * EERP/NERP received are stored with ``record_receipt``;
    * when we hold the turn, due receipts are sent.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        partner: str,
        own_id: str,
        inbox: Path,
        hold_receipts: bool = False,
        partner_certs: Sequence[Any] = (),
    ) -> None:
        self.ledger = ledger
        self.partner = partner
        self.own_id = own_id
        self.inbox = Path(inbox)
        self.hold_receipts = hold_receipts
        self.partner_certs = list(partner_certs)
        self.received: list[dict[str, Any]] = []
        self.duplicates: list[dict[str, Any]] = []
        self.receipts: list[dict[str, Any]] = []
        self.receipts_sent = 0
        self._inbound_ids: dict[VirtualFileKey, int] = {}
        self._handed_out: set[int] = set()
        self.outcome: SessionOutcome | None = None

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def accept_connection(self, request: ConnectionRequest) -> AcceptDecision:
        """Only used as responder: accept the configured partner only."""
        if request.client_code != self.partner:
            return AcceptDecision.reject(3, f"{request.client_code} is not {self.partner}")
        return AcceptDecision.accept()

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        """Register the file in the ledger and accept it into the inbox (or refuse a duplicate)."""
        if sfid.destination != self.own_id:
            log.warning("refusing %s: destination %s is not us (%s)", sfid.dsn, sfid.destination, self.own_id)
            return FileDecision.refuse(SfnaReason.INVALID_DESTINATION, text=f"we are {self.own_id}")
        key = _key(sfid)
        transfer, duplicate = await self._run(
            self.ledger.begin_inbound,
            self.partner,
            key,
            security_level=int(sfid.security),
            cipher_suite=sfid.cipher_suite,
            compression=sfid.compression,
            envelope=sfid.envelope,
            signed_eerp=sfid.signed_eerp,
            record_format=sfid.format.value,
            max_record_length=sfid.lrecl,
            user_data=sfid.user_data,
            description=sfid.description,
            session_id=ctx.connection_id,
        )
        if duplicate:
            log.info("duplicate file %s (transfer %s): refused with SFNA 13", key, transfer.id)
            self.duplicates.append({"transfer_id": transfer.id, "virtual_file_key": str(key)})
            if transfer.receipt_state is ReceiptState.SENT:
                await self._run(self.ledger.resend_receipt, transfer.id, session_id=ctx.connection_id)
            return FileDecision.refuse(SfnaReason.DUPLICATE_FILE, text="file already received")
        self._inbound_ids[key] = transfer.id
        target = self.inbox / f"{safe_name(sfid.dsn)}.{sfid.date}{sfid.time}"
        await self._run(self.inbox.mkdir, parents=True, exist_ok=True)
        return FileDecision.accept(target)

    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        """Counts matched: confirm."""
        return EndFileDecision.confirm()

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        """Record the complete file."""
        key = _key(received.sfid)
        transfer_id = self._inbound_ids.pop(key, None)
        if transfer_id is None:
            found = await self._run(self.ledger.find, key, "in")
            if found is None:
                log.error("received %s but the ledger has no row for it", key)
                return
            transfer_id = found.id
        transfer = await self._run(
            self.ledger.complete_inbound,
            transfer_id,
            received.path,
            received.size,
            received.sha256,
            hold_receipt=self.hold_receipts,
            session_id=ctx.connection_id,
        )
        self.received.append(
            {
                "transfer_id": transfer.id,
                "virtual_file_key": str(key),
                "path": str(received.path),
                "size": received.size,
            }
        )

    async def file_sent(self, result: SendResult, ctx: SessionContext) -> None:
        """The hook records sends itself (it holds the transfer ids)."""

    async def _receipt(self, command: EERP | NERP, ctx: SessionContext) -> None:
        key = VirtualFileKey(*command.key)
        kind = "EERP" if isinstance(command, EERP) else "NERP"
        verification = _verification(command)
        if command.signature and self.partner_certs:
            sent = await self._run(self.ledger.find, key)
            try:
                verification, detail = await self._run(
                    verify_signed_receipt, command, sent, self.partner_certs
                )
            except Exception as exc:  # a malformed signature must not break the session
                verification, detail = "BAD_SIGNATURE", str(exc)
            if verification != "VERIFIED":
                log.warning("%s for %s: %s %s", kind, key, verification, detail)
        transfer = await self._run(
            self.ledger.record_receipt,
            key,
            kind,
            _raw(command, ctx),
            verification,
            command.reason if isinstance(command, NERP) else None,
            command.text if isinstance(command, NERP) else None,
            session_id=ctx.connection_id,
        )
        self.receipts.append(
            {
                "kind": kind,
                "virtual_file_key": str(key),
                "transfer_id": transfer.id if transfer else None,
                "reason": command.reason if isinstance(command, NERP) else None,
                "verification": verification,
            }
        )

    async def eerp_received(self, eerp: EERP, ctx: SessionContext) -> None:
        """Store the EERP (the transfer becomes delivered)."""
        await self._receipt(eerp, ctx)

    async def nerp_received(self, nerp: NERP, ctx: SessionContext) -> None:
        """Store the NERP (the transfer becomes refused)."""
        await self._receipt(nerp, ctx)

    async def outbound(self, ctx: SessionContext) -> Sequence[OutboundItem]:
        """Due receipts for this partner (each handed out once per session)."""
        due = await self._run(self.ledger.receipts_to_send, self.partner)
        items: list[OutboundItem] = []
        for transfer in due:
            if transfer.id in self._handed_out:
                continue
            self._handed_out.add(transfer.id)
            k = transfer.key
            if transfer.nerp_code is None:
                items.append(EERP(k.dsn, k.date, k.time, destination=k.originator, originator=k.destination))
            else:
                items.append(
                    NERP(
                        k.dsn,
                        k.date,
                        k.time,
                        destination=k.originator,
                        originator=k.destination,
                        creator=self.own_id,
                        reason=transfer.nerp_code,
                        text=transfer.nerp_text or "",
                    )
                )
            await self._run(self.ledger.mark_receipt_sent, transfer.id, session_id=ctx.connection_id)
            self.receipts_sent += 1
        return items

    async def session_ended(self, ctx: SessionContext, outcome: SessionOutcome) -> None:
        """Inbound rows left ``receiving`` by a broken session are failed (kept for restart)."""
        self.outcome = outcome
        for key, transfer_id in list(self._inbound_ids.items()):
            try:
                current = await self._run(self.ledger.get, transfer_id)
                if current.status is TransferStatus.RECEIVING:
                    await self._run(
                        self.ledger.fail_inbound,
                        transfer_id,
                        f"session ended (ESID {outcome.reason:02d}) before {key} was complete",
                        session_id=ctx.connection_id,
                    )
            except Exception:
                log.exception("could not mark inbound transfer %s failed", transfer_id)
