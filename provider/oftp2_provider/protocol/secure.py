"""File security for any embedder of :class:`~.transport.OFTPClient` / :class:`~.transport.OFTPServer`.

Three reusable pieces, so that the CLI, the Airflow hook or a custom program get OFTP2 file security
(RFC 5024 §6) without re-implementing it:

* **Outbound** — :func:`protect_outbound` turns an :class:`~.api.OutboundFile` plus
  :class:`OutboundSecurity` options into a :class:`ProtectedFile`: the CMS envelope in a temporary
  file and the ``OutboundFile`` to send, with SFIDSEC/SFIDCIPH/SFIDCOMP/SFIDENV/SFIDSIGN set,
  SFIDFSIZ/SFIDOSIZ following from the envelope and the original size, and format ``U`` (secured
  files travel unstructured).
* **Inbound** — :class:`SecureSessionHandler` wraps a :class:`~.api.SessionHandler`.  It refuses
  an SFID the :class:`~.suites.SecurityPolicy` (or the missing keys) does not allow with SFNA
  15–20; receives secured files into a hidden ``.transmitted/`` directory; after EFID decrypts,
  decompresses and verifies into the final destination (EFNA 21/22/23 on failure, the received
  envelope moved to ``quarantine/`` and never delivered); and answers every file with an EERP —
  signed when SFIDSIGN = ``Y`` — or a NERP 31–34 when processing after EFPA failed.
* **Receipts in** — :meth:`SecureSessionHandler.expect_receipt` registers what we sent;
  received EERP/NERPs are then checked with :func:`~.receipts.verify_receipt` against the
  partner's receipt certificate and the hash of the transmitted file, and the
  :class:`~.receipts.ReceiptVerification` is kept in :attr:`SecureSessionHandler.verifications`.

The inner handler sees only delivered, verified plain files (``file_received`` gets the final path,
size and SHA-256 of the plain content); it should not queue receipts itself (``auto_eerp=False``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from .api import (
    AcceptDecision,
    ConnectionRequest,
    EndFileDecision,
    FileDecision,
    OutboundFile,
    OutboundItem,
    ReceivedFile,
    SendResult,
    SessionContext,
    SessionHandler,
    SessionOutcome,
    make_eerp,
    make_nerp,
)
from .certs import PartnerCertificates
from .cms import ProtectResult, UnprotectResult, protect_file, unprotect_file
from .commands import EERP, EFID, NERP, SFID, RecordFormat, SecurityLevel
from .errors import NerpReason, SfnaReason
from .receipts import ReceiptOutcome, ReceiptVerification, file_hash, sign_receipt, verify_receipt
from .suites import CipherSuite, SecurityError, SecurityPolicy, UnsupportedSuite, suite_from_code

__all__ = [
    "InboundSecurity",
    "OutboundSecurity",
    "ProtectedFile",
    "SecureSessionHandler",
    "build_receipt",
    "check_offer",
    "is_secured",
    "protect_outbound",
    "protect_outbound_async",
    "quarantine_file",
    "unprotect_received",
]

log = logging.getLogger(__name__)

FileKey = tuple[str, str, str, str, str]

# ---------------------------------------------------------------------------------------------------
# Outbound


@dataclass(frozen=True)
class OutboundSecurity:
    """What to apply to an outgoing file.

    ``sign`` uses ``key``/``cert`` (ours), ``encrypt`` the partner's ``partner_cert``;
    ``signed_eerp`` asks the partner for a signed receipt (SFIDSIGN = ``Y``).  Signing, encrypting
    and signed receipts need a cipher ``suite`` 01–06; compression alone works with suite 00.
    """

    suite: CipherSuite | int = CipherSuite.NONE
    sign: bool = False
    compress: bool = False
    encrypt: bool = False
    signed_eerp: bool = False
    key: rsa.RSAPrivateKey | None = None
    cert: x509.Certificate | None = None
    partner_cert: x509.Certificate | None = None
    include_cert: bool = False

    def __post_init__(self) -> None:
        suite = suite_from_code(int(self.suite))
        object.__setattr__(self, "suite", suite)
        wanted = [n for n, on in (("sign", self.sign), ("encrypt", self.encrypt)) if on]
        if self.signed_eerp:
            wanted.append("signed_eerp")
        if wanted and suite is CipherSuite.NONE:
            raise UnsupportedSuite(f"{', '.join(wanted)} needs a cipher suite 01-06 (suite is 00)")
        if self.sign and (self.key is None or self.cert is None):
            raise ValueError("OutboundSecurity.sign needs our private key and certificate (key=, cert=)")
        if self.encrypt and self.partner_cert is None:
            raise ValueError(
                "OutboundSecurity.encrypt needs the partner's encryption certificate (partner_cert=)"
            )

    @property
    def cipher_suite(self) -> CipherSuite:
        """The suite as a :class:`~.suites.CipherSuite`."""
        return suite_from_code(int(self.suite))

    @property
    def active(self) -> bool:
        """True when a CMS layer (sign, compress or encrypt) is applied."""
        return self.sign or self.compress or self.encrypt


@dataclass(frozen=True)
class ProtectedFile:
    """The result of :func:`protect_outbound`.

    ``item`` is what to send; ``expected_hash`` is the EERPHSH a signed receipt must carry (the
    suite's hash of the transmitted octets; ``None`` without a suite); ``temp`` is the envelope
    file to remove with :meth:`cleanup` once the file was sent (``None`` when nothing was applied).
    """

    item: OutboundFile
    original: Path
    suite: CipherSuite
    result: ProtectResult | None = None
    expected_hash: bytes | None = None
    temp: Path | None = None

    def cleanup(self) -> None:
        """Remove the temporary envelope (harmless when there is none)."""
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


def protect_outbound(
    item: OutboundFile,
    options: OutboundSecurity,
    *,
    workdir: Path | str | None = None,
    chunk_size: int = 1 << 20,
    resumable: bool = False,
) -> ProtectedFile:
    """Sign / compress / encrypt ``item.path`` per *options* and return what to send.

    The envelope is written to *workdir* (default: the system temporary directory).  Without any
    CMS layer the item is returned with only SFIDCIPH/SFIDSIGN set (and the expected hash computed
    when a signed receipt was asked for).

    Every call produces different octets (fresh content-encryption key, IV and signing time), so a
    transfer of the returned item must not resume a partial transfer of an earlier envelope under
    the same SFID: the item offers no restart (SFIDREST 0) unless *resumable* is true — set it only
    when you keep ``temp`` and send this very envelope again after an interruption.
    """
    if item.path is None:
        raise ValueError("protect_outbound needs an OutboundFile with path= (not source=)")
    suite = options.cipher_suite
    if not options.active:
        expected = file_hash(item.path, suite, chunk_size=chunk_size) if options.signed_eerp else None
        plain = dataclasses.replace(item, cipher_suite=int(suite), signed_eerp=options.signed_eerp)
        return ProtectedFile(plain, item.path, suite, None, expected, None)
    directory = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    temp = directory / f".oftp2-{uuid.uuid4().hex[:16]}.cms"
    result = protect_file(
        item.path,
        temp,
        suite=suite,
        sign_key=options.key if options.sign else None,
        sign_cert=options.cert if options.sign else None,
        compress=options.compress,
        encrypt_for=options.partner_cert if options.encrypt else None,
        chunk_size=chunk_size,
        include_cert=options.include_cert,
    )
    try:
        secured = dataclasses.replace(
            item,
            path=temp,
            format=RecordFormat.UNSTRUCTURED,
            lrecl=0,
            security=result.security_level,
            cipher_suite=int(suite),
            file_compression=int(result.compressed),
            envelope=result.envelope,
            signed_eerp=options.signed_eerp,
            original_size=result.original_size,
            restart=item.restart if resumable else 0,
        )
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    expected = result.sha_of_transmitted if suite is not CipherSuite.NONE else None
    return ProtectedFile(secured, item.path, suite, result, expected, temp)


async def protect_outbound_async(
    item: OutboundFile,
    options: OutboundSecurity,
    *,
    workdir: Path | str | None = None,
    resumable: bool = False,
) -> ProtectedFile:
    """:func:`protect_outbound` in a worker thread."""
    return await asyncio.to_thread(protect_outbound, item, options, workdir=workdir, resumable=resumable)


# ---------------------------------------------------------------------------------------------------
# Inbound


@dataclass(frozen=True)
class InboundSecurity:
    """Our keys, the partners' certificates and the policy for received files.

    ``key``/``cert`` decrypt files and sign receipts; ``partners`` maps Odette IDs (compared upper
    case) to their certificates (``sign`` verifies file signatures, ``receipt``/``sign`` verify
    receipts); ``policy`` (or ``partner_policies[ID]``) decides SFNA 15–20.  With
    ``verify_before_confirm`` (default) a secured file is unprotected before EFPA and failures are
    answered with EFNA 21/22/23; otherwise it is confirmed first and failures give NERP 31/32/33.
    ``quarantine`` is where failed envelopes go (default: ``<destination dir>/quarantine``).
    ``receipts`` = answer every delivered file with an EERP (NERP on failure after EFPA).
    Decompression stops with EFNA 23 / NERP 32 beyond the announced original size (SFIDOSIZ plus
    ``osiz_slack`` octets) or beyond ``max_file_size`` — a compression bomb fills no disk.
    """

    key: rsa.RSAPrivateKey | None = None
    cert: x509.Certificate | None = None
    partners: Mapping[str, PartnerCertificates] = field(default_factory=dict)
    policy: SecurityPolicy = field(default_factory=SecurityPolicy)
    partner_policies: Mapping[str, SecurityPolicy] = field(default_factory=dict)
    quarantine: Path | None = None
    verify_before_confirm: bool = True
    receipts: bool = True
    max_file_size: int | None = None
    osiz_slack: int = 64 * 1024

    def __post_init__(self) -> None:
        if (self.key is None) != (self.cert is None):
            raise ValueError("InboundSecurity needs both key= and cert= (or neither)")
        object.__setattr__(self, "partners", {k.strip().upper(): v for k, v in self.partners.items()})
        object.__setattr__(
            self, "partner_policies", {k.strip().upper(): v for k, v in self.partner_policies.items()}
        )

    def certificates(self, *codes: str) -> PartnerCertificates | None:
        """The certificates of the first of *codes* (Odette IDs) that is configured."""
        for code in codes:
            certs = self.partners.get(code.strip().upper()) if code else None
            if certs is not None:
                return certs
        return None

    def policy_for(self, *codes: str) -> SecurityPolicy:
        """The partner's policy, or the default one."""
        for code in codes:
            policy = self.partner_policies.get(code.strip().upper()) if code else None
            if policy is not None:
                return policy
        return self.policy


def is_secured(sfid: SFID) -> bool:
    """True when the file carries a CMS layer (signed, encrypted or compressed)."""
    return sfid.security is not SecurityLevel.NONE or sfid.compression != 0


def _file_signers(certs: PartnerCertificates | None) -> list[x509.Certificate]:
    if certs is None:
        return []
    out: list[x509.Certificate] = []
    for cert in (certs.sign, certs.receipt):
        if cert is not None and cert not in out:
            out.append(cert)
    return out


def check_offer(sfid: SFID, security: InboundSecurity, partner_code: str = "") -> FileDecision | None:
    """The SFNA refusal for an offered file, or ``None`` to go on.

    Besides the policy (SFNA 15–20) a file is refused when we could not process it: encrypted
    without our key (16), signed without a partner certificate to verify it (19), a signed receipt
    asked for without a suite or without our signing key (15 / 99).
    """
    codes = (sfid.originator, partner_code)
    refusal = security.policy_for(*codes).refusal(
        security=int(sfid.security),
        cipher_suite=sfid.cipher_suite,
        compression=sfid.compression,
        envelope=sfid.envelope,
    )
    if refusal is not None:
        reason, text = refusal
        return FileDecision.refuse(reason, text=text)
    encrypted = sfid.security in (SecurityLevel.ENCRYPTED, SecurityLevel.ENCRYPTED_AND_SIGNED)
    signed = sfid.security in (SecurityLevel.SIGNED, SecurityLevel.ENCRYPTED_AND_SIGNED)
    if encrypted and security.key is None:
        return FileDecision.refuse(
            SfnaReason.ENCRYPTED_FILE_NOT_ALLOWED, text="no private key configured to decrypt files"
        )
    if signed and not _file_signers(security.certificates(*codes)):
        who = sfid.originator or partner_code
        return FileDecision.refuse(
            SfnaReason.SIGNED_FILE_NOT_ALLOWED,
            text=f"no certificate configured to verify signatures of {who}",
        )
    if sfid.signed_eerp:
        if sfid.cipher_suite == 0:
            return FileDecision.refuse(
                SfnaReason.CIPHER_SUITE_NOT_SUPPORTED, text="a signed EERP needs a cipher suite (SFIDCIPH 00)"
            )
        if security.key is None and security.receipts:
            return FileDecision.refuse(
                SfnaReason.UNSPECIFIED, text="signed EERP requested but no signing key is configured"
            )
    return None


def unprotect_received(
    sfid: SFID,
    transmitted: Path,
    destination: Path,
    security: InboundSecurity,
    partner_code: str = "",
) -> UnprotectResult:
    """Decrypt / decompress / verify a received envelope into *destination* (as SFIDSEC/SFIDCOMP say).

    Raises :class:`~.suites.SecurityError` subclasses carrying the EFNA/NERP codes; nothing is
    left at *destination* then.
    """
    certs = security.certificates(sfid.originator, partner_code)
    limits = [sfid.original_size * 1024 + security.osiz_slack] if sfid.original_size else []
    if security.max_file_size is not None:
        limits.append(security.max_file_size)
    return unprotect_file(
        transmitted,
        destination,
        security_level=int(sfid.security),
        compressed=bool(sfid.compression),
        suite=sfid.cipher_suite,
        decrypt_key=security.key,
        decrypt_cert=security.cert,
        verify_certs=_file_signers(certs),
        max_output=min(limits) if limits else None,
    )


def quarantine_file(path: Path, directory: Path, *, reason: int, text: str) -> Path:
    """Move *path* into *directory* under a unique name and write ``<name>.reason`` beside it.

    The restart marker of a partial file (``<path>.sfid``) is removed so the next attempt of the
    same file starts from zero.  Returns the new path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = directory / f"{path.name}.{stamp}.{uuid.uuid4().hex[:8]}"
    os.replace(path, target)
    path.with_name(path.name + ".sfid").unlink(missing_ok=True)
    target.with_name(target.name + ".reason").write_text(f"{reason:02d} {text}\n", "utf-8")
    return target


def build_receipt(
    sfid: SFID,
    *,
    own_id: str,
    security: InboundSecurity,
    transmitted_hash: bytes | None,
    nerp_reason: int | None = None,
    text: str = "",
) -> EERP | NERP:
    """The EERP (or NERP with *nerp_reason*) for *sfid*, signed when SFIDSIGN = ``Y``.

    *transmitted_hash* is the suite's hash of the received (transmitted) octets; it is required
    for a signed receipt.
    """
    receipt: EERP | NERP
    if nerp_reason is None:
        receipt = make_eerp(sfid, own_id=own_id or None)
    else:
        receipt = make_nerp(sfid, nerp_reason, creator=own_id or sfid.destination, text=text[:999])
    if not sfid.signed_eerp:
        return receipt
    if security.key is None or security.cert is None:
        log.warning("%s: signed receipt requested but no signing key; sending it unsigned", sfid.dsn)
        return receipt
    if transmitted_hash is None:
        raise ValueError("build_receipt: a signed receipt needs the hash of the transmitted file")
    if isinstance(receipt, NERP):
        return sign_receipt(
            receipt, suite=sfid.cipher_suite, key=security.key, cert=security.cert, file_hash=transmitted_hash
        )
    return sign_receipt(
        receipt, suite=sfid.cipher_suite, key=security.key, cert=security.cert, file_hash=transmitted_hash
    )


def _sha256_and_size(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _suite_for_hash(digest: bytes) -> int:
    """A suite with the hash algorithm of a receipt hash of this length (1 SHA-1, 3 SHA-256, 5 SHA-512)."""
    return {20: 1, 32: 3, 64: 5}.get(len(digest), 3)


@dataclass
class _Inbound:
    final: Path
    secured: bool
    plain: Path | None = None
    result: UnprotectResult | None = None


@dataclass(frozen=True)
class _Expected:
    suite: int
    expected_hash: bytes | None
    signed: bool


class SecureSessionHandler:
    """A :class:`~.api.SessionHandler` wrapper adding OFTP2 file security around *inner*.

    See the module documentation for what happens at SFID, EFID and after EFPA.  Receipts it
    creates are sent when we next hold the turn, before *inner*'s own outbound items.  Public
    state: ``verifications`` (receipt key → :class:`~.receipts.ReceiptVerification`), ``failures``
    (``(sfid, answer, reason, text)`` for files refused at EFNA or answered by NERP, with
    ``answer`` ``"EFNA"`` or ``"NERP"``), ``quarantined`` (paths).
    """

    def __init__(self, inner: SessionHandler, security: InboundSecurity, *, own_id: str = "") -> None:
        self.inner = inner
        self.security = security
        self.own_id = own_id
        self.pending: list[OutboundItem] = []
        self.verifications: dict[FileKey, ReceiptVerification] = {}
        self.failures: list[tuple[SFID, str, int, str]] = []
        self.quarantined: list[Path] = []
        self._inbound: dict[FileKey, _Inbound] = {}
        self._expected: dict[FileKey, _Expected] = {}

    # -- receipts we expect -------------------------------------------------------------------------
    def expect_receipt(self, key: FileKey, *, suite: int, expected_hash: bytes | None, signed: bool) -> None:
        """Register a file we sent (``SendResult.sfid.key``) so that its receipt gets verified."""
        self._expected[key] = _Expected(int(suite), expected_hash, signed)

    def expect_sent(self, protected: ProtectedFile, result: SendResult) -> None:
        """:meth:`expect_receipt` for a file sent from :func:`protect_outbound`'s result."""
        self.expect_receipt(
            result.sfid.key,
            suite=int(protected.suite),
            expected_hash=protected.expected_hash,
            signed=protected.item.signed_eerp,
        )

    def check_receipt(self, receipt: EERP | NERP, ctx: SessionContext) -> ReceiptVerification | None:
        """Verify a received receipt (``None`` when it is unsigned and no signature was expected)."""
        key = receipt.key
        expected = self._expected.get(key)
        if expected is None and not receipt.signature:
            return None
        if expected is not None and not expected.signed and not receipt.signature:
            return None
        name = type(receipt).__name__
        certs = self.security.certificates(receipt.originator, ctx.partner_code)
        if not receipt.signature:
            verification = ReceiptVerification(ReceiptOutcome.UNSIGNED, f"{name} carries no signature")
        elif certs is None or not certs.signature_certs():
            verification = ReceiptVerification(
                ReceiptOutcome.UNKNOWN_CERTIFICATE,
                f"{name}: no receipt certificate configured for {receipt.originator or ctx.partner_code}",
            )
        else:
            suite = (
                expected.suite
                if expected is not None and expected.suite
                else _suite_for_hash(receipt.file_hash)
            )
            verification = verify_receipt(
                receipt,
                suite=suite,
                partner_certs=certs,
                expected_hash=expected.expected_hash if expected is not None else None,
            )
        self.verifications[key] = verification
        level = logging.INFO if verification.ok else logging.WARNING
        log.log(
            level, "%s for %s: %s (%s)", name, receipt.dsn, verification.outcome.value, verification.detail
        )
        return verification

    # -- SessionHandler -----------------------------------------------------------------------------
    async def accept_connection(self, request: ConnectionRequest) -> AcceptDecision:
        """Delegated to the inner handler."""
        return await self.inner.accept_connection(request)

    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        """Refuse per policy (SFNA 15–20); secured files are received into ``.transmitted/``."""
        refusal = check_offer(sfid, self.security, ctx.partner_code)
        if refusal is not None:
            log.warning(
                "%s: refusing %s from %s: SFNA %02d %s",
                ctx.connection_id,
                sfid.dsn,
                sfid.originator,
                refusal.reason,
                refusal.text,
            )
            return refusal
        decision = await self.inner.accept_file(sfid, ctx)
        if not decision.accepted or decision.target is None:
            return decision
        secured = is_secured(sfid)
        self._inbound[sfid.key] = _Inbound(decision.target, secured)
        if not secured:
            return decision
        stage = decision.target.parent / ".transmitted" / decision.target.name
        try:
            await asyncio.to_thread(stage.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            self._inbound.pop(sfid.key, None)
            return FileDecision.refuse(
                SfnaReason.ACCESS_METHOD_FAILURE, retry=True, text=f"cannot store: {exc}"
            )
        return FileDecision.accept(stage, restart=decision.restart)

    def _quarantine_dir(self, entry: _Inbound) -> Path:
        return self.security.quarantine or entry.final.parent / "quarantine"

    async def _quarantine(self, path: Path, entry: _Inbound, reason: int, text: str) -> None:
        try:
            moved = await asyncio.to_thread(
                quarantine_file, path, self._quarantine_dir(entry), reason=reason, text=text
            )
            self.quarantined.append(moved)
            log.warning("quarantined %s as %s (%02d %s)", path.name, moved, reason, text)
        except OSError as exc:
            log.error("cannot quarantine %s: %s; deleting it", path, exc)
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        """Unprotect a secured file before EFPA (EFNA 21/22/23 and quarantine on failure)."""
        entry = self._inbound.get(sfid.key)
        if entry is None or not entry.secured or not self.security.verify_before_confirm:
            return await self.inner.end_file(sfid, efid, partial, ctx)
        plain = partial.with_name(partial.name + ".plain")
        try:
            entry.result = await asyncio.to_thread(
                unprotect_received, sfid, partial, plain, self.security, ctx.partner_code
            )
        except SecurityError as exc:
            code = int(exc.efna or 99)
            self._inbound.pop(sfid.key, None)
            self.failures.append((sfid, "EFNA", code, str(exc)))
            log.warning("%s: refusing %s: EFNA %02d %s", ctx.connection_id, sfid.dsn, code, exc)
            await self._quarantine(partial, entry, code, str(exc))
            return EndFileDecision.refuse(code, str(exc)[:200])
        entry.plain = plain
        answer = await self.inner.end_file(sfid, efid, plain, ctx)
        if not answer.ok:
            self._inbound.pop(sfid.key, None)
            await asyncio.to_thread(plain.unlink, missing_ok=True)
        return answer

    def _queue(self, receipt: EERP | NERP) -> None:
        if self.security.receipts:
            self.pending.append(receipt)

    async def _receipt(
        self, sfid: SFID, transmitted_hash: bytes | None, nerp: int | None = None, text: str = ""
    ) -> None:
        if not self.security.receipts:
            return
        try:
            receipt = await asyncio.to_thread(
                build_receipt,
                sfid,
                own_id=self.own_id,
                security=self.security,
                transmitted_hash=transmitted_hash,
                nerp_reason=nerp,
                text=text,
            )
        except (SecurityError, ValueError) as exc:
            log.error("%s: cannot sign the receipt: %s; sending it unsigned", sfid.dsn, exc)
            receipt = (
                make_eerp(sfid, own_id=self.own_id or None)
                if nerp is None
                else make_nerp(sfid, nerp, creator=self.own_id or sfid.destination, text=text[:999])
            )
        self._queue(receipt)

    async def _fail_after_efpa(
        self, sfid: SFID, envelope: Path, entry: _Inbound, code: int, text: str
    ) -> None:
        digest = None
        if sfid.signed_eerp and sfid.cipher_suite:
            try:
                digest = await asyncio.to_thread(file_hash, envelope, sfid.cipher_suite)
            except (OSError, SecurityError):
                digest = None
        self.failures.append((sfid, "NERP", code, text))
        log.warning("%s: processing failed after EFPA: NERP %02d %s", sfid.dsn, code, text)
        if await asyncio.to_thread(envelope.exists):
            await self._quarantine(envelope, entry, code, text)
        if digest is None and sfid.signed_eerp:
            await self._receipt(dataclasses.replace(sfid, signed_eerp=False), None, code, text)
        else:
            await self._receipt(sfid, digest, code, text)

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        """Deliver a secured file's plain content to its destination, queue the EERP/NERP, tell *inner*."""
        sfid = received.sfid
        entry = self._inbound.pop(sfid.key, None)
        if entry is None or not entry.secured:
            digest = None
            if sfid.signed_eerp and sfid.cipher_suite:
                digest = await asyncio.to_thread(file_hash, received.path, sfid.cipher_suite)
            await self._receipt(sfid, digest)
            await self.inner.file_received(received, ctx)
            return
        envelope = received.path
        if entry.result is None or entry.plain is None:  # confirmed first: unprotect now (NERP on failure)
            plain = envelope.with_name(envelope.name + ".plain")
            try:
                entry.result = await asyncio.to_thread(
                    unprotect_received, sfid, envelope, plain, self.security, ctx.partner_code
                )
                entry.plain = plain
            except SecurityError as exc:
                await self._fail_after_efpa(
                    sfid, envelope, entry, int(exc.nerp or NerpReason.FILE_PROCESSING_FAILED), str(exc)
                )
                return
            except OSError as exc:
                await self._fail_after_efpa(
                    sfid, envelope, entry, NerpReason.FILE_PROCESSING_FAILED, str(exc)
                )
                return
        result, plain = entry.result, entry.plain
        try:
            await asyncio.to_thread(os.replace, plain, entry.final)
        except OSError as exc:
            await asyncio.to_thread(plain.unlink, missing_ok=True)
            await self._fail_after_efpa(
                sfid, envelope, entry, NerpReason.FILE_PROCESSING_FAILED, f"cannot deliver: {exc}"
            )
            return
        sha256, size = "", result.original_size
        try:  # the file is delivered; what follows is bookkeeping
            await asyncio.to_thread(envelope.unlink, missing_ok=True)
            sha256, size = await asyncio.to_thread(_sha256_and_size, entry.final)
        except OSError as exc:
            log.warning("%s delivered to %s, but: %s", sfid.dsn, entry.final, exc)
        await self._receipt(sfid, result.sha_of_transmitted if sfid.cipher_suite else None)
        delivered = dataclasses.replace(received, path=entry.final, size=size, sha256=sha256)
        await self.inner.file_received(delivered, ctx)

    async def file_sent(self, result: SendResult, ctx: SessionContext) -> None:
        """Delegated to the inner handler."""
        await self.inner.file_sent(result, ctx)

    async def eerp_received(self, eerp: EERP, ctx: SessionContext) -> None:
        """Verify (when signed or a signature was expected), then tell *inner*."""
        self.check_receipt(eerp, ctx)
        await self.inner.eerp_received(eerp, ctx)

    async def nerp_received(self, nerp: NERP, ctx: SessionContext) -> None:
        """Verify (when signed or a signature was expected), then tell *inner*."""
        self.check_receipt(nerp, ctx)
        await self.inner.nerp_received(nerp, ctx)

    async def outbound(self, ctx: SessionContext) -> Sequence[OutboundItem]:
        """Our queued receipts first, then the inner handler's items."""
        items, self.pending = self.pending, []
        return [*items, *await self.inner.outbound(ctx)]

    async def session_ended(self, ctx: SessionContext, outcome: SessionOutcome) -> None:
        """Delegated to the inner handler."""
        await self.inner.session_ended(ctx, outcome)
