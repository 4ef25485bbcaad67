"""Secured transfers on the command line: ``oftp2 serve --once`` in a subprocess and ``oftp2 send``.

TLS, secure authentication, signed + compressed + encrypted files and signed EERPs with the test PKI;
wrong certificates and keys give the protocol's reason code and a non-zero exit status.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle

OFTP2 = str(Path(sys.executable).parent / "oftp2")
SERVER, CLIENT = "O0013SERVER", "O0013CLIENT"


class Serve:
    """A running ``oftp2 serve --once``."""

    def __init__(self, proc: subprocess.Popen[str], port: int, inbox: Path) -> None:
        self.proc = proc
        self.port = port
        self.inbox = inbox

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def serve(tmp_path: Path, test_pki: PKIBundle) -> Iterator[Callable[..., Serve]]:
    procs: list[subprocess.Popen[str]] = []
    pki = test_pki

    def start(*extra: str) -> Serve:
        inbox = tmp_path / f"inbox{len(procs)}"
        proc = subprocess.Popen(
            [
                OFTP2,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--id",
                SERVER,
                "--password",
                "SPW",
                "--partner",
                f"{CLIENT}:CPW",
                "--inbox",
                str(inbox),
                "--once",
                "--tls-cert",
                str(pki.server.cert_path),
                "--tls-key",
                str(pki.server.key_path),
                "--key",
                str(pki.server.key_path),
                "--cert",
                str(pki.server.cert_path),
                "--partner-cert",
                f"{CLIENT}={pki.client.cert_path}",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), (line, proc.stderr.read() if proc.stderr else "")
        return Serve(proc, int(line.split()[2].rsplit(":", 1)[1]), inbox)

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def send(pki: PKIBundle, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``oftp2 send`` over TLS (server verified against the test CA)."""
    return subprocess.run(
        [
            OFTP2,
            "send",
            f"127.0.0.1:{port}",
            "--id",
            CLIENT,
            "--password",
            "CPW",
            "--partner",
            f"{SERVER}:SPW",
            "--tls",
            "--tls-ca",
            str(pki.ca.cert_path),
            "--tls-server-name",
            "localhost",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "orders.edi"
    path.write_bytes(b"UNH+1+ORDERS:D:96A:UN'\r\n" * 2000 + os.urandom(30_000))
    return path


@pytest.mark.parametrize("suite", [1, 2, 3, 4, 5, 6])
def test_secured_send_every_suite(
    serve: Callable[..., Serve], test_pki: PKIBundle, payload: Path, suite: int
) -> None:
    server = serve("--secure-auth")
    done = send(
        test_pki,
        server.port,
        "--key",
        str(test_pki.client.key_path),
        "--cert",
        str(test_pki.client.cert_path),
        "--partner-cert",
        str(test_pki.server.cert_path),
        "--secure-auth",
        "--sign",
        "--compress",
        "--encrypt",
        "--signed-eerp",
        "--cipher-suite",
        str(suite),
        "--wait-eerp",
        "20",
        str(payload),
    )
    code, out, err = server.finish()
    assert done.returncode == 0, (done.stdout, done.stderr, err)
    assert code == 0, err
    delivered = server.inbox / "ORDERS.EDI"
    assert _sha(delivered) == _sha(payload)  # stored decrypted, decompressed, verified
    assert f"sha256={_sha(payload)}" in out  # the serve line names the plain file
    assert "receipt for ORDERS.EDI: verified" in done.stdout
    assert not list((server.inbox / ".transmitted").glob("ORDERS.EDI*"))


def test_wrong_signer_gives_efna_21_and_exit_1(
    serve: Callable[..., Serve], test_pki: PKIBundle, payload: Path
) -> None:
    server = serve()
    done = send(
        test_pki,
        server.port,
        "--key",
        str(test_pki.untrusted.key_path),
        "--cert",
        str(test_pki.untrusted.cert_path),
        "--sign",
        "--wait-eerp",
        "20",
        str(payload),
    )
    server.finish()
    assert done.returncode == 1
    assert "refused with EFNA 21" in done.stderr
    assert not (server.inbox / "ORDERS.EDI").exists()
    assert len(list((server.inbox / "quarantine").glob("ORDERS.EDI.*.reason"))) == 1


def test_encrypted_for_wrong_certificate_gives_efna_22(
    serve: Callable[..., Serve], test_pki: PKIBundle, payload: Path
) -> None:
    server = serve()
    done = send(
        test_pki, server.port, "--partner-cert", str(test_pki.partner.cert_path), "--encrypt", str(payload)
    )
    server.finish()
    assert done.returncode == 1
    assert "refused with EFNA 22" in done.stderr
    assert not (server.inbox / "ORDERS.EDI").exists()


def test_secure_auth_with_wrong_key_is_esid_11(
    serve: Callable[..., Serve], test_pki: PKIBundle, payload: Path
) -> None:
    server = serve("--secure-auth")
    done = send(
        test_pki,
        server.port,
        "--key",
        str(test_pki.untrusted.key_path),
        "--cert",
        str(test_pki.untrusted.cert_path),
        "--partner-cert",
        str(test_pki.server.cert_path),
        "--secure-auth",
        str(payload),
    )
    code, out, _ = server.finish()
    assert done.returncode == 1
    assert "ESID 11 (invalid challenge response)" in done.stderr, done.stderr
    assert code == 1 and "session ended: ESID 11" in out
    assert not (server.inbox / "ORDERS.EDI").exists()


def test_receipt_from_unknown_certificate_fails_the_send(
    serve: Callable[..., Serve], test_pki: PKIBundle, payload: Path
) -> None:
    server = serve()
    done = send(
        test_pki,
        server.port,
        "--partner-cert",
        str(test_pki.partner.cert_path),  # not the certificate the server signs receipts with
        "--signed-eerp",
        "--wait-eerp",
        "20",
        str(payload),
    )
    server.finish()
    assert _sha(server.inbox / "ORDERS.EDI") == _sha(payload)  # the file itself went through
    assert done.returncode == 1
    assert "unknown_certificate" in done.stderr


def test_inconsistent_security_options_fail_before_connecting(test_pki: PKIBundle, payload: Path) -> None:
    done = send(test_pki, 1, "--sign", str(payload))  # port 1: nothing listens, nothing is attempted
    assert done.returncode == 1 and "--sign needs --key and --cert" in done.stderr
    done = send(test_pki, 1, "--signed-eerp", "--cipher-suite", "0", str(payload))
    assert done.returncode == 1 and "needs a cipher suite 01-06" in done.stderr
    done = send(test_pki, 1, "--encrypt", str(payload))
    assert done.returncode == 1 and "--encrypt needs --partner-cert" in done.stderr


async def test_poll_stores_a_secured_file_decrypted_and_sends_a_signed_eerp(
    tmp_path: Path, test_pki: PKIBundle, payload: Path
) -> None:
    """An in-process responder queues a signed + encrypted file; ``oftp2 poll`` fetches it."""
    import asyncio

    from oftp2_provider.protocol.api import OutboundFile, PartnerConfig, SessionConfig, SessionHandlerBase
    from oftp2_provider.protocol.certs import PartnerCertificates
    from oftp2_provider.protocol.secure import (
        InboundSecurity,
        OutboundSecurity,
        SecureSessionHandler,
        protect_outbound,
    )
    from oftp2_provider.protocol.transport import OFTPServer

    options = OutboundSecurity(
        suite=5, sign=True, encrypt=True, signed_eerp=True, key=test_pki.server.key,
        cert=test_pki.server.cert, partner_cert=test_pki.client.cert,
    )  # fmt: skip
    item = OutboundFile(dsn="ORDERS.EDI", originator=SERVER, destination=CLIENT, path=payload)
    protected = protect_outbound(item, options, workdir=tmp_path)
    handlers: list[SecureSessionHandler] = []

    def factory(ctx: object) -> SecureSessionHandler:
        base = SessionHandlerBase()
        base.pending.append(protected.item)
        h = SecureSessionHandler(
            base,
            InboundSecurity(partners={CLIENT: PartnerCertificates.single(test_pki.client.cert)}),
            own_id=SERVER,
        )
        h.expect_receipt(_key(protected.item), suite=5, expected_hash=protected.expected_hash, signed=True)
        handlers.append(h)
        return h

    server = OFTPServer(
        SessionConfig(SERVER, "SPW"), factory, partners={CLIENT: PartnerConfig(CLIENT, "CPW")}
    )
    await server.start("127.0.0.1", 0)
    inbox = tmp_path / "polled"
    try:
        proc = await asyncio.create_subprocess_exec(
            OFTP2, "poll", f"127.0.0.1:{server.port}", "--id", CLIENT, "--password", "CPW",
            "--partner", f"{SERVER}:SPW", "--inbox", str(inbox), "--key", str(test_pki.client.key_path),
            "--cert", str(test_pki.client.cert_path), "--partner-cert", f"{SERVER}={test_pki.server.cert_path}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        await server.wait_sessions(1, timeout=10)
    finally:
        await server.close()
        protected.cleanup()
    assert proc.returncode == 0, err.decode()
    assert _sha(inbox / "ORDERS.EDI") == _sha(payload)
    assert "received 1 file(s)" in out.decode()
    [verification] = handlers[0].verifications.values()
    assert verification.ok, verification.detail  # poll answered with a valid signed EERP


def _key(item: object) -> tuple[str, str, str, str, str]:
    from oftp2_provider.protocol.api import OutboundFile

    assert isinstance(item, OutboundFile)
    return (item.dsn, item.date, item.time, item.originator, item.destination)
