"""The session-wide secret scanner in tests/conftest.py really catches secrets in log records."""

from __future__ import annotations

import logging

from tests.conftest import SecretScanner


def test_scanner_catches_a_private_key_and_a_sas_signature(secret_scanner: SecretScanner) -> None:
    before = len(secret_scanner.hits)
    log = logging.getLogger("oftp2_provider.tests.scanner")
    log.info("harmless line about session 42")
    assert len(secret_scanner.hits) == before
    log.warning("leaked: -----BEGIN PRIVATE KEY-----")
    log.info("token SharedAccessSignature sr=x&sig=AbCdEfGhIjKlMnOpQrStUvWxYz012345&se=1&skn=k")
    try:
        assert len(secret_scanner.hits) == before + 2
    finally:
        del secret_scanner.hits[before:]  # planted on purpose: must not fail the session


def test_scanner_knows_the_generated_private_keys(secret_scanner: SecretScanner, test_pki) -> None:  # type: ignore[no-untyped-def]
    body = [ln for ln in test_pki.server.key_path.read_text().splitlines() if not ln.startswith("-----")]
    assert secret_scanner.find(f"oops {body[1]} oops") is not None
    assert secret_scanner.find("nothing secret here") is None
