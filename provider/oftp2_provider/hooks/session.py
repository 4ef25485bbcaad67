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
from oftp2_provider.protocol.secure import InboundSecurity, SecureSessionHandler

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
    """Receipt verification outcome when nothing was checked: UNSIGNED or UNVERIFIED."""
    return "UNVERIFIED" if command.signature else "UNSIGNED"


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
        receipt_signer: tuple[Any, Any] | None = None,
    ) -> None:
        self.ledger = ledger
        self.partner = partner
        self.own_id = own_id
        self.inbox = Path(inbox)
        self.hold_receipts = hold_receipts
        self.receipt_signer = receipt_signer
        #: Set by :class:`SecureLedgerSessionHandler`: its receipt verifications are recorded.
        self.secure: SecureSessionHandler | None = None
        #: Suite hash of the octets as transmitted, per received file (input of a signed EERP).
        self.transmitted: dict[tuple[str, str, str, str, str], bytes] = {}
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
        digest = self.transmitted.pop(received.sfid.key, None)
        transfer = await self._run(
            self.ledger.complete_inbound,
            transfer_id,
            received.path,
            received.size,
            received.sha256,
            hold_receipt=self.hold_receipts,
            transmitted_digest=digest.hex() if digest else None,
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

    async def processing_failed(self, key: VirtualFileKey, answer: str, code: int, text: str) -> None:
        """A received file failed its security checks (EFNA or NERP): its ledger row is failed."""
        transfer_id = self._inbound_ids.pop(key, None)
        if transfer_id is None:
            return
        await self._run(
            self.ledger.fail_inbound,
            transfer_id,
            f"{answer} {code:02d} {text}",
            refusal_code=code,
        )

    async def _receipt(self, command: EERP | NERP, ctx: SessionContext) -> None:
        key = VirtualFileKey(*command.key)
        kind = "EERP" if isinstance(command, EERP) else "NERP"
        verification = _verification(command)
        checked = self.secure.verifications.get(command.key) if self.secure is not None else None
        if checked is not None:
            verification = checked.outcome.name
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
            receipt: EERP | NERP
            if transfer.nerp_code is None:
                receipt = EERP(k.dsn, k.date, k.time, destination=k.originator, originator=k.destination)
            else:
                receipt = NERP(
                    k.dsn,
                    k.date,
                    k.time,
                    destination=k.originator,
                    originator=k.destination,
                    creator=self.own_id,
                    reason=transfer.nerp_code,
                    text=transfer.nerp_text or "",
                )
            items.append(await self._sign(receipt, transfer))
            await self._run(self.ledger.mark_receipt_sent, transfer.id, session_id=ctx.connection_id)
            self.receipts_sent += 1
        return items

    async def _sign(self, receipt: EERP | NERP, transfer: Any) -> EERP | NERP:
        """Sign the receipt when the partner asked for it (SFIDSIGN) and we have a key; CPU in a thread."""
        if not (transfer.signed_eerp and transfer.cipher_suite):
            return receipt
        if self.receipt_signer is None or not transfer.transmitted_digest:
            why = "no signing key configured" if self.receipt_signer is None else "no hash of the file"
            log.warning("%s: signed receipt requested but %s; sending it unsigned", transfer.key, why)
            return receipt
        from oftp2_provider.protocol.receipts import sign_receipt

        key, cert = self.receipt_signer
        signed: EERP | NERP = await self._run(
            sign_receipt,
            receipt,
            suite=transfer.cipher_suite,
            key=key,
            cert=cert,
            file_hash=bytes.fromhex(transfer.transmitted_digest),
        )
        return signed

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


class SecureLedgerSessionHandler(SecureSessionHandler):
    """OFTP2 file security (:class:`~oftp2_provider.protocol.secure.SecureSessionHandler`) around a
    :class:`LedgerSessionHandler`.

    Offers the security policy or missing keys do not allow get SFNA 15–20; secured files are
    decrypted, decompressed and verified before EFPA (EFNA 21–23, envelope quarantined, ledger row
    failed); the inbox receives only the plain, verified content.  Receipts stay the ledger's
    business (held or immediate, signed by :class:`LedgerSessionHandler` when SFIDSIGN = ``Y``),
    so ``security.receipts`` must be off.  Receipts received are verified against the partner's
    certificate and the transmitted hash the ledger recorded when the file was sent; the outcome
    is what the ledger stores.
    """

    def __init__(self, inner: LedgerSessionHandler, security: InboundSecurity, *, own_id: str = "") -> None:
        if security.receipts:
            raise ValueError("SecureLedgerSessionHandler: receipts are sent from the ledger (receipts=False)")
        super().__init__(inner, security, own_id=own_id)
        self.ledger_handler = inner
        inner.secure = self
        self._registered: set[tuple[str, str, str, str, str]] = set()

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        """Policy and keys first (SFNA 15–20); a signed EERP we could not sign is refused (SFNA 99)."""
        if sfid.signed_eerp and sfid.cipher_suite and self.ledger_handler.receipt_signer is None:
            log.warning(
                "%s: refusing %s: signed EERP requested but no signing key", ctx.connection_id, sfid.dsn
            )
            return FileDecision.refuse(
                SfnaReason.UNSPECIFIED, text="signed EERP requested but no signing key is configured"
            )
        return await super().accept_file(sfid, ctx)

    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        """Unprotect before EFPA; a refusal fails the ledger row with the EFNA code."""
        answer = await super().end_file(sfid, efid, partial, ctx)
        if not answer.ok:
            await self.ledger_handler.processing_failed(
                VirtualFileKey(*sfid.key), "EFNA", int(answer.reason), answer.text
            )
        return answer

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        """Keep the suite hash of the transmitted octets (for a signed EERP), then deliver."""
        sfid = received.sfid
        if sfid.signed_eerp and sfid.cipher_suite:
            from oftp2_provider.protocol.receipts import file_hash

            try:
                digest = await asyncio.to_thread(file_hash, received.path, sfid.cipher_suite)
                self.ledger_handler.transmitted[sfid.key] = digest
            except (OSError, ValueError) as exc:
                log.warning("%s: cannot hash the received file for its signed EERP: %s", sfid.dsn, exc)
        before = len(self.failures)
        await super().file_received(received, ctx)
        for failed, answer, code, text in self.failures[before:]:
            await self.ledger_handler.processing_failed(VirtualFileKey(*failed.key), answer, code, text)

    async def _expect_from_ledger(self, receipt: EERP | NERP) -> None:
        key = receipt.key
        if key in self._registered:
            return
        self._registered.add(key)
        sent = await asyncio.to_thread(self.ledger_handler.ledger.find, VirtualFileKey(*key))
        if sent is None:
            return
        digest = bytes.fromhex(sent.transmitted_digest) if sent.transmitted_digest else None
        self.expect_receipt(key, suite=sent.cipher_suite, expected_hash=digest, signed=sent.signed_eerp)

    async def eerp_received(self, eerp: EERP, ctx: SessionContext) -> None:
        """Verify against what the ledger recorded for the sent file, then record it."""
        await self._expect_from_ledger(eerp)
        await super().eerp_received(eerp, ctx)

    async def nerp_received(self, nerp: NERP, ctx: SessionContext) -> None:
        """Verify against what the ledger recorded for the sent file, then record it."""
        await self._expect_from_ledger(nerp)
        await super().nerp_received(nerp, ctx)
