"""Secure authentication: AUCH challenge round trip, wrong key, malformed challenge."""

from __future__ import annotations

import pytest

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.auth import answer_challenge, check_response, make_challenge
from oftp2_provider.protocol.cms.ber import BerReader, FileSource
from oftp2_provider.protocol.suites import AuthenticationFailed, CipherSuite


@pytest.mark.parametrize("suite", [CipherSuite.TDES_RSA_SHA1, CipherSuite.AES256_RSA_SHA256])
def test_round_trip(test_pki: PKIBundle, suite: CipherSuite) -> None:
    auch, challenge = make_challenge(test_pki.partner.cert, suite=suite)
    assert len(challenge) == 20
    assert suite.cipher.oid.encode() not in auch  # sanity: OIDs are binary
    response = answer_challenge(auch, test_pki.partner.key, test_pki.partner.cert)
    assert check_response(challenge, response)
    assert not check_response(challenge, bytes(20))
    assert not check_response(b"short", b"short")


def test_challenge_is_der_and_fresh(test_pki: PKIBundle) -> None:
    import io

    auch1, c1 = make_challenge(test_pki.partner.cert)
    auch2, c2 = make_challenge(test_pki.partner.cert)
    assert c1 != c2 and auch1 != auch2
    header = BerReader(FileSource(io.BytesIO(auch1))).header()
    assert header.length == len(auch1) - header.size  # definite length: DER
    assert len(auch1) < 0xFFFF  # fits AUCHCHLL


def test_wrong_key(test_pki: PKIBundle) -> None:
    auch, _ = make_challenge(test_pki.partner.cert)
    with pytest.raises(AuthenticationFailed) as info:
        answer_challenge(auch, test_pki.client.key, test_pki.client.cert)
    assert int(info.value.esid or 0) == 11
    for _ in range(5):  # without the certificate hint, a wrong key must still fail
        auch, _ = make_challenge(test_pki.partner.cert)
        with pytest.raises(AuthenticationFailed):
            answer_challenge(auch, test_pki.client.key, None)


@pytest.mark.parametrize("blob", [b"", b"\x30\x80", b"not cms at all", b"\x30\x03\x02\x01\x00"])
def test_malformed_challenge(test_pki: PKIBundle, blob: bytes) -> None:
    with pytest.raises(AuthenticationFailed):
        answer_challenge(blob, test_pki.partner.key, test_pki.partner.cert)


def test_no_partner_certificate() -> None:
    with pytest.raises(AuthenticationFailed, match="no certificate"):
        make_challenge(None)
