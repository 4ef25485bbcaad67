"""``oftp2 serve``, ``oftp2 send`` and ``oftp2 poll``: the protocol engine from the command line.

* ``serve`` — a Responder that stores received files in an inbox (and answers each with an EERP).
* ``send`` — an Initiator that sends files and (optionally) waits for their EERPs.
* ``poll`` — an Initiator that hands the turn over at once and receives what the partner queued.

Exit status 0 means success; anything else is reported as one line naming the reason code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compat import timeout as _timeout
from .api import (
    CmsAuthenticator,
    OutboundFile,
    PartnerConfig,
    ReceivedFile,
    SendResult,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
    Timeouts,
    receipt_key,
)
from .commands import NERP, ProtocolLevel, RecordFormat
from .errors import OFTPError
from .transport import OFTPClient, OFTPServer, client_ssl_context, server_ssl_context

if TYPE_CHECKING:
    from .secure import InboundSecurity, OutboundSecurity, ProtectedFile, SecureSessionHandler

__all__ = ["register"]

LEVELS = {
    "1.2": ProtocolLevel.V1_2,
    "1.3": ProtocolLevel.V1_3,
    "1.4": ProtocolLevel.V1_4,
    "2.0": ProtocolLevel.V2_0,
}


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def _partner(text: str) -> PartnerConfig:
    ident, sep, password = text.partition(":")
    if not sep or not ident:
        raise argparse.ArgumentTypeError(f"expected ODETTEID:PASSWORD, got {text!r}")
    return PartnerConfig(ident.strip(), password)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", required=True, dest="odette_id", help="our Odette ID (SSIDCODE)")
    p.add_argument("--password", required=True, help="our password (SSIDPSWD, at most 8 characters)")
    p.add_argument(
        "--sdeb", type=int, default=99999, help="data exchange buffer size 128–99999 (default 99999)"
    )
    p.add_argument("--credit", type=int, default=999, help="credit window 1–999 (default 999)")
    p.add_argument("--level", choices=sorted(LEVELS), default="2.0", help="highest OFTP level (default 2.0)")
    p.add_argument("--timeout", type=float, default=90.0, help="read timeout in seconds (default 90)")
    p.add_argument("-v", "--verbose", action="store_true", help="log protocol details")


def _partner_cert(text: str) -> tuple[str, Path]:
    ident, sep, path = text.partition("=")
    if not sep or not ident.strip() or not path:
        raise argparse.ArgumentTypeError(f"expected ODETTEID=FILE, got {text!r}")
    return ident.strip(), Path(path)


def _security_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        type=Path,
        help="our private key (PEM/DER): decrypts files, signs files and receipts, authenticates",
    )
    p.add_argument("--cert", type=Path, help="our certificate (PEM/DER) matching --key")
    p.add_argument(
        "--secure-auth",
        action="store_true",
        help="OFTP2 secure authentication (SECD/AUCH/AURP; needs --key/--cert and the partner's certificate)",
    )


def _partner_certs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--partner-cert",
        type=_partner_cert,
        action="append",
        default=[],
        metavar="ODETTEID=FILE",
        help="a partner's certificate: verifies its file and receipt signatures, secure authentication",
    )


def _tls_client(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls", action="store_true", help="connect with TLS (≥ 1.2)")
    p.add_argument("--tls-ca", type=Path, help="CA bundle to verify the server (default: system CAs)")
    p.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", type=Path, help="client key (PEM)")
    p.add_argument("--tls-server-name", help="expected server name (default: HOST)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``, ``send`` and ``poll`` to the ``oftp2`` command line."""
    serve = subparsers.add_parser("serve", help="run an OFTP responder that stores files in an inbox")
    serve.add_argument(
        "--listen", type=_hostport, default=("127.0.0.1", 3305), help="HOST:PORT (port 0 = any)"
    )
    _common(serve)
    serve.add_argument("--inbox", type=Path, required=True, help="directory for received files")
    serve.add_argument(
        "--partner",
        type=_partner,
        action="append",
        default=[],
        help="ODETTEID:PASSWORD of an allowed initiator",
    )
    serve.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    serve.add_argument("--tls-key", type=Path, help="server key (PEM)")
    serve.add_argument("--tls-ca", type=Path, help="CA to verify client certificates (optional mTLS)")
    serve.add_argument("--once", action="store_true", help="exit after the first session")
    serve.add_argument("--no-eerp", action="store_true", help="do not answer received files with an EERP")
    _security_common(serve)
    _partner_certs_arg(serve)
    serve.set_defaults(func=_serve)

    send = subparsers.add_parser("send", help="send files to an OFTP responder")
    send.add_argument("address", type=_hostport, metavar="HOST:PORT")
    _common(send)
    send.add_argument("--partner", type=_partner, required=True, help="ODETTEID:PASSWORD of the responder")
    send.add_argument("files", type=Path, nargs="+", metavar="FILE")
    send.add_argument("--dsn", help="virtual file name (default: the file name, upper case)")
    send.add_argument("--format", choices=["U", "T", "F", "V"], default="U", help="record format (default U)")
    send.add_argument("--lrecl", type=int, default=0, help="record length for F files")
    send.add_argument("--destination", help="SFIDDEST (default: the partner's ID)")
    send.add_argument(
        "--wait-eerp", type=float, default=None, metavar="SECONDS", help="require an EERP per file"
    )
    _tls_client(send)
    _security_common(send)
    send.add_argument(
        "--partner-cert",
        type=Path,
        help="the responder's certificate: encryption, receipt signatures, secure auth",
    )
    send.add_argument(
        "--sign", action="store_true", help="sign the files (CMS SignedData, with --key/--cert)"
    )
    send.add_argument("--compress", action="store_true", help="compress the files (CMS CompressedData, zlib)")
    send.add_argument(
        "--encrypt", action="store_true", help="encrypt the files for --partner-cert (CMS EnvelopedData)"
    )
    send.add_argument(
        "--cipher-suite",
        type=int,
        choices=range(0, 7),
        default=None,
        metavar="N",
        help="SFIDCIPH 0-6 (default 4 = AES-256/SHA-256 when signing, encrypting or --signed-eerp, else 0)",
    )
    send.add_argument(
        "--signed-eerp",
        action="store_true",
        help="ask for signed receipts; with --wait-eerp the exit status is 0 only when each verified",
    )
    send.set_defaults(func=_send)

    poll = subparsers.add_parser("poll", help="call a partner and receive the files it has queued")
    poll.add_argument("address", type=_hostport, metavar="HOST:PORT")
    _common(poll)
    poll.add_argument("--partner", type=_partner, required=True, help="ODETTEID:PASSWORD of the responder")
    poll.add_argument("--inbox", type=Path, required=True, help="directory for received files")
    poll.add_argument("--no-eerp", action="store_true", help="do not answer received files with an EERP")
    _tls_client(poll)
    _security_common(poll)
    _partner_certs_arg(poll)
    poll.set_defaults(func=_poll)


# ---------------------------------------------------------------------------------------------------


def _authenticator(args: argparse.Namespace, partner_certs: dict[str, Any]) -> CmsAuthenticator | None:
    if not getattr(args, "secure_auth", False):
        return None
    if args.key is None or args.cert is None:
        raise ValueError("--secure-auth needs --key and --cert")
    if not partner_certs:
        raise ValueError("--secure-auth needs the partner's certificate (--partner-cert)")
    from .certs import load_certificate, load_private_key

    return CmsAuthenticator(load_private_key(args.key), load_certificate(args.cert), partner_certs)


def _own_identity(args: argparse.Namespace) -> tuple[Any, Any]:
    if (getattr(args, "key", None) is None) != (getattr(args, "cert", None) is None):
        raise ValueError("--key and --cert go together")
    if getattr(args, "key", None) is None:
        return None, None
    from .certs import load_certificate, load_private_key

    return load_private_key(args.key), load_certificate(args.cert)


def _inbound_security(args: argparse.Namespace) -> InboundSecurity:
    from .certs import PartnerCertificates, load_certificate
    from .secure import InboundSecurity

    key, cert = _own_identity(args)
    partners = {
        ident: PartnerCertificates.single(load_certificate(path)) for ident, path in args.partner_cert
    }
    return InboundSecurity(key=key, cert=cert, partners=partners, receipts=not args.no_eerp)


def _config(args: argparse.Namespace, authenticator: CmsAuthenticator | None = None) -> SessionConfig:
    t = float(args.timeout)
    return SessionConfig(
        odette_id=args.odette_id,
        password=args.password,
        level=LEVELS[args.level],
        sdeb=args.sdeb,
        credit=args.credit,
        timeouts=Timeouts(connect=min(t, 30.0), read=t, idle=max(t, 300.0)),
        secure_auth=authenticator is not None,
        authenticator=authenticator,
    )


def _logging(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(command: str, exc: BaseException) -> int:
    print(f"oftp2 {command}: error: {exc}", file=sys.stderr)
    return 1


def _rate(octets: int, seconds: float) -> str:
    return f"{octets / 1e6 / seconds:.1f} MB/s" if seconds > 0 else "-"


class _Progress:
    """Bytes and MB/s on a TTY (one updating line), nothing otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.octets = 0
        self._last = 0.0

    def __call__(self, octets: int) -> None:
        self.octets += octets
        now = time.monotonic()
        if self.tty and now - self._last > 0.2:
            self._last = now
            rate = _rate(self.octets, now - self.start)
            print(f"\r{self.label}: {self.octets:,} octets  {rate}   ", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


class _CliHandler(SessionHandlerBase):
    """Inbox handler that prints one line per received file."""

    def __init__(self, inbox: Path, *, auto_eerp: bool, own_id: str) -> None:
        super().__init__(inbox, auto_eerp=auto_eerp, own_id=own_id)

    async def file_received(self, received: ReceivedFile, ctx: SessionContext) -> None:
        await super().file_received(received, ctx)
        print(
            f"received {received.sfid.dsn} from {received.sfid.originator}: {received.size} octets "
            f"-> {received.path} sha256={received.sha256} ({_rate(received.size, received.duration)})",
            flush=True,
        )


def _serve(args: argparse.Namespace) -> int:
    _logging(args)
    if bool(args.tls_cert) != bool(args.tls_key):
        return _fail("serve", ValueError("--tls-cert and --tls-key go together"))
    try:
        return asyncio.run(_serve_async(args))
    except (OFTPError, OSError, ValueError) as exc:
        return _fail("serve", exc)


async def _serve_async(args: argparse.Namespace) -> int:
    from .secure import SecureSessionHandler

    security = _inbound_security(args)
    config = _config(args, _authenticator(args, {k: v.auth for k, v in security.partners.items()}))
    args.inbox.mkdir(parents=True, exist_ok=True)
    tls = server_ssl_context(args.tls_cert, args.tls_key, cafile=args.tls_ca) if args.tls_cert else None
    partners = {p.odette_id: p for p in args.partner}
    server = OFTPServer(
        config,
        lambda ctx: SecureSessionHandler(
            _CliHandler(args.inbox, auto_eerp=False, own_id=config.odette_id),
            security,
            own_id=config.odette_id,
        ),
        partners=partners,
    )
    host, port = args.listen
    await server.start(host, port, ssl=tls)
    print(f"listening on {host}:{server.port}{' (TLS)' if tls else ''}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    try:
        if args.once:
            waiter = asyncio.create_task(server.wait_sessions(1))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
        else:
            await stop.wait()
    finally:
        await server.close()
    if args.once:
        outcome = server.outcomes[-1] if server.outcomes else None
        if outcome is None:
            return 1
        print(
            f"session ended: ESID {outcome.reason:02d}{' ' + outcome.text if outcome.text else ''}",
            flush=True,
        )
        return 0 if outcome.ok else 1
    return 0


def _client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.tls_ca or args.tls_cert):
        return None
    return client_ssl_context(args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key)


def _send(args: argparse.Namespace) -> int:
    _logging(args)
    try:
        return asyncio.run(_send_async(args))
    except (OFTPError, OSError, ValueError) as exc:
        return _fail("send", exc)


def _outbound_security(args: argparse.Namespace, partner_cert: Any) -> OutboundSecurity:
    from .secure import OutboundSecurity

    key, cert = _own_identity(args)
    secured = args.sign or args.encrypt or args.signed_eerp
    suite = args.cipher_suite if args.cipher_suite is not None else (4 if secured else 0)
    if args.sign and key is None:
        raise ValueError("--sign needs --key and --cert")
    if args.encrypt and partner_cert is None:
        raise ValueError("--encrypt needs --partner-cert (the responder's encryption certificate)")
    return OutboundSecurity(
        suite=suite,
        sign=args.sign,
        compress=args.compress,
        encrypt=args.encrypt,
        signed_eerp=args.signed_eerp,
        key=key,
        cert=cert,
        partner_cert=partner_cert,
    )


async def _send_async(args: argparse.Namespace) -> int:
    from .certs import PartnerCertificates, load_certificate
    from .secure import InboundSecurity, SecureSessionHandler, protect_outbound_async

    partner_cert = load_certificate(args.partner_cert) if args.partner_cert else None
    config = _config(
        args, _authenticator(args, {args.partner.odette_id: partner_cert} if partner_cert else {})
    )
    partner: PartnerConfig = args.partner
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise ValueError(f"no such file: {', '.join(missing)}")
    if args.dsn and len(args.files) > 1:
        raise ValueError("--dsn needs exactly one FILE")
    options = _outbound_security(args, partner_cert)
    key, cert = options.key, options.cert
    handler = SessionHandlerBase()
    secure = SecureSessionHandler(
        handler,
        InboundSecurity(
            key=key,
            cert=cert,
            partners={partner.odette_id: PartnerCertificates.single(partner_cert)} if partner_cert else {},
        ),
        own_id=config.odette_id,
    )
    workdir = Path(tempfile.mkdtemp(prefix="oftp2-send-"))
    protected: list[ProtectedFile] = []
    try:
        for path in args.files:
            item = OutboundFile(
                dsn=(args.dsn or path.name).upper()[:26],
                originator=config.odette_id,
                destination=args.destination or partner.odette_id,
                path=path,
                format=RecordFormat(args.format),
                lrecl=args.lrecl,
            )
            protected.append(await protect_outbound_async(item, options, workdir=workdir))
        return await _send_session(args, config, partner, secure, handler, protected)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


async def _send_session(
    args: argparse.Namespace,
    config: SessionConfig,
    partner: PartnerConfig,
    secure: SecureSessionHandler,
    handler: SessionHandlerBase,
    protected: list[ProtectedFile],
) -> int:
    host, port = args.address
    client = OFTPClient(
        config,
        host,
        port,
        partner=partner,
        ssl=_client_ssl(args),
        server_hostname=args.tls_server_name,
        handler=secure,
    )
    results: list[SendResult] = []
    await client.connect()
    failed = False
    try:
        for prot in protected:
            path, item = prot.original, prot.item
            progress = _Progress(path.name)
            client.progress = progress
            result = await client.send_file(item)
            progress.done()
            results.append(result)
            if result.ok:
                secure.expect_sent(prot, result)
                print(
                    f"sent {path} as {result.sfid.dsn}: {result.octets_sent} octets "
                    f"(restart at {result.restart_offset}) sha256={result.sha256} "
                    f"({_rate(result.octets_sent, result.duration)})",
                    flush=True,
                )
            else:
                failed = True
                print(
                    f"oftp2 send: error: {path} refused with {result.refused_at} {result.reason:02d}"
                    f"{' (retry later)' if result.retry else ''}{': ' + result.text if result.text else ''}",
                    file=sys.stderr,
                )
            if client.session.closed:
                break
        if args.wait_eerp is not None:
            async with _timeout(args.wait_eerp):
                outcome = await client.close()
        else:
            outcome = await client.close()
    except BaseException:
        await client.abort()
        raise
    if not outcome.ok:
        print(
            f"oftp2 send: error: session ended with ESID {outcome.reason:02d} {outcome.text}", file=sys.stderr
        )
        return 1
    if args.wait_eerp is not None:
        got = {receipt_key(e) for e in handler.eerps}
        nerps = {receipt_key(n): n for n in handler.nerps}
        for r in results:
            if not r.ok:
                continue
            if r.sfid.key in nerps:
                n: NERP = nerps[r.sfid.key]
                print(f"oftp2 send: error: NERP {n.reason:02d} for {r.sfid.dsn}: {n.text}", file=sys.stderr)
                failed = True
            elif r.sfid.key not in got:
                print(
                    f"oftp2 send: error: no EERP for {r.sfid.dsn} within {args.wait_eerp:g} s",
                    file=sys.stderr,
                )
                failed = True
            else:
                print(f"EERP received for {r.sfid.dsn}", flush=True)
            verification = secure.verifications.get(r.sfid.key)
            if verification is not None:
                ok = verification.ok
                print(
                    f"receipt for {r.sfid.dsn}: {verification.outcome.value} ({verification.detail})",
                    file=sys.stdout if ok else sys.stderr,
                    flush=True,
                )
                failed = failed or (args.signed_eerp and not ok)
            elif args.signed_eerp and r.sfid.key in got:
                print(f"oftp2 send: error: the EERP for {r.sfid.dsn} was not verified", file=sys.stderr)
                failed = True
    return 1 if failed else 0


def _poll(args: argparse.Namespace) -> int:
    _logging(args)
    try:
        return asyncio.run(_poll_async(args))
    except (OFTPError, OSError, ValueError) as exc:
        return _fail("poll", exc)


async def _poll_async(args: argparse.Namespace) -> int:
    from .secure import SecureSessionHandler

    security = _inbound_security(args)
    config = _config(args, _authenticator(args, {k: v.auth for k, v in security.partners.items()}))
    args.inbox.mkdir(parents=True, exist_ok=True)
    host, port = args.address
    cli_handler = _CliHandler(args.inbox, auto_eerp=False, own_id=config.odette_id)
    handler = SecureSessionHandler(cli_handler, security, own_id=config.odette_id)
    client = OFTPClient(
        config, host, port, partner=args.partner, ssl=_client_ssl(args), server_hostname=args.tls_server_name
    )
    client.handler = handler
    await client.connect()
    try:
        await client.receive(handler)
        outcome = await client.close()
    except BaseException:
        await client.abort()
        raise
    print(
        f"received {len(cli_handler.received)} file(s); session ended with ESID {outcome.reason:02d}",
        flush=True,
    )
    return 0 if outcome.ok else 1
