"""The per-partner TLS client-certificate pin in the configuration: forms accepted, and load-time errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from oftp2_provider.gateway.accept import AcceptPolicy
from oftp2_provider.gateway.config import ConfigError, GatewayConfig, load_config, parse_config
from oftp2_provider.pki import PKIBundle


def _sha256(pki: PKIBundle) -> str:
    return hashlib.sha256(pki.client.cert.public_bytes(Encoding.DER)).hexdigest()


def _data(pki: PKIBundle, partner: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A gateway with a TLS listener that asks for client certificates, and partner ``acme``."""
    data: dict[str, Any] = {
        "identity": {
            "odette_id": "O0013GW",
            "password": "pw",
            "ca_certs": [str(pki.ca.cert_path)],
            "tls": {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path)},
        },
        "listeners": [{"type": "tls", "port": 0}],
        "partners": {"acme": {"odette_id": "O0013ACME", "password": "x", **partner}},
    }
    data.update(top)
    return data


def _parse(data: dict[str, Any], **kw: Any) -> GatewayConfig:
    return parse_config(data, **kw)


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return dict(info.value.problems)


def test_unpinned_partner_has_no_pin(test_pki: PKIBundle) -> None:
    partner = _parse(_data(test_pki, {})).partners["acme"]
    assert not partner.tls_pinned and partner.tls_client_pin() is None
    assert AcceptPolicy(_parse(_data(test_pki, {}))).pins == {}


def test_pin_by_pem_file_der_file_or_fingerprint(test_pki: PKIBundle, tmp_path: Path) -> None:
    expected = _sha256(test_pki)
    der = tmp_path / "client.der"
    der.write_bytes(test_pki.client.cert.public_bytes(Encoding.DER))
    openssl_style = ":".join(expected[i : i + 2] for i in range(0, 64, 2)).upper()
    for partner in (
        {"tls_client_certificate": str(test_pki.client.cert_path)},
        {"tls_client_certificate": str(der)},
        {"tls_client_fingerprint": expected},
        {"tls_client_fingerprint": openssl_style},
        {"tls_client_fingerprint": f"sha256 Fingerprint={openssl_style}"},  # pasted `openssl x509` output
        {"tls_client_fingerprint": f"  {expected.upper()}\n"},
    ):
        cfg = _parse(_data(test_pki, partner))
        assert cfg.partners["acme"].tls_pinned
        assert cfg.partners["acme"].tls_client_pin() == expected, partner
        assert AcceptPolicy(cfg).pins == {"O0013ACME": expected}


def test_relative_certificate_path_resolves_against_the_file(test_pki: PKIBundle, tmp_path: Path) -> None:
    (tmp_path / "partners").mkdir()
    (tmp_path / "partners" / "acme.pem").write_bytes(test_pki.client.cert_path.read_bytes())
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[identity]
odette_id = "O0013GW"
password = "pw"
ca_certs = ["{test_pki.ca.cert_path}"]
[identity.tls]
cert = "{test_pki.server.cert_path}"
key = "{test_pki.server.key_path}"
[[listeners]]
type = "tls"
port = 0
[partners.acme]
odette_id = "O0013ACME"
password = "x"
tls_client_certificate = "partners/acme.pem"
"""
    )
    acme = load_config(path).partners["acme"]
    assert acme.tls_client_certificate == tmp_path / "partners" / "acme.pem"
    assert acme.tls_client_pin() == _sha256(test_pki)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("ab" * 31, "64 hex digits"),  # 62 digits
        ("ab" * 33, "got 66 characters"),
        ("zz" * 32, "non-hex"),
        ("", "got 0 characters"),
    ],
)
def test_bad_fingerprints_are_named(test_pki: PKIBundle, value: str, words: str) -> None:
    problems = _problems(_data(test_pki, {"tls_client_fingerprint": value}))
    assert words in problems["partners.acme.tls_client_fingerprint"], problems


def test_certificate_file_errors_are_named(test_pki: PKIBundle, tmp_path: Path) -> None:
    key = "partners.acme.tls_client_certificate"
    missing = _problems(_data(test_pki, {"tls_client_certificate": str(tmp_path / "absent.pem")}))
    assert "file not found" in missing[key]

    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate")
    problems = _problems(_data(test_pki, {"tls_client_certificate": str(garbage)}))
    assert str(garbage) in problems[key] and "not a PEM or DER X.509 certificate" in problems[key]

    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(test_pki.client.cert_path.read_bytes() + test_pki.partner.cert_path.read_bytes())
    problems = _problems(_data(test_pki, {"tls_client_certificate": str(bundle)}))
    assert "holds 2 certificates; pin exactly one" in problems[key]

    # a private key is not a certificate either (and its content is not echoed)
    problems = _problems(_data(test_pki, {"tls_client_certificate": str(test_pki.client.key_path)}))
    assert problems[key] == f"{test_pki.client.key_path}: not a PEM or DER X.509 certificate"
    assert "PRIVATE KEY" not in problems[key]


def test_both_pins_at_once_are_refused(test_pki: PKIBundle) -> None:
    problems = _problems(
        _data(
            test_pki,
            {
                "tls_client_certificate": str(test_pki.client.cert_path),
                "tls_client_fingerprint": _sha256(test_pki),
            },
        )
    )
    assert "not both" in problems["partners.acme"]


@pytest.mark.parametrize(
    "listeners",
    [
        [{"type": "tcp", "port": 0}],  # no TLS listener at all
        [{"type": "tls", "port": 0}],  # TLS, but no CA to ask for client certificates with
    ],
)
def test_a_pin_needs_a_listener_that_asks_for_client_certificates(
    test_pki: PKIBundle, listeners: list[dict[str, Any]]
) -> None:
    data = _data(test_pki, {"tls_client_fingerprint": _sha256(test_pki)}, listeners=listeners)
    data["identity"]["ca_certs"] = []
    problems = _problems(data)
    assert "no tls listener asks for client certificates" in problems["partners.acme.tls_client_fingerprint"]
    # a listener's own client_ca is enough
    data["listeners"] = [{"type": "tls", "port": 0, "client_ca": [str(test_pki.ca.cert_path)]}]
    assert _parse(data).partners["acme"].tls_pinned


def test_unchecked_files_fail_when_the_gateway_builds_its_policy(test_pki: PKIBundle, tmp_path: Path) -> None:
    """``check_files=False`` defers reading the file; the gateway then fails at start, never opens up."""
    absent = tmp_path / "absent.pem"
    cfg = _parse(_data(test_pki, {"tls_client_certificate": str(absent)}), check_files=False)
    assert cfg.partners["acme"].tls_pinned
    with pytest.raises(ValueError, match=f"cannot read {absent}"):
        AcceptPolicy(cfg)
