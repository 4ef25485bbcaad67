"""Damaged input from the network: every mutation of a protected file ends in a typed error or the exact original."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.cms import protect_file, unprotect_file
from oftp2_provider.protocol.suites import SecurityError

ORIGINAL = b"ODETTE " * 300 + os.urandom(700)


@pytest.fixture(scope="module")
def wire(test_pki: PKIBundle, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "src").write_bytes(ORIGINAL)
    protect_file(
        d / "src",
        d / "wire",
        suite=4,
        sign_key=test_pki.client.key,
        sign_cert=test_pki.client.cert,
        compress=True,
        encrypt_for=test_pki.partner.cert,
        chunk_size=500,
    )
    return (d / "wire").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutations_give_typed_errors(
    test_pki: PKIBundle, wire: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    damaged = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="kind")
        pos = data.draw(st.integers(0, len(damaged) - 1), label="pos")
        if kind == "flip":
            damaged[pos] ^= data.draw(st.integers(1, 255), label="mask")
        elif kind == "cut":
            del damaged[pos : pos + data.draw(st.integers(1, 64), label="n")]
        else:
            damaged[pos:pos] = data.draw(st.binary(min_size=1, max_size=8), label="ins")
        if not damaged:
            damaged = bytearray(b"\x30")
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(bytes(damaged))
    dst.unlink(missing_ok=True)
    try:
        unprotect_file(
            src,
            dst,
            security_level=3,
            compressed=True,
            suite=4,
            decrypt_key=test_pki.partner.key,
            decrypt_cert=test_pki.partner.cert,
            verify_certs=[test_pki.client.cert],
            fsync=False,
        )
    except SecurityError:
        assert not dst.exists()
    else:
        assert dst.read_bytes() == ORIGINAL
    assert not list(tmp_path.glob(".out.*.part"))


@pytest.fixture(scope="module")
def challenge(test_pki: PKIBundle) -> bytes:
    from oftp2_provider.protocol.auth import make_challenge

    return make_challenge(test_pki.partner.cert, suite=4)[0]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_challenges_fail_authentication(
    test_pki: PKIBundle, challenge: bytes, data: st.DataObject
) -> None:
    from oftp2_provider.protocol.auth import AuthenticationFailed, answer_challenge

    damaged = bytearray(challenge)
    pos = data.draw(st.integers(0, len(damaged) - 1))
    if data.draw(st.booleans()):
        damaged[pos] ^= data.draw(st.integers(1, 255))
    else:
        del damaged[pos:]
    try:
        response = answer_challenge(bytes(damaged), test_pki.partner.key, test_pki.partner.cert)
    except AuthenticationFailed:
        return
    assert len(response) == 20  # a flip in a part nobody checks (e.g. a version number)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_receipt_signatures_never_verify(test_pki: PKIBundle, data: st.DataObject) -> None:
    from oftp2_provider.protocol.commands import EERP
    from oftp2_provider.protocol.receipts import ReceiptOutcome, sign_receipt, verify_receipt

    eerp = EERP("DSN", "20261124", "1200000001", "O0013000000A", "O0013000000B")
    signed = sign_receipt(
        eerp, suite=4, key=test_pki.partner.key, cert=test_pki.partner.cert, file_hash=bytes(32)
    )
    sig = bytearray(signed.signature)
    pos = data.draw(st.integers(0, len(sig) - 1))
    sig[pos] ^= data.draw(st.integers(1, 255))
    damaged = EERP(**{**{f: getattr(signed, f) for f in ("dsn", "date", "time", "destination", "originator")},
                      "file_hash": signed.file_hash, "signature": bytes(sig)})  # fmt: skip
    result = verify_receipt(damaged, suite=4, partner_certs=[test_pki.partner.cert], expected_hash=bytes(32))
    # A flip in the signing-time value or a length-neutral spot of an unsigned field may not matter;
    # what matters is that a VERIFIED outcome still means the fields were signed by the partner.
    assert result.outcome in set(ReceiptOutcome) - {ReceiptOutcome.UNSIGNED}
    if result.outcome is ReceiptOutcome.VERIFIED:
        assert result.signer == test_pki.partner.cert
