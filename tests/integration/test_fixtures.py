"""The shared fixtures work against real things: a PostgreSQL server, an Airflow metadata DB, a PKI."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from oftp2_provider.pki import PKIBundle


def test_postgres_roundtrip(postgres_uri: str) -> None:
    import psycopg2

    conn = psycopg2.connect(postgres_uri)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (x int)")
        cur.execute("INSERT INTO t VALUES (41), (1)")
        cur.execute("SELECT sum(x) FROM t")
        assert cur.fetchone() == (42,)
    conn.close()


def test_airflow_home_migrated(airflow_home: Path) -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "airflow-provider-oftp2" in out.stdout


def test_pki_chain_and_tls(test_pki: PKIBundle, free_port) -> None:  # type: ignore[no-untyped-def]
    assert test_pki.server.cert.issuer == test_pki.ca.cert.subject
    assert test_pki.expired.cert.not_valid_after_utc < test_pki.server.cert.not_valid_after_utc
    usage = test_pki.sign_only.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not usage.key_encipherment
    # The server certificate is good enough for a real TLS 1.2+ handshake on loopback.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(test_pki.server.cert_path, test_pki.server.key_path)
    client_ctx = ssl.create_default_context(cafile=str(test_pki.ca.cert_path))
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as listener:
        import threading

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5))

        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"hello")
                assert tls.recv(5) == b"hello"
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        t.join(5)
