"""``OFTP2Hook``: one partner connection — send files, poll, release receipts, test the connection.

The hook owns every network detail (TCP/TLS, SSID identity, timeouts) and records every transfer in
the ledger; operators only pass parameters.  Each public method has an async twin (``a…``) that the
sync one runs with ``asyncio.run``; blocking work (ledger, hashing) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from oftp2_provider.connection import ConnectionConfigError, OFTP2ConnectionConfig, resolve_secret
from oftp2_provider.hooks.errors import (
    OFTP2AuthenticationError,
    OFTP2ConfigError,
    OFTP2ConnectionFailed,
    OFTP2Error,
    OFTP2Timeout,
    classify_esid,
)
from oftp2_provider.hooks.ledger import open_ledger
from oftp2_provider.hooks.session import LedgerSessionHandler, SecureLedgerSessionHandler
from oftp2_provider.ledger import Ledger, Transfer, TransferStatus, VirtualFileKey
from oftp2_provider.protocol.api import (
    CmsAuthenticator,
    OutboundFile,
    SessionConfig,
    Timeouts,
    make_timestamp,
)
from oftp2_provider.protocol.certs import PartnerCertificates
from oftp2_provider.protocol.commands import ProtocolLevel, RecordFormat, SecurityLevel
from oftp2_provider.protocol.errors import ProtocolError, SessionRejected
from oftp2_provider.protocol.secure import InboundSecurity, OutboundSecurity, protect_outbound

log = logging.getLogger(__name__)

_DONE = (TransferStatus.SENT, TransferStatus.DELIVERED, TransferStatus.REFUSED)


@dataclass(frozen=True)
class OutboundSpec:
    """A file the caller wants sent: local octets, DSN, identity and SFID attributes.

    ``key`` pins the virtual-file identity (date/time) so a retry finds the same ledger row; without
    it a fresh timestamp is used.
    """

    path: Path
    dsn: str
    size: int
    sha256: str
    key: VirtualFileKey | None = None
    format: str = "U"
    lrecl: int = 0
    description: str = ""
    user_data: str = ""
    signed_eerp: bool = False
    security: int = 0
    cipher_suite: int = 0
    compression: int = 0
    #: Set by :meth:`OFTP2Hook.protect`: file security was decided (applied or not) for this spec,
    #: so :meth:`OFTP2Hook.send` does not apply the connection's defaults again.
    protected: bool = False


@dataclass(frozen=True)
class SendOutcome:
    """What happened to one :class:`OutboundSpec` (JSON-friendly via :meth:`as_dict`)."""

    transfer_id: int
    dsn: str
    virtual_file_key: str
    date: str
    time: str
    path: str
    size: int
    sha256: str
    status: str
    skipped: bool = False
    refused_at: str = ""
    reason: int = 0
    text: str = ""
    partner_retry: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for XCom."""
        return asdict(self)


@dataclass
class PollResult:
    """What a poll session brought: received files and receipts, plus receipts we sent."""

    received: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    receipts_sent: int = 0
    files_sent: list[dict[str, Any]] = field(default_factory=list)
    #: Received files that failed the security checks (EFNA 21–23 / NERP), kept in quarantine.
    refused: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for XCom."""
        return asdict(self)


class OFTP2Hook(BaseHook):
    """Talk OFTP2 to the partner of an ``oftp2`` connection and keep the ledger up to date.

    :param oftp2_conn_id: the ``oftp2`` connection (host/port of the partner, our Odette ID as login).
    """

    conn_name_attr = "oftp2_conn_id"
    default_conn_name = "oftp2_default"
    conn_type = "oftp2"
    hook_name = "OFTP2"

    def __init__(self, oftp2_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.oftp2_conn_id = oftp2_conn_id

    # ------------------------------------------------------------------ configuration

    @cached_property
    def config(self) -> OFTP2ConnectionConfig:
        """The validated connection (raises :class:`OFTP2ConfigError` naming bad fields)."""
        conn = self.get_connection(self.oftp2_conn_id)
        try:
            return OFTP2ConnectionConfig.from_connection(conn)
        except ConnectionConfigError as exc:
            raise OFTP2ConfigError(str(exc)) from None

    def get_ledger(self) -> Ledger:
        """The ledger this connection records into (cached per process)."""
        extras = self.config.extras
        if extras.ledger_conn_id:
            return open_ledger(extras.ledger_conn_id, None)
        return open_ledger(None, str(self.config.ledger_path))

    def session_config(self) -> SessionConfig:
        """Our side of the session, from the connection."""
        c = self.config
        e = c.extras
        return SessionConfig(
            odette_id=c.odette_id,
            password=c.password,
            level=ProtocolLevel(e.level),
            sdeb=e.sdeb,
            credit=e.credit,
            compression=e.compression,
            restart=e.restart,
            secure_auth=e.secure_auth,
            timeouts=Timeouts(connect=e.connect_timeout, read=e.response_timeout, idle=e.response_timeout),
            authenticator=self.authenticator() if e.secure_auth else None,
        )

    # ------------------------------------------------------------------ keys and certificates

    @cached_property
    def _own_pair(self) -> tuple[Any, Any] | None:
        e = self.config.extras
        if not (e.signing_cert and e.signing_key):
            return None
        from oftp2_provider.protocol.certs import load_certificate, load_private_key

        try:
            cert = load_certificate(resolve_secret(e.signing_cert))
        except ValueError as exc:
            raise OFTP2ConfigError(f"connection {self.oftp2_conn_id!r}: extra.signing_cert: {exc}") from None
        try:
            key = load_private_key(resolve_secret(e.signing_key))
        except ValueError as exc:
            raise OFTP2ConfigError(f"connection {self.oftp2_conn_id!r}: extra.signing_key: {exc}") from None
        return key, cert

    @cached_property
    def _partner_cert(self) -> Any | None:
        ref = self.config.extras.partner_cert
        if not ref:
            return None
        from oftp2_provider.protocol.certs import load_certificate

        try:
            return load_certificate(resolve_secret(ref))
        except ValueError as exc:
            raise OFTP2ConfigError(f"connection {self.oftp2_conn_id!r}: extra.partner_cert: {exc}") from None

    def _need(self, what: str, *, own: bool = False, partner: bool = False) -> None:
        missing = []
        if own and self._own_pair is None:
            missing.append("extra.signing_cert and extra.signing_key")
        if partner and self._partner_cert is None:
            missing.append("extra.partner_cert")
        if missing:
            raise OFTP2ConfigError(f"connection {self.oftp2_conn_id!r}: {what} needs {' and '.join(missing)}")

    def authenticator(self) -> CmsAuthenticator:
        """SECD/AUCH/AURP crypto: our signing key answers challenges, the partner certificate gets ours."""
        self._need("secure_auth", own=True, partner=True)
        assert self._own_pair is not None
        key, cert = self._own_pair
        return CmsAuthenticator(key, cert, {self.config.extras.partner_id: self._partner_cert})

    def outbound_security(
        self,
        *,
        sign: bool | None = None,
        encrypt: bool | None = None,
        compress: bool | None = None,
        signed_eerp: bool | None = None,
    ) -> OutboundSecurity:
        """File security for sending; each option defaults to the connection's extras."""
        e = self.config.extras
        sign = e.sign_files if sign is None else sign
        encrypt = e.encrypt_files if encrypt is None else encrypt
        compress = e.compress_files if compress is None else compress
        signed_eerp = e.signed_eerp if signed_eerp is None else signed_eerp
        if sign:
            self._need("signing files", own=True)
        if encrypt:
            self._need("encrypting files", partner=True)
        key, cert = self._own_pair if sign and self._own_pair else (None, None)
        try:
            return OutboundSecurity(
                suite=e.cipher_suite if (sign or encrypt or signed_eerp) else 0,
                sign=sign,
                compress=compress,
                encrypt=encrypt,
                signed_eerp=signed_eerp,
                key=key,
                cert=cert,
                partner_cert=self._partner_cert if encrypt else None,
            )
        except ValueError as exc:
            raise OFTP2ConfigError(f"connection {self.oftp2_conn_id!r}: file security: {exc}") from None

    def inbound_security(self) -> InboundSecurity:
        """Keys for received files: ours decrypts (and signs receipts), the partner's verifies."""
        pair = self._own_pair
        partner = self._partner_cert
        return InboundSecurity(
            key=pair[0] if pair else None,
            cert=pair[1] if pair else None,
            partners={self.config.extras.partner_id: PartnerCertificates.single(partner)} if partner else {},
            receipts=False,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS client context (``None`` without TLS); certificates come from secret references."""
        e = self.config.extras
        if not e.tls:
            return None
        from oftp2_provider.protocol.certs import make_client_ssl_context

        try:
            ca = resolve_secret(e.tls_ca) if e.tls_ca else None
            cert = resolve_secret(e.tls_cert) if e.tls_cert else None
            key = resolve_secret(e.tls_key) if e.tls_key else None
            password = e.tls_key_password.encode() if e.tls_key_password else None
            return make_client_ssl_context(
                ca=ca, cert=cert, key=key, check_hostname=e.tls_check_hostname, password=password
            )
        except (ValueError, ssl.SSLError, OSError) as exc:
            raise OFTP2ConfigError(f"connection {self.oftp2_conn_id!r}: TLS settings: {exc}") from None

    # ------------------------------------------------------------------ session plumbing

    @contextlib.asynccontextmanager
    async def _session(self, handler: Any = None) -> AsyncIterator[Any]:
        """Open a session with the partner; map every failure to an :class:`OFTP2Error`.

        On a clean exit the session is closed properly (CD, the partner may send what it has —
        files and receipts go to ``handler`` — then ESID 00).
        """
        from oftp2_provider.protocol.api import PartnerConfig
        from oftp2_provider.protocol.transport import OFTPClient, SessionAborted

        c = self.config
        ctx = self.ssl_context()
        partner = (
            PartnerConfig(odette_id=c.extras.partner_id, password=c.extras.partner_password)
            if c.extras.partner_password
            else None
        )
        client = OFTPClient(
            self.session_config(),
            c.host,
            c.port,
            partner=partner,
            ssl=ctx,
            server_hostname=c.host if ctx is not None else None,
            handler=handler,
        )
        where = f"{c.host}:{c.port}"
        try:
            try:
                await client.connect()
            except ssl.SSLError as exc:
                raise OFTP2ConnectionFailed(
                    f"TLS handshake with {where} failed: {exc}", retryable=False
                ) from None
            except (OSError, ConnectionError) as exc:
                raise OFTP2ConnectionFailed(
                    f"cannot connect to {where} (partner not available): {exc}"
                ) from None
            yield client
            await client.close()
        except SessionRejected as exc:
            raise classify_esid(exc.reason, exc.text) from None
        except SessionAborted as exc:
            if exc.reason == 9:
                raise OFTP2Timeout(f"{where}: {exc}") from None
            failure = classify_esid(exc.reason, str(exc))
            if isinstance(failure, OFTP2AuthenticationError):  # e.g. we could not answer AUCH: ESID 11
                raise failure from None
            raise OFTP2ConnectionFailed(f"session with {where} failed: {exc}") from None
        except (TimeoutError, asyncio.TimeoutError):
            raise OFTP2Timeout(f"{where} did not answer in time (partner not available)") from None
        except (OSError, ConnectionError, ProtocolError) as exc:
            raise OFTP2ConnectionFailed(f"session with {where} broke: {exc}") from None
        finally:
            if client.outcome is None:
                with contextlib.suppress(Exception):
                    await client.abort()

    def _handler(self, ledger: Ledger, hold_receipts: bool = False) -> SecureLedgerSessionHandler:
        """The session handler: ledger bookkeeping inside OFTP2 file security."""
        c = self.config
        inner = LedgerSessionHandler(
            ledger,
            partner=c.extras.partner_id,
            own_id=c.odette_id,
            inbox=c.inbox,
            hold_receipts=hold_receipts,
            receipt_signer=self._own_pair,
        )
        return SecureLedgerSessionHandler(inner, self.inbound_security(), own_id=c.odette_id)

    # ------------------------------------------------------------------ file security

    def protect(
        self,
        spec: OutboundSpec,
        target: Path,
        *,
        sign: bool | None = None,
        encrypt: bool | None = None,
        compress: bool | None = None,
    ) -> OutboundSpec:
        """CMS-protect a file (sign, compress, encrypt — each defaults to the connection) for sending.

        Uses :func:`~oftp2_provider.protocol.secure.protect_outbound`; the envelope is written to
        ``target``.  The returned spec sends the envelope while keeping the plain file's size and
        SHA-256 as the transfer's identity in the ledger.  Missing certificates raise
        :class:`OFTP2ConfigError` naming the connection field.  CPU work: call it off the event loop.
        """
        from dataclasses import replace

        options = self.outbound_security(
            sign=sign, encrypt=encrypt, compress=compress, signed_eerp=spec.signed_eerp
        )
        if not options.active:
            suite = int(options.cipher_suite) if spec.signed_eerp else spec.cipher_suite
            return replace(spec, protected=True, cipher_suite=suite)
        target.parent.mkdir(parents=True, exist_ok=True)
        item = OutboundFile(
            dsn=spec.dsn,
            originator=self.config.odette_id,
            destination=self.config.extras.partner_id,
            path=spec.path,
        )
        protected = protect_outbound(item, options, workdir=target.parent)
        assert protected.temp is not None
        os.replace(protected.temp, target)
        sent = protected.item
        return replace(
            spec,
            path=target,
            format="U",
            lrecl=0,
            security=int(sent.security),
            cipher_suite=sent.cipher_suite,
            compression=sent.file_compression,
            protected=True,
        )

    def _auto_protect(self, specs: Sequence[OutboundSpec]) -> list[OutboundSpec]:
        """Apply the connection's file-security defaults (and signed EERP) to specs nobody protected yet."""
        e = self.config.extras
        if not (e.sign_files or e.encrypt_files or e.compress_files or e.signed_eerp):
            return list(specs)
        from dataclasses import replace

        workdir = self.config.ledger_path.parent / "outbound-cms"
        out = []
        for spec in specs:
            if spec.protected:
                out.append(spec)
                continue
            name = (
                f"{spec.sha256[:16]}-{spec.key.date + spec.key.time if spec.key else uuid.uuid4().hex[:12]}"
            )
            spec = replace(spec, signed_eerp=spec.signed_eerp or e.signed_eerp)
            out.append(self.protect(spec, workdir / f"{name}.p7"))
        return out

    # ------------------------------------------------------------------ test connection

    async def atest_connection(self) -> tuple[bool, str]:
        """Start and end a real session (SSID exchange, ESID 00)."""
        try:
            async with self._session() as client:
                negotiated = client.negotiated
            level = getattr(negotiated, "level", None)
            suffix = f" (level {int(level)})" if level is not None else ""
            return True, f"OFTP session with {self.config.extras.partner_id} started and ended{suffix}"
        except OFTP2Error as exc:
            return False, str(exc)

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's connection test: a real session start and end."""
        try:
            return asyncio.run(self.atest_connection())
        except OFTP2Error as exc:  # configuration errors are raised before the session
            return False, str(exc)

    # ------------------------------------------------------------------ send

    def _enqueue(
        self, ledger: Ledger, specs: Sequence[OutboundSpec], force: bool
    ) -> tuple[list[Transfer], list[bool]]:
        """Record the files in the ledger; returns the rows and whether each was already done."""
        partner = self.config.extras.partner_id
        rows: list[Transfer] = []
        done: list[bool] = []
        for spec in specs:
            key = spec.key
            if key is None:
                date, time_ = make_timestamp()
                key = VirtualFileKey(spec.dsn, date, time_, self.config.odette_id, partner)
            existing = ledger.find(key)
            if existing is not None and existing.status in _DONE:
                if not force:
                    rows.append(existing)
                    done.append(True)
                    continue
                date, time_ = make_timestamp()
                key = VirtualFileKey(spec.dsn, date, time_, key.originator, key.destination)
            elif existing is not None and existing.status is TransferStatus.FAILED:
                ledger.requeue(existing.id)
            row = ledger.enqueue_outbound(
                partner,
                key,
                spec.path,
                spec.size,
                spec.sha256,
                security_level=spec.security,
                cipher_suite=spec.cipher_suite,
                compression=spec.compression,
                envelope=1 if (spec.security or spec.compression) else 0,
                signed_eerp=spec.signed_eerp,
                record_format=spec.format,
                max_record_length=spec.lrecl,
                user_data=spec.user_data,
                description=spec.description,
            )
            rows.append(row)
            done.append(False)
        return rows, done

    async def asend(
        self, specs: Sequence[OutboundSpec], *, force: bool = False, exchange: bool = True
    ) -> list[SendOutcome]:
        """Send files (and anything else queued for this partner); returns one outcome per spec.

        Files the ledger already records as sent, delivered or refused are not sent again unless
        ``force`` (then under a new timestamp).  With ``exchange`` the turn is handed to the partner
        afterwards so EERPs it sends right away land in the ledger in the same session.
        """
        ledger = await asyncio.to_thread(self.get_ledger)
        specs = await asyncio.to_thread(self._auto_protect, specs)
        rows, done = await asyncio.to_thread(self._enqueue, ledger, specs, force)
        pending = {row.id for row, d in zip(rows, done, strict=True) if not d}
        results: dict[int, Any] = {}
        if pending:
            worker = f"airflow:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            async with self._session(self._handler(ledger) if exchange else None) as client:
                await self._send_queued(client, ledger, worker, results)
        outcomes = []
        for row, spec in zip(rows, specs, strict=True):
            current = await asyncio.to_thread(ledger.get, row.id)
            result = results.get(row.id)
            outcomes.append(
                SendOutcome(
                    transfer_id=row.id,
                    dsn=row.key.dsn,
                    virtual_file_key=str(row.key),
                    date=row.key.date,
                    time=row.key.time,
                    path=str(spec.path),
                    size=spec.size,
                    sha256=spec.sha256,
                    status=current.status.value,
                    skipped=row.id not in pending,
                    refused_at=getattr(result, "refused_at", "") if result else "",
                    reason=int(getattr(result, "reason", 0) or current.nerp_code or 0)
                    if result
                    else int(current.nerp_code or 0),
                    text=getattr(result, "text", "") if result else (current.nerp_text or ""),
                    partner_retry=bool(getattr(result, "retry", False)) if result else False,
                )
            )
        return outcomes

    async def _send_queued(self, client: Any, ledger: Ledger, worker: str, results: dict[int, Any]) -> None:
        partner = self.config.extras.partner_id
        while True:
            row = await asyncio.to_thread(ledger.claim_outbound, partner, worker)
            if row is None:
                return
            exists = bool(row.local_path) and await asyncio.to_thread(Path(row.local_path or ".").is_file)
            if not exists:
                await asyncio.to_thread(
                    ledger.mark_failed, row.id, f"local file {row.local_path!r} is missing"
                )
                continue
            outbound = OutboundFile(
                dsn=row.key.dsn,
                originator=row.key.originator,
                destination=row.key.destination,
                path=Path(row.local_path or ""),
                date=row.key.date,
                time=row.key.time,
                format=RecordFormat(row.record_format),
                lrecl=row.max_record_length,
                user_data=row.user_data,
                description=row.description,
                security=SecurityLevel(row.security_level),
                cipher_suite=row.cipher_suite,
                file_compression=row.compression,
                envelope=row.envelope,
                signed_eerp=row.signed_eerp,
                original_size=row.size if row.envelope else None,
                # a CMS envelope is made anew (fresh key, IV, signing time) when a task retries:
                # never resume a partial copy of an earlier envelope under the same SFID
                restart=0 if row.envelope else None,
            )
            try:
                result = await client.send_file(outbound)
            except BaseException as exc:
                await asyncio.to_thread(
                    ledger.mark_failed, row.id, f"session broke while sending: {exc}", retry=True
                )
                raise
            results[row.id] = result
            if result.ok:
                digest = result.sha256 or None
                if row.cipher_suite:  # the EERP hash input: the suite's hash of the octets sent
                    from oftp2_provider.protocol.receipts import file_hash

                    raw = await asyncio.to_thread(file_hash, outbound.path or "", row.cipher_suite)
                    digest = raw.hex()
                await asyncio.to_thread(
                    ledger.mark_sent,
                    row.id,
                    transmitted_size=result.octets_sent,
                    transmitted_digest=digest,
                )
            elif result.retry:
                text = f"{result.refused_at} {result.reason:02d} {result.text}".strip()
                await asyncio.to_thread(ledger.mark_failed, row.id, text, retry=False)
            else:
                await asyncio.to_thread(ledger.mark_refused, row.id, result.reason, result.text)

    def send(
        self, specs: Sequence[OutboundSpec], *, force: bool = False, exchange: bool = True
    ) -> list[SendOutcome]:
        """Sync twin of :meth:`asend`."""
        return asyncio.run(self.asend(specs, force=force, exchange=exchange))

    # ------------------------------------------------------------------ poll

    async def apoll(self, *, hold_receipts: bool = False) -> PollResult:
        """Call the partner, send what is queued for it (files and due receipts), take what it has."""
        ledger = await asyncio.to_thread(self.get_ledger)
        handler = self._handler(ledger, hold_receipts)
        worker = f"airflow-poll:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        results: dict[int, Any] = {}
        async with self._session(handler) as client:
            await self._send_queued(client, ledger, worker, results)
        inner = handler.ledger_handler
        return PollResult(
            received=inner.received,
            duplicates=inner.duplicates,
            receipts=inner.receipts,
            receipts_sent=inner.receipts_sent,
            files_sent=[{"transfer_id": tid, "ok": bool(r.ok)} for tid, r in results.items()],
            refused=[
                {"dsn": sfid.dsn, "answer": answer, "reason": code, "text": text}
                for sfid, answer, code, text in handler.failures
            ],
        )

    def poll(self, *, hold_receipts: bool = False) -> PollResult:
        """Sync twin of :meth:`apoll`."""
        return asyncio.run(self.apoll(hold_receipts=hold_receipts))

    # ------------------------------------------------------------------ receipts

    def release_receipt(
        self, transfer_id: int, *, nerp_code: int | None = None, text: str | None = None
    ) -> dict[str, Any]:
        """Release a held EERP (or decide a NERP) for an inbound file: gateway API or ledger."""
        extras = self.config.extras
        if extras.gateway_api_url:
            import httpx

            action = "release" if nerp_code is None else "refuse"
            body: dict[str, Any] = {"text": text or ""}
            if nerp_code is not None:
                body["nerp_code"] = nerp_code
            auth = (
                (extras.gateway_api_user or "", extras.gateway_api_password or "")
                if extras.gateway_api_user
                else None
            )
            url = f"{extras.gateway_api_url.rstrip('/')}/api/v1/transfers/{transfer_id}/{action}"
            try:
                response = httpx.post(url, json=body, auth=auth, timeout=extras.connect_timeout)
            except httpx.HTTPError as exc:
                raise OFTP2ConnectionFailed(f"gateway API {url} not reachable: {exc}") from None
            if response.status_code >= 400:
                raise OFTP2Error(
                    f"gateway refused to {action} the receipt of transfer {transfer_id}: "
                    f"HTTP {response.status_code} {response.text[:200]}",
                    retryable=response.status_code >= 500,
                )
            return dict(response.json())
        transfer = self.get_ledger().release_receipt(
            transfer_id, ok=nerp_code is None, nerp_code=nerp_code, text=text
        )
        return {"transfer_id": transfer.id, "status": transfer.status.value, "nerp_code": transfer.nerp_code}
