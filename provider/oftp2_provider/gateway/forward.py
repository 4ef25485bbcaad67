"""Store-and-forward: the :class:`~oftp2_provider.protocol.api.SessionHandler` bound to the ledger.

One :class:`LedgerSessionHandler` serves one OFTP session, in either role:

* **Inbound files** are checked against the partner's policy (origin, destination, security
  flags, size), recorded with :meth:`Ledger.begin_inbound` (a duplicate virtual file is refused
  with SFNA 13, or accepted, discarded and answered with its receipt again, per partner policy),
  written by the engine to ``<inbox>/.partial/<name>`` and renamed into the inbox only after EFID;
  the ledger row becomes ``received`` after the rename, so nothing partial is ever visible.
* **Receipts** owed to the partner (``immediate`` policy, or ``hold`` after
  :meth:`Ledger.release_receipt`) go out whenever we hold the turn, in this or any later session.
* **Outbound files** queued in the ledger for the partner are claimed one at a time
  (compare-and-set, so two gateways never send the same file) and sent when we hold the turn —
  whether we called the partner or it called us and handed over the turn.

A session that breaks leaves partial inbound files for a restart and puts claimed-but-unfinished
outbound files back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oftp2_provider.ledger import (
    AsyncLedger,
    Direction,
    InvalidTransition,
    LedgerError,
    ReceiptKind,
    ReceiptState,
    Transfer,
    TransferStatus,
    VirtualFileKey,
)
from oftp2_provider.protocol.api import (
    AcceptDecision,
    ConnectionRequest,
    EndFileDecision,
    FileDecision,
    OutboundFile,
    OutboundItem,
    ReceivedFile,
    Role,
    SendResult,
    SessionContext,
    SessionOutcome,
    safe_name,
)
from oftp2_provider.protocol.api import PartnerConfig as EnginePartner
from oftp2_provider.protocol.commands import (
    EERP,
    EFID,
    NERP,
    SFID,
    ProtocolLevel,
    RecordFormat,
    SecurityLevel,
)
from oftp2_provider.protocol.errors import EfnaReason, SfnaReason

from .accept import AcceptPolicy
from .config import GatewayConfig, PartnerConfig
from .events import EventBus, EventName
from .security import ReceiptKeys

__all__ = ["GatewayContext", "LedgerSessionHandler", "inbox_name"]

log = logging.getLogger("oftp2.gateway.session")

_OSIZ_MARGIN = 64 * 1024  # octets allowed beyond the announced SFIDOSIZ when unprotecting

#: Receipts checked per Speaker turn (bounds the work of one session when many are due).
RECEIPTS_PER_TURN = 50


def inbox_name(key: VirtualFileKey, transfer_id: int) -> str:
    """The file name a received virtual file gets in the inbox (unique per ledger row)."""
    return f"{safe_name(key.dsn)}_{key.date}{key.time}_{transfer_id}"


@dataclass
class GatewayContext:
    """What every session handler of one gateway shares."""

    config: GatewayConfig
    ledger: AsyncLedger
    bus: EventBus
    policy: AcceptPolicy
    node: str
    #: Sessions currently open per peer IP address (for ``max_sessions_per_address``).
    per_address: dict[str, int] = field(default_factory=dict)
    #: Live handlers (for health and shutdown).
    handlers: set[LedgerSessionHandler] = field(default_factory=set)
    #: Set when the gateway shuts down: new sessions get ESID 05, nothing new is sent.
    stopping: bool = False
    #: Keys for signing our receipts and verifying the partners' (None: unsigned only).
    receipt_keys: ReceiptKeys | None = None
    #: Inbound transfers whose receipt a session of this gateway is sending right now (so that
    #: concurrent sessions with the same partner do not all send the same EERP).
    receipts_claimed: set[int] = field(default_factory=set)

    @property
    def own_id(self) -> str:
        """Our Odette ID."""
        return self.config.identity.odette_id

    def engine_partner(self, partner: PartnerConfig) -> EnginePartner:
        """The engine's view of a partner: password it presents and negotiation caps."""
        return EnginePartner(
            odette_id=partner.odette_id,
            password=partner.password.get_secret_value(),
            our_password=partner.our_password.get_secret_value() if partner.our_password else None,
            max_level=ProtocolLevel(max(partner.allowed_levels)),
            sdeb=partner.max_sdeb,
            credit=partner.max_credit,
            secure_auth=partner.secure_auth,
        )

    def duplicates_dir(self) -> Path:
        """Where duplicate files accepted for discarding are written."""
        return self.config.state_dir / "duplicates"


@dataclass
class _Inbound:
    transfer_id: int
    target: Path
    duplicate: bool = False
    #: The decrypted/verified file of a secured transfer (replaces the envelope in the inbox).
    plain: Path | None = None


class LedgerSessionHandler:
    """The gateway's session handler; see the module docstring.

    ``partner_name`` is known up front when we call a partner (initiator); as responder it is
    set by :meth:`accept_connection`.  ``session_context`` is the engine's context of the session the
    handler serves (as responder: where the TLS client certificate is read from).
    """

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        partner_name: str | None = None,
        relayed: bool = False,
        session_context: SessionContext | None = None,
    ) -> None:
        self.ctx = ctx
        #: Session arrived through Azure Relay (its peer address is the loopback forwarder).
        self.relayed = relayed
        self.session_context = session_context
        self.session_id = uuid.uuid4().hex[:16]
        self.partner_name = partner_name
        self.partner: PartnerConfig | None = ctx.config.partners[partner_name] if partner_name else None
        self.peer_ip: str | None = None
        self.started = False
        self._inbound: dict[tuple[str, str, str, str, str], _Inbound] = {}
        self._files_in_flight: dict[tuple[str, str, str, str, str], int] = {}
        self._receipts_in_flight: list[int] = []
        self._retry_later: list[int] = []
        self._nerp_warning = False
        self.files_received = 0
        self.files_sent = 0
        self.receipts_sent = 0
        self.receipts_received = 0
        ctx.handlers.add(self)

    # ------------------------------------------------------------------ helpers

    @property
    def partner_id(self) -> str:
        """The partner's Odette ID (the ledger's ``partner`` column)."""
        assert self.partner is not None
        return self.partner.odette_id

    def _emit(self, name: EventName, data: dict[str, Any], *, transfer_id: int | None = None) -> None:
        self.ctx.bus.emit(
            name,
            data,
            session_id=self.session_id,
            partner=self.partner_name,
            transfer_id=transfer_id,
        )

    def _log(self, level: int, message: str, *args: object, transfer_id: int | None = None) -> None:
        log.log(
            level,
            "[session %s %s] " + message,
            self.session_id,
            self.partner_name or "?",
            *args,
            extra={"session_id": self.session_id, "partner": self.partner_name, "transfer_id": transfer_id},
        )

    def session_started(self, role: Role, peer: tuple[str, int] | None) -> None:
        """Record the start of an accepted session (emits ``session.started``)."""
        if self.started:
            return
        self.started = True
        self._emit(
            EventName.SESSION_STARTED,
            {"role": role.value, "peer": f"{peer[0]}:{peer[1]}" if peer else None},
        )

    # ------------------------------------------------------------------ connection

    async def accept_connection(self, request: ConnectionRequest) -> AcceptDecision:
        """Partner table, limits, then the user hook (responder only)."""
        limits = self.ctx.config.limits
        peer_certificate = self.session_context.peer_certificate if self.session_context is not None else None
        verdict, partner = await self.ctx.policy.decide(request, peer_certificate=peer_certificate)
        ip = request.peer_address[0] if request.peer_address and not self.relayed else None
        if verdict.accept and self.ctx.stopping:
            verdict.reject(5, "gateway is shutting down")
        if verdict.accept and ip is not None:
            if self.ctx.per_address.get(ip, 0) >= limits.max_sessions_per_address:
                verdict.reject(8, f"too many sessions from {ip}")
        if not verdict.accept:
            self._log(
                logging.WARNING,
                "connection %s from %s refused: ESID %02d %s",
                request.connection_id,
                ip,
                verdict.error_code,
                verdict.error_description,
            )
            self.ctx.bus.emit(
                EventName.SESSION_REJECTED,
                {
                    "connection_id": request.connection_id,
                    "client_code": request.client_code.rstrip(),
                    "peer": ip,
                    "reason": verdict.error_code,
                    "text": verdict.error_description,
                    "tls": request.tls,
                    "tls_client_sha256": verdict.peer_certificate_sha256,
                },
                session_id=self.session_id,
                partner=verdict.partner_name,
            )
            return verdict.to_decision()
        self.partner_name = verdict.partner_name
        self.partner = partner
        if ip is not None:
            self.peer_ip = ip
            self.ctx.per_address[ip] = self.ctx.per_address.get(ip, 0) + 1
        self.session_started(Role.RESPONDER, request.peer_address)
        decision = verdict.to_decision()
        if partner is not None:
            decision = AcceptDecision.accept(level=decision.level, partner=self.ctx.engine_partner(partner))
        return decision

    # ------------------------------------------------------------------ inbound files

    def _refuse(self, sfid: SFID, reason: int, text: str, *, retry: bool = False) -> FileDecision:
        self._log(logging.WARNING, "refusing %s: SFNA %02d %s", sfid.dsn, reason, text)
        self._emit(
            EventName.FILE_REFUSED,
            {"dsn": sfid.dsn, "date": sfid.date, "time": sfid.time, "reason": reason, "text": text},
        )
        return FileDecision.refuse(reason, retry=retry, text=text)

    def _policy_refusal(self, sfid: SFID, partner: PartnerConfig) -> tuple[int, str] | None:
        own = self.ctx.own_id
        if sfid.destination.rstrip().upper() != own:
            return SfnaReason.INVALID_DESTINATION, f"destination {sfid.destination} is not {own}"
        if not partner.accepts_originator(sfid.originator):
            return SfnaReason.INVALID_ORIGIN, f"originator {sfid.originator} not accepted from this partner"
        sec = partner.security
        encrypted = sfid.security in (SecurityLevel.ENCRYPTED, SecurityLevel.ENCRYPTED_AND_SIGNED)
        signed = sfid.security in (SecurityLevel.SIGNED, SecurityLevel.ENCRYPTED_AND_SIGNED)
        if (encrypted or signed or sfid.compression or sfid.signed_eerp) and sfid.cipher_suite:
            if sfid.cipher_suite not in sec.allowed_suites:
                return (
                    SfnaReason.CIPHER_SUITE_NOT_SUPPORTED,
                    f"cipher suite {sfid.cipher_suite:02d} not allowed",
                )
        if (encrypted or signed) and not sfid.cipher_suite:
            return SfnaReason.CIPHER_SUITE_NOT_SUPPORTED, "secured file without a cipher suite"
        if sec.require_encrypted and not encrypted:
            return SfnaReason.UNENCRYPTED_FILE_NOT_ALLOWED, "this partner must encrypt its files"
        if sec.require_signed and not signed:
            return SfnaReason.UNSIGNED_FILE_NOT_ALLOWED, "this partner must sign its files"
        if sfid.compression and not sec.allow_compressed:
            return SfnaReason.COMPRESSION_NOT_ALLOWED, "compressed files are not accepted"
        limit = partner.max_file_size
        if limit is not None and max(sfid.file_size, sfid.original_size) * 1024 > limit + 1023:
            return SfnaReason.FILE_SIZE_TOO_BIG, f"file larger than {limit} octets"
        return None

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        """Policy checks, ledger ``begin_inbound``, duplicate handling, then the inbox target."""
        partner = self.partner
        if partner is None or self.partner_name is None:
            return self._refuse(sfid, SfnaReason.INVALID_ORIGIN, "unknown partner")
        refusal = self._policy_refusal(sfid, partner)
        if refusal is not None:
            return self._refuse(sfid, int(refusal[0]), refusal[1])
        key = VirtualFileKey(*sfid.key)
        try:
            transfer, duplicate = await self.ctx.ledger.begin_inbound(
                self.partner_id,
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
                announced_size=(sfid.original_size or sfid.file_size) * 1024 or None,
                session_id=self.session_id,
            )
        except (LedgerError, ValueError) as exc:
            self._log(logging.ERROR, "ledger refused %s: %s", key, exc)
            return self._refuse(sfid, SfnaReason.ACCESS_METHOD_FAILURE, "cannot record the file", retry=True)
        except Exception as exc:  # database down: the partner may retry later
            self._log(logging.ERROR, "ledger unavailable for %s: %s", key, exc)
            return self._refuse(sfid, SfnaReason.ACCESS_METHOD_FAILURE, "storage unavailable", retry=True)
        if duplicate:
            if partner.duplicate_policy == "refuse":
                return self._refuse(
                    sfid, SfnaReason.DUPLICATE_FILE, f"already received as transfer {transfer.id}"
                )
            target = self.ctx.duplicates_dir() / uuid.uuid4().hex
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            self._inbound[sfid.key] = _Inbound(transfer.id, target, duplicate=True)
            self._log(logging.INFO, "duplicate %s accepted for discarding", key, transfer_id=transfer.id)
            return FileDecision.accept(target, restart=False)
        inbox = self.ctx.config.inbox_for(self.partner_name)
        target = inbox / inbox_name(key, transfer.id)
        try:
            await asyncio.to_thread((inbox / ".partial").mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            self._log(logging.ERROR, "cannot create inbox %s: %s", inbox, exc)
            await self._fail_inbound(transfer.id, f"inbox not writable: {exc}")
            return self._refuse(sfid, SfnaReason.ACCESS_METHOD_FAILURE, "inbox not writable", retry=True)
        self._inbound[sfid.key] = _Inbound(transfer.id, target)
        self._log(logging.INFO, "receiving %s into %s", key, target, transfer_id=transfer.id)
        return FileDecision.accept(target, restart=partner.restart)

    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        """Final checks before EFPA: the partial file must exist and fit the size limit."""
        entry = self._inbound.get(sfid.key)
        if entry is None:
            return EndFileDecision.refuse(EfnaReason.UNSPECIFIED, "file was not accepted in this session")
        partner = self.partner
        if partner is not None and partner.max_file_size is not None and not entry.duplicate:
            size = await asyncio.to_thread(_size, partial)
            if size is not None and size > partner.max_file_size:
                await self._fail_inbound(entry.transfer_id, "file too big")
                self._inbound.pop(sfid.key, None)
                return EndFileDecision.refuse(EfnaReason.FILE_SIZE_TOO_BIG, "file too big")
        if entry.duplicate or (sfid.security is SecurityLevel.NONE and not sfid.compression):
            return EndFileDecision.confirm()
        return await self._unprotect(sfid, entry, partial)

    async def _unprotect(self, sfid: SFID, entry: _Inbound, partial: Path) -> EndFileDecision:
        """Decrypt / decompress / verify a secured file into ``.partial/<name>.plain``."""
        from oftp2_provider.protocol.cms import unprotect_file_async
        from oftp2_provider.protocol.suites import SecurityError

        keys = self.ctx.receipt_keys
        decrypt = keys.decrypt if keys is not None else None
        signer = keys.partners.get(self.partner_id) if keys is not None else None
        plain = partial.with_name(partial.name + ".plain")
        # Stop decompression bombs: the plain file may not exceed what SFIDOSIZ announced (1 KiB
        # blocks, rounded up) plus a margin, nor the partner's max_file_size.
        limits = [sfid.original_size * 1024 + _OSIZ_MARGIN] if sfid.original_size > 0 else []
        if self.partner is not None and self.partner.max_file_size is not None:
            limits.append(self.partner.max_file_size)
        try:
            await unprotect_file_async(
                partial,
                plain,
                security_level=int(sfid.security),
                compressed=sfid.compression,
                suite=sfid.cipher_suite,
                decrypt_key=decrypt[0] if decrypt else None,
                decrypt_cert=decrypt[1] if decrypt else None,
                verify_certs=[signer] if signer is not None else [],
                max_output=min(limits) if limits else None,
            )
        except SecurityError as exc:
            code = int(exc.efna or EfnaReason.UNSPECIFIED)
            self._log(
                logging.WARNING,
                "refusing %s: EFNA %02d %s",
                sfid.dsn,
                code,
                exc,
                transfer_id=entry.transfer_id,
            )
            await self._fail_inbound(entry.transfer_id, f"EFNA {code:02d}: {exc}")
            self._inbound.pop(sfid.key, None)
            self._emit(
                EventName.FILE_REFUSED,
                {"dsn": sfid.dsn, "reason": code, "text": str(exc), "at": "EFNA"},
                transfer_id=entry.transfer_id,
            )
            return EndFileDecision.refuse(code, str(exc)[:200])
        entry.plain = plain
        return EndFileDecision.confirm()

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        """The file is in place: complete the ledger row (its receipt becomes due or held)."""
        entry = self._inbound.pop(received.sfid.key, None)
        if entry is None:
            self._log(logging.ERROR, "file_received for unknown %s", received.sfid.key)
            return
        if entry.duplicate:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(received.path.unlink)
            try:
                transfer = await self.ctx.ledger.get(entry.transfer_id)
                if transfer.receipt_state is ReceiptState.SENT:
                    await self.ctx.ledger.resend_receipt(entry.transfer_id, session_id=self.session_id)
            except (LedgerError, InvalidTransition) as exc:
                self._log(
                    logging.WARNING, "cannot re-send the receipt: %s", exc, transfer_id=entry.transfer_id
                )
            self._emit(
                EventName.FILE_REFUSED,
                {"dsn": received.sfid.dsn, "duplicate": True, "discarded": True},
                transfer_id=entry.transfer_id,
            )
            return
        hold = self.partner is not None and self.partner.receipt_policy == "hold"
        size, digest = received.size, received.sha256
        try:
            if entry.plain is not None:
                # keep the envelope as transmitted (the signed-EERP hash covers it), deliver the plain file
                envelope = received.path.parent / ".transmitted" / received.path.name
                await asyncio.to_thread(_swap_in_plain, received.path, envelope, entry.plain)
                size, digest = await asyncio.to_thread(sha256_file, received.path)
            transfer = await self.ctx.ledger.complete_inbound(
                entry.transfer_id,
                received.path,
                size,
                digest,
                hold_receipt=hold,
                transmitted_size=received.size,
                transmitted_digest=received.sha256,
                session_id=self.session_id,
            )
        except Exception as exc:  # the file is in place; Gateway.recover() completes the row later
            self._log(
                logging.ERROR, "cannot record %s: %s", received.path, exc, transfer_id=entry.transfer_id
            )
            self._emit(
                EventName.ERROR,
                {"error": f"ledger update failed: {exc}", "path": str(received.path)},
                transfer_id=entry.transfer_id,
            )
            return
        self.files_received += 1
        self._log(
            logging.INFO,
            "received %s (%d octets) -> %s",
            received.sfid.dsn,
            received.size,
            received.path,
            transfer_id=transfer.id,
        )
        self._emit(
            EventName.FILE_RECEIVED,
            {
                "dsn": received.sfid.dsn,
                "date": received.sfid.date,
                "time": received.sfid.time,
                "originator": received.sfid.originator,
                "path": str(received.path),
                "size": received.size,
                "sha256": received.sha256,
                "receipt": transfer.receipt_state.value,
                "restart_offset": received.restart_offset,
            },
            transfer_id=transfer.id,
        )

    async def _fail_inbound(self, transfer_id: int, error: str, restart_offset: int = 0) -> None:
        try:
            # guarded: if the partner already reconnected and a newer session resumed this file,
            # this (older) session must not mark it failed
            await self.ctx.ledger.fail_inbound(
                transfer_id,
                error,
                restart_offset=restart_offset,
                session_id=self.session_id,
                guard_session=True,
            )
        except LedgerError as exc:
            self._log(logging.WARNING, "cannot mark inbound failed: %s", exc, transfer_id=transfer_id)

    # ------------------------------------------------------------------ receipts from the partner

    async def _receipt(self, receipt: EERP | NERP, ctx: SessionContext) -> None:
        kind = ReceiptKind.EERP if isinstance(receipt, EERP) else ReceiptKind.NERP
        key = VirtualFileKey(*receipt.key)
        level = ctx.negotiated.level if ctx.negotiated else ProtocolLevel.V2_0
        from oftp2_provider.protocol.codec import encode

        raw = encode(receipt, level)
        verification = "unsigned"
        detail = ""
        required = self.partner is not None and self.partner.security.require_signed_receipts
        if (receipt.signature or required) and self.ctx.receipt_keys is not None and self.partner is not None:
            sent = await self.ctx.ledger.find(key, Direction.OUTBOUND)
            suite = sent.cipher_suite if sent is not None else self.partner.security.cipher_suite
            path = Path(sent.local_path) if sent is not None and sent.local_path else None
            result = await asyncio.to_thread(
                self.ctx.receipt_keys.verify, receipt, self.partner_id, suite, path
            )
            verification, detail = result.outcome.value, result.detail
        accepted = verification == "verified" if required else True
        if not accepted or verification not in ("verified", "unsigned"):
            self._log(logging.WARNING, "%s for %s: %s %s", type(receipt).__name__, key, verification, detail)
        reason = receipt.reason if isinstance(receipt, NERP) else None
        text = receipt.text if isinstance(receipt, NERP) else None
        transfer = await self.ctx.ledger.record_receipt(
            key, kind, raw, verification, reason, text or None, accepted=accepted, session_id=self.session_id
        )
        self.receipts_received += 1
        self._emit(
            EventName.RECEIPT_RECEIVED,
            {
                "kind": kind.value,
                "dsn": receipt.dsn,
                "date": receipt.date,
                "time": receipt.time,
                "verification": verification,
                "accepted": accepted,
                "reason": reason,
                "known": transfer is not None,
            },
            transfer_id=transfer.id if transfer else None,
        )

    async def eerp_received(self, eerp: EERP, ctx: SessionContext) -> None:
        """Record the EERP (the outbound transfer becomes ``delivered``)."""
        await self._receipt(eerp, ctx)

    async def nerp_received(self, nerp: NERP, ctx: SessionContext) -> None:
        """Record the NERP (the outbound transfer becomes ``refused``)."""
        await self._receipt(nerp, ctx)

    # ------------------------------------------------------------------ what we send

    def _release_receipt_claims(self) -> None:
        for transfer_id in self._receipts_in_flight:
            self.ctx.receipts_claimed.discard(transfer_id)
        self._receipts_in_flight = []

    async def _confirm_receipts_in_flight(self) -> None:
        for transfer_id in self._receipts_in_flight:
            try:
                transfer = await self.ctx.ledger.mark_receipt_sent(transfer_id, session_id=self.session_id)
            except LedgerError as exc:
                self._log(logging.WARNING, "receipt bookkeeping: %s", exc, transfer_id=transfer_id)
                continue
            self.receipts_sent += 1
            self._emit(
                EventName.RECEIPT_SENT,
                {"kind": "EERP" if transfer.nerp_code is None else "NERP", "dsn": transfer.key.dsn},
                transfer_id=transfer_id,
            )
        self._release_receipt_claims()

    def _receipt_for(self, transfer: Transfer, level: ProtocolLevel) -> EERP | NERP | None:
        key = transfer.key
        if transfer.nerp_code is None:
            return EERP(
                dsn=key.dsn,
                date=key.date,
                time=key.time,
                destination=key.originator,
                originator=key.destination,
                user_data=transfer.user_data[:8],
            )
        if level < ProtocolLevel.V1_4:
            if not self._nerp_warning:
                self._log(logging.WARNING, "NERPs cannot be sent at protocol level %d; kept due", int(level))
                self._nerp_warning = True
            return None
        return NERP(
            dsn=key.dsn,
            date=key.date,
            time=key.time,
            destination=key.originator,
            originator=key.destination,
            creator=self.ctx.own_id,
            reason=transfer.nerp_code,
            text=(transfer.nerp_text or "") if level >= ProtocolLevel.V2_0 else "",
        )

    def _outbound_file(self, transfer: Transfer) -> OutboundFile:
        key = transfer.key
        assert transfer.local_path is not None
        return OutboundFile(
            dsn=key.dsn,
            originator=key.originator,
            destination=key.destination,
            path=Path(transfer.local_path),
            date=key.date,
            time=key.time,
            format=RecordFormat(transfer.record_format),
            lrecl=transfer.max_record_length,
            user_data=transfer.user_data,
            description=transfer.description,
            security=SecurityLevel(transfer.security_level),
            cipher_suite=transfer.cipher_suite,
            file_compression=transfer.compression,
            envelope=transfer.envelope,
            signed_eerp=transfer.signed_eerp,
            original_size=transfer.size if transfer.envelope else None,
        )

    async def _signed(self, receipt: EERP | NERP, transfer: Transfer, level: ProtocolLevel) -> EERP | NERP:
        keys = self.ctx.receipt_keys
        if not transfer.signed_eerp or keys is None or level < ProtocolLevel.V2_0 or not transfer.local_path:
            return receipt
        local = Path(transfer.local_path)
        envelope = local.parent / ".transmitted" / local.name
        transmitted = envelope if transfer.envelope and await asyncio.to_thread(envelope.is_file) else local
        try:
            return await asyncio.to_thread(keys.sign, receipt, transfer.cipher_suite, transmitted)
        except (OSError, ValueError) as exc:  # unable to sign: an unsigned receipt is still allowed
            self._log(logging.WARNING, "cannot sign the receipt: %s", exc, transfer_id=transfer.id)
            return receipt

    async def outbound(self, ctx: SessionContext) -> Sequence[OutboundItem]:
        """Due receipts first, then one claimed outbound file at a time."""
        await self._confirm_receipts_in_flight()
        if self.partner is None or self.ctx.stopping:
            return []
        level = ctx.negotiated.level if ctx.negotiated else ProtocolLevel.V2_0
        items: list[OutboundItem] = []
        # claimed in the ledger for this node, so gateways sharing the ledger never send the same
        # receipt; the in-memory claim below keeps concurrent sessions of this node apart
        receipt_rows = await self.ctx.ledger.claim_receipts(
            self.partner_id, self.ctx.node, limit=RECEIPTS_PER_TURN, session_id=self.session_id
        )
        checked = 0
        for transfer_id in (t.id for t in receipt_rows):
            if transfer_id in self.ctx.receipts_claimed:
                continue  # another session of ours is sending it
            if checked >= RECEIPTS_PER_TURN:
                break
            checked += 1
            self.ctx.receipts_claimed.add(transfer_id)
            # re-read under the claim: a concurrent session may have sent it since the query
            fresh = await self.ctx.ledger.get(transfer_id)
            receipt = self._receipt_for(fresh, level) if fresh.receipt_state is ReceiptState.DUE else None
            if receipt is None:
                self.ctx.receipts_claimed.discard(transfer_id)
                continue
            items.append(await self._signed(receipt, fresh, level))
            self._receipts_in_flight.append(transfer_id)
        if items:
            return items
        if ctx.negotiated is not None and not ctx.negotiated.can_send:
            return []
        while True:
            # a read first: claiming is a write transaction, most turns have nothing queued
            queued = await self.ctx.ledger.list_transfers(
                partner=self.partner_id, status=TransferStatus.QUEUED, direction=Direction.OUTBOUND, limit=1
            )
            if not queued:
                return []
            claimed = await self.ctx.ledger.claim_outbound(
                self.partner_id, self.ctx.node, session_id=self.session_id
            )
            if claimed is None:
                return []
            if claimed.local_path is None or not await asyncio.to_thread(os.path.isfile, claimed.local_path):
                await self.ctx.ledger.mark_failed(
                    claimed.id, f"local file missing: {claimed.local_path}", session_id=self.session_id
                )
                self._emit(
                    EventName.FILE_SEND_FAILED,
                    {"dsn": claimed.key.dsn, "error": "local file missing"},
                    transfer_id=claimed.id,
                )
                continue
            item = self._outbound_file(claimed)
            self._files_in_flight[(item.dsn, item.date, item.time, item.originator, item.destination)] = (
                claimed.id
            )
            self._log(logging.INFO, "sending %s", claimed.key, transfer_id=claimed.id)
            return [item]

    async def file_sent(self, result: SendResult, ctx: SessionContext) -> None:
        """EFPA → ``sent``; SFNA/EFNA → ``refused`` (or retried in a later session).

        SFNA 13 (duplicate file) without retry → ``sent`` as well: the partner has the virtual file
        already (typically its EFPA was lost with the connection) and its EERP/NERP decides.
        """
        transfer_id = self._files_in_flight.pop(result.sfid.key, None)
        if transfer_id is None:
            self._log(logging.WARNING, "result for a file this session did not claim: %s", result.sfid.key)
            return
        ledger = self.ctx.ledger
        if result.refused_at == "SFNA" and result.reason == SfnaReason.DUPLICATE_FILE and not result.retry:
            await self._partner_has_it(transfer_id, result)
            return
        if result.ok:
            await ledger.mark_sent(
                transfer_id,
                transmitted_size=result.octets_sent + result.restart_offset,
                transmitted_digest=result.sha256 or None,
                session_id=self.session_id,
            )
            self.files_sent += 1
            self._emit(
                EventName.FILE_SENT,
                {"dsn": result.sfid.dsn, "size": result.octets_sent, "restart_offset": result.restart_offset},
                transfer_id=transfer_id,
            )
            return
        text = f"{result.refused_at} {result.reason:02d} {result.text}".strip()
        if result.retry:
            # not again in this session (that would loop): failed now, queued again at session end
            await ledger.mark_failed(transfer_id, text, session_id=self.session_id)
            self._retry_later.append(transfer_id)
        else:
            await ledger.mark_refused(transfer_id, result.reason, text, session_id=self.session_id)
        self._emit(
            EventName.FILE_SEND_FAILED,
            {
                "dsn": result.sfid.dsn,
                "refused_at": result.refused_at,
                "reason": result.reason,
                "retry": result.retry,
            },
            transfer_id=transfer_id,
        )

    async def _partner_has_it(self, transfer_id: int, result: SendResult) -> None:
        """SFNA 13: the transfer waits for the receipt (``sent``), keeping what the last send recorded."""
        ledger = self.ctx.ledger
        text = f"SFNA 13 {result.text}".strip()
        try:
            current = await ledger.get(transfer_id)
            await ledger.mark_sent(
                transfer_id,
                transmitted_size=current.transmitted_size,
                transmitted_digest=current.transmitted_digest,
                session_id=self.session_id,
            )
        except LedgerError as exc:  # e.g. its receipt came in another session meanwhile
            self._log(logging.WARNING, "%s: %s; %s", result.sfid.key, text, exc, transfer_id=transfer_id)
            return
        self._log(
            logging.INFO,
            "%s: partner has it already (%s); waiting for its receipt",
            result.sfid.key,
            text,
            transfer_id=transfer_id,
        )
        self._emit(
            EventName.FILE_SENT,
            {"dsn": result.sfid.dsn, "size": 0, "restart_offset": 0, "duplicate": True},
            transfer_id=transfer_id,
        )

    # ------------------------------------------------------------------ the end

    async def session_ended(self, ctx: SessionContext, outcome: SessionOutcome) -> None:
        """Clean up: requeue unfinished sends, mark interrupted receptions for restart."""
        ledger = self.ctx.ledger
        try:
            if outcome.ok:
                await self._confirm_receipts_in_flight()
            for transfer_id in self._files_in_flight.values():
                with contextlib.suppress(LedgerError):
                    await ledger.mark_failed(
                        transfer_id,
                        f"session ended (ESID {outcome.reason:02d})",
                        retry=True,
                        session_id=self.session_id,
                    )
            for transfer_id in self._retry_later:
                with contextlib.suppress(LedgerError):
                    await ledger.requeue(transfer_id, session_id=self.session_id)
            for entry in self._inbound.values():
                if entry.duplicate:
                    continue
                partial = entry.target.parent / ".partial" / entry.target.name
                size = await asyncio.to_thread(_size, partial) or 0
                await self._fail_inbound(
                    entry.transfer_id,
                    f"session ended (ESID {outcome.reason:02d})",
                    restart_offset=size // 1024,
                )
        finally:
            for transfer_id in self._receipts_in_flight:  # not confirmed: due again for the next session
                with contextlib.suppress(Exception):
                    await ledger.unclaim_receipt(transfer_id, self.ctx.node, session_id=self.session_id)
            self._release_receipt_claims()
            self._files_in_flight.clear()
            self._inbound.clear()
            if self.peer_ip is not None:
                left = self.ctx.per_address.get(self.peer_ip, 1) - 1
                if left > 0:
                    self.ctx.per_address[self.peer_ip] = left
                else:
                    self.ctx.per_address.pop(self.peer_ip, None)
                self.peer_ip = None
            self.ctx.handlers.discard(self)
            if self.started:
                self._emit(
                    EventName.SESSION_ENDED,
                    {
                        "reason": outcome.reason,
                        "text": outcome.text,
                        "by_peer": outcome.by_peer,
                        "files_received": self.files_received,
                        "files_sent": self.files_sent,
                        "receipts_sent": self.receipts_sent,
                        "receipts_received": self.receipts_received,
                    },
                )


def _swap_in_plain(target: Path, envelope: Path, plain: Path) -> None:
    envelope.parent.mkdir(parents=True, exist_ok=True)
    os.replace(target, envelope)
    os.replace(plain, target)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """Size and SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
