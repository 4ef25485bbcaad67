"""``oftp2 serve --once`` in a subprocess and ``oftp2 send`` / ``oftp2 poll`` against it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oftp2_provider.pki import PKIBundle

OFTP2 = str(Path(sys.executable).parent / "oftp2")
SERVER_ARGS = ["--id", "O0013SERVER", "--password", "SPW", "--partner", "O0013CLIENT:CPW"]
CLIENT_ARGS = ["--id", "O0013CLIENT", "--password", "CPW", "--partner", "O0013SERVER:SPW"]


class Serve:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port

    def finish(self, timeout: float = 15) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> Serve:
        proc = subprocess.Popen(
            [
                OFTP2,
                "serve",
                "--listen",
                "127.0.0.1:0",
                *SERVER_ARGS,
                "--inbox",
                str(tmp_path / "inbox"),
                "--once",
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
        port = int(line.split()[2].rsplit(":", 1)[1])
        return Serve(proc, port)

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OFTP2, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_send_end_to_end(serve: object, tmp_path: Path) -> None:
    server = serve()  # type: ignore[operator]
    src = tmp_path / "invoice.edi"
    src.write_bytes(os.urandom(500_000))
    other = tmp_path / "notes.txt"
    other.write_text("hello\r\n")
    done = run("send", f"127.0.0.1:{server.port}", *CLIENT_ARGS, str(src), str(other), "--wait-eerp", "10")
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert f"sha256={digest}" in done.stdout
    assert "EERP received for INVOICE.EDI" in done.stdout and "EERP received for NOTES.TXT" in done.stdout
    code, out, err = server.finish()
    assert code == 0, err
    assert (tmp_path / "inbox" / "INVOICE.EDI").read_bytes() == src.read_bytes()
    assert "received INVOICE.EDI" in out and "session ended: ESID 00" in out


def test_cli_wrong_password_names_the_reason(serve: object, tmp_path: Path) -> None:
    server = serve()  # type: ignore[operator]
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    done = run(
        "send",
        f"127.0.0.1:{server.port}",
        "--id",
        "O0013CLIENT",
        "--password",
        "NOPE",
        "--partner",
        "O0013SERVER:SPW",
        str(src),
    )
    assert done.returncode == 1
    assert "ESID 04" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    code, out, _ = server.finish()
    assert code == 1 and "ESID 04" in out


def test_cli_tls_level_and_small_buffers(serve: object, tmp_path: Path, test_pki: PKIBundle) -> None:
    server = serve("--tls-cert", str(test_pki.server.cert_path), "--tls-key", str(test_pki.server.key_path))  # type: ignore[operator]
    src = tmp_path / "f.dat"
    src.write_bytes(b"".join(bytes([48 + i % 10]) * 100 for i in range(300)))
    done = run(
        "send",
        f"localhost:{server.port}",
        *CLIENT_ARGS,
        str(src),
        "--tls",
        "--tls-ca",
        str(test_pki.ca.cert_path),
        "--format",
        "F",
        "--lrecl",
        "100",
        "--sdeb",
        "128",
        "--credit",
        "3",
        "--level",
        "1.4",
    )
    assert done.returncode == 0, done.stderr
    code, _out, err = server.finish()
    assert code == 0, err
    assert (tmp_path / "inbox" / "F.DAT").read_bytes() == src.read_bytes()


def test_cli_poll_with_nothing_queued(serve: object, tmp_path: Path) -> None:
    server = serve()  # type: ignore[operator]
    done = run("poll", f"127.0.0.1:{server.port}", *CLIENT_ARGS, "--inbox", str(tmp_path / "polled"))
    assert done.returncode == 0, done.stderr
    assert "received 0 file(s); session ended with ESID 00" in done.stdout
    assert server.finish()[0] == 0


def test_cli_connection_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    done = run("send", f"127.0.0.1:{port}", *CLIENT_ARGS, str(src))
    assert done.returncode == 1 and done.stderr.startswith("oftp2 send: error:")
