"""Cipher suites and the reason codes carried by the security errors."""

from __future__ import annotations

import pytest

from oftp2_provider.protocol.errors import EfnaReason, EsidReason, NerpReason, SfnaReason
from oftp2_provider.protocol.suites import (
    AuthenticationFailed,
    CipherSuite,
    DecompressionFailed,
    DecryptionFailed,
    SecurityPolicy,
    SignatureInvalid,
    UnsupportedSuite,
    suite_from_code,
)


@pytest.mark.parametrize(
    ("code", "cipher", "hash_name"),
    [
        (1, "des-ede3-cbc", "sha1"),
        (2, "aes256-cbc", "sha1"),
        (3, "des-ede3-cbc", "sha256"),
        (4, "aes256-cbc", "sha256"),
        (5, "des-ede3-cbc", "sha512"),
        (6, "aes256-cbc", "sha512"),
    ],
)
def test_suite_table(code: int, cipher: str, hash_name: str) -> None:
    suite = suite_from_code(code)
    assert suite.cipher.name == cipher
    assert suite.hash_name == hash_name
    assert suite.hash_algorithm().name == hash_name


@pytest.mark.parametrize("code", [7, 8, 99, -1])
def test_unknown_suite_is_sfna_15(code: int) -> None:
    with pytest.raises(UnsupportedSuite, match="not supported") as info:
        suite_from_code(code)
    assert info.value.sfna is SfnaReason.CIPHER_SUITE_NOT_SUPPORTED


def test_suite_none_has_no_algorithms() -> None:
    assert suite_from_code(0) is CipherSuite.NONE
    with pytest.raises(UnsupportedSuite):
        _ = CipherSuite.NONE.cipher
    with pytest.raises(UnsupportedSuite):
        _ = CipherSuite.NONE.hash_name


def test_error_reason_codes() -> None:
    assert SignatureInvalid.efna is EfnaReason.INVALID_FILE_SIGNATURE
    assert SignatureInvalid.nerp is NerpReason.FILE_SIGNATURE_NOT_VALID
    assert DecryptionFailed.efna is EfnaReason.FILE_DECRYPTION_FAILURE
    assert DecryptionFailed.nerp is NerpReason.FILE_DECRYPTION_FAILED
    assert DecompressionFailed.efna is EfnaReason.FILE_DECOMPRESSION_FAILURE
    assert DecompressionFailed.nerp is NerpReason.FILE_DECOMPRESSION_FAILED
    assert AuthenticationFailed.esid is EsidReason.INVALID_CHALLENGE_RESPONSE
    assert int(SignatureInvalid.efna) == 21 and int(DecryptionFailed.nerp) == 33


@pytest.mark.parametrize(
    ("policy", "fields", "reason"),
    [
        (SecurityPolicy(), {"security": 3, "cipher_suite": 4, "compression": 1}, None),
        (SecurityPolicy(), {"security": 0, "cipher_suite": 0, "compression": 0, "envelope": 0}, None),
        (SecurityPolicy(), {"security": 3, "cipher_suite": 9, "compression": 0}, 15),
        (
            SecurityPolicy(suites=frozenset({0, 4, 6})),
            {"security": 1, "cipher_suite": 1, "compression": 0},
            15,
        ),
        (SecurityPolicy(), {"security": 1, "cipher_suite": 0, "compression": 0}, 15),
        (SecurityPolicy(allow_encrypted=False), {"security": 1, "cipher_suite": 4, "compression": 0}, 16),
        (SecurityPolicy(require_encrypted=True), {"security": 2, "cipher_suite": 4, "compression": 0}, 17),
        (SecurityPolicy(allow_compressed=False), {"security": 0, "cipher_suite": 0, "compression": 1}, 18),
        (SecurityPolicy(allow_signed=False), {"security": 2, "cipher_suite": 4, "compression": 0}, 19),
        (SecurityPolicy(require_signed=True), {"security": 1, "cipher_suite": 4, "compression": 0}, 20),
        (SecurityPolicy(), {"security": 2, "cipher_suite": 4, "compression": 0, "envelope": 0}, 99),
    ],
)
def test_security_policy_refusals(policy: SecurityPolicy, fields: dict[str, int], reason: int | None) -> None:
    refusal = policy.refusal(**fields)
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None and int(refusal[0]) == reason and refusal[1]
