"""Gateway configuration: TOML/YAML loading, defaults, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from oftp2_provider.gateway.config import (
    ConfigError,
    PartnerAddress,
    TcpListener,
    TlsListener,
    load_config,
    parse_config,
)
from oftp2_provider.gateway.passwords import hash_password, verify_password
from oftp2_provider.pki import PKIBundle

MINIMAL = """
[identity]
odette_id = "o0013gateway"
password = "secret"

[partners.acme]
odette_id = "O0013ACME"
password = "acmepw"
address = "tls://partner.example:6619"
"""


def _problems(text: str, tmp_path: Path, suffix: str = ".toml") -> dict[str, str]:
    path = tmp_path / f"gw{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    return dict(info.value.problems)


def test_minimal_toml_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(MINIMAL)
    cfg = load_config(path)
    assert cfg.identity.odette_id == "O0013GATEWAY"
    assert cfg.identity.password.get_secret_value() == "secret"
    assert cfg.listeners == [TcpListener()]
    assert cfg.listeners[0].port == 3305
    assert cfg.state_dir == tmp_path / "oftp2-state"
    assert cfg.ledger_sqlite_path() == tmp_path / "oftp2-state" / "ledger.sqlite"
    assert cfg.inbox_for("acme") == tmp_path / "oftp2-state" / "inbox" / "acme"
    acme = cfg.partners["acme"]
    assert acme.address == PartnerAddress(host="partner.example", port=6619, tls=True)
    assert acme.receipt_policy == "immediate" and acme.duplicate_policy == "refuse"
    assert acme.allowed_levels == [5, 4, 2, 1]
    assert cfg.find_partner("O0013ACME")[0] == "acme"
    assert cfg.find_partner("acme")[1] is acme
    assert cfg.partner_by_id("o0013acme  ") == ("acme", acme)
    assert not cfg.control_api.enabled
    # secrets do not leak into reprs
    assert "acmepw" not in repr(cfg)


def test_yaml_is_equivalent(tmp_path: Path) -> None:
    toml_path = tmp_path / "a.toml"
    toml_path.write_text(MINIMAL)
    yaml_path = tmp_path / "a.yaml"
    yaml_path.write_text(
        "identity: {odette_id: o0013gateway, password: secret}\n"
        "partners:\n  acme: {odette_id: O0013ACME, password: acmepw, address: 'tls://partner.example:6619'}\n"
    )
    assert load_config(toml_path) == load_config(yaml_path)


@pytest.mark.parametrize(
    ("snippet", "key", "words"),
    [
        ('[partners.acme]\nodette_id = "O1"\npassword = "muchtoolong"\n', "partners.acme.password", "8"),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\nallowed_levels = [3]\n',
            "partners.acme.allowed_levels.0",
            "1, 2, 4 or 5",
        ),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\nmax_sdeb = 10\n',
            "partners.acme.max_sdeb",
            "128",
        ),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\naddress = "nohostport"\n',
            "partners.acme.address",
            "host:port",
        ),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\nreceipt_policy = "later"\n',
            "partners.acme.receipt_policy",
            "immediate",
        ),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\ncolour = "red"\n',
            "partners.acme.colour",
            "Extra inputs",
        ),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\n[partners.acme.security]\nallowed_suites = [9]\n',
            "partners.acme.security.allowed_suites",
            "9",
        ),
        (
            '[partners.acme]\nodette_id = "O1"\npassword = "x"\nsecure_auth = true\n',
            "partners.acme",
            "certificates.auth",
        ),
        ('[[listeners]]\ntype = "tcp"\nport = 70000\n', "listeners.0.port", "65535"),
        ('[[listeners]]\ntype = "ftp"\n', "listeners.0", "tcp"),
        ('[[listeners]]\ntype = "tls"\n', "listeners.0", "identity.tls"),
        ('[ledger]\nconn_id = "a"\nuri = "sqlite:////x"\n', "ledger", "choose one"),
        ("[control_api]\nenabled = true\n", "control_api", "no users"),
        (
            '[[control_api.users]]\nname = "ops"\npassword_hash = "plaintext"\n',
            "control_api.users.0.password_hash",
            "hash-password",
        ),
        ('accept_hook = "not a reference"\n', "accept_hook", "python:"),
        (
            '[[events.handlers]]\nname = "h"\nhandler = "python:x.Y"\ntimeout = 0\n',
            "events.handlers.0.timeout",
            "greater than 0",
        ),
        (
            '[identity.tls]\ncert = "missing.crt"\nkey = "missing.key"\n',
            "identity.tls.cert",
            "file not found",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, snippet: str, key: str, words: str) -> None:
    base = '[identity]\nodette_id = "O0013GW"\npassword = "pw"\n'
    text = base + snippet if snippet.startswith("[") else snippet + base  # top-level keys first
    problems = _problems(text, tmp_path)
    assert key in problems, problems
    assert words in problems[key]


def test_duplicate_partner_ids_are_named(tmp_path: Path) -> None:
    text = MINIMAL + '[partners.other]\nodette_id = "o0013acme"\npassword = "x"\n'
    problems = _problems(text, tmp_path)
    assert "partners.other.odette_id" in problems
    assert "partners.acme" in problems["partners.other.odette_id"]


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    problems = _problems('[identity]\nodette_id = "O1"\n', tmp_path)
    assert problems == {"identity.password": "Field required"}


def test_syntax_errors(tmp_path: Path) -> None:
    assert "TOML syntax error" in _problems("[identity\n", tmp_path)[""]
    assert "YAML syntax error" in _problems("identity: [unclosed\n", tmp_path, ".yaml")[""]
    assert "mapping" in _problems("- a\n- b\n", tmp_path, ".yml")[""]
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFTP_TEST_PW", "fromenv")
    cfg = parse_config({"identity": {"odette_id": "O1", "password": "env:OFTP_TEST_PW"}})
    assert cfg.identity.password.get_secret_value() == "fromenv"
    with pytest.raises(ConfigError) as info:
        parse_config({"identity": {"odette_id": "O1", "password": "env:OFTP_TEST_UNSET_XYZ"}})
    assert (
        dict(info.value.problems)["identity.password"]
        == "environment variable OFTP_TEST_UNSET_XYZ is not set"
    )


def test_relative_certificate_paths_resolve_against_the_file(tmp_path: Path, test_pki: PKIBundle) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "gw.crt").write_bytes(test_pki.server.cert_path.read_bytes())
    (conf_dir / "gw.key").write_bytes(test_pki.server.key_path.read_bytes())
    (conf_dir / "gw.toml").write_text(
        '[identity]\nodette_id = "O1"\npassword = "pw"\n'
        '[identity.tls]\ncert = "gw.crt"\nkey = "gw.key"\n'
        '[[listeners]]\ntype = "tls"\nport = 0\n'
    )
    cfg = load_config(conf_dir / "gw.toml")
    assert cfg.identity.tls is not None and cfg.identity.tls.cert == conf_dir / "gw.crt"
    assert isinstance(cfg.listeners[0], TlsListener) and cfg.listeners[0].port == 0


def test_password_hashes() -> None:
    for scheme in ("scrypt", "pbkdf2_sha256"):
        encoded = hash_password("s3cret", scheme=scheme)
        assert encoded.startswith(scheme + "$")
        assert "s3cret" not in encoded
        assert verify_password("s3cret", encoded)
        assert not verify_password("s3cret!", encoded)
    assert hash_password("a") != hash_password("a")  # salted
    assert not verify_password("a", "scrypt$broken")
    assert not verify_password("a", "md5$whatever")
    with pytest.raises(ValueError, match="unknown password hash scheme"):
        hash_password("a", scheme="md5")
