"""The ``oftp2`` connection model: validation, defaults, generated form and documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from oftp2_provider.connection import (
    ConnectionConfigError,
    OFTP2ConnectionConfig,
    OFTP2ConnectionExtras,
    conn_fields,
    embed_reference,
    resolve_secret,
)
from oftp2_provider.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[3]


def _config(**extra: object) -> OFTP2ConnectionConfig:
    return OFTP2ConnectionConfig.from_values(
        "p",
        host="127.0.0.1",
        port=None,
        login="O0013OURS",
        password="pw",
        extra={"partner_id": "P1", **extra},
    )


def test_defaults_and_port_follows_tls() -> None:
    plain = _config()
    assert plain.port == 3305
    assert plain.extras.level == 5 and plain.extras.sdeb == 4096 and plain.extras.credit == 64
    assert plain.extras.restart is True and plain.extras.compression is False
    assert _config(tls=True).port == 6619


def test_explicit_port_wins() -> None:
    config = OFTP2ConnectionConfig.from_values(
        "p", host="h", port=7000, login="ME", password="", extra={"partner_id": "P", "tls": True}
    )
    assert config.port == 7000


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"sdeb": 100}, "extra.sdeb", "128"),
        ({"credit": 1000}, "extra.credit", "999"),
        ({"level": 3}, "extra.level", "5"),
        ({"cipher_suite": 7}, "extra.cipher_suite", ""),
        ({"unknown_key": 1}, "extra.unknown_key", "not permitted"),
        ({"partner_password": "123456789"}, "extra.partner_password", "8"),
        ({"gateway_api_url": "ftp://x"}, "extra.gateway_api_url", "http"),
        ({"tls_cert": "file:/x"}, "extra", "tls_key"),
        ({"level": 4, "sign_files": True}, "extra", "level 5"),
    ],
)
def test_errors_name_the_field(extra: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(ConnectionConfigError) as info:
        _config(**extra)
    names = [name for name, _ in info.value.problems]
    assert field in names, info.value.problems
    assert fragment in str(info.value)
    assert "'p'" in str(info.value)


def test_missing_partner_and_bad_login_reported_together() -> None:
    with pytest.raises(ConnectionConfigError) as info:
        OFTP2ConnectionConfig.from_values("c", host="", port=None, login="X" * 26, password="", extra={})
    names = {name for name, _ in info.value.problems}
    assert {"extra.partner_id", "host", "login"} <= names


def test_extra_as_json_string_and_form_prefixes() -> None:
    config = OFTP2ConnectionConfig.from_values(
        "c",
        host="h",
        port=None,
        login="ME",
        password="",
        extra='{"extra__oftp2__partner_id": "P9", "extra__oftp2__credit": 7, "tls_ca": ""}',
    )
    assert config.extras.partner_id == "P9" and config.extras.credit == 7 and config.extras.tls_ca is None
    with pytest.raises(ConnectionConfigError, match="extra: not valid JSON"):
        OFTP2ConnectionConfig.from_values("c", host="h", port=None, login="ME", password="", extra="{nope")


def test_conn_fields_cover_the_model_and_mark_secrets() -> None:
    fields = conn_fields()
    assert set(fields) == set(OFTP2ConnectionExtras.model_fields)
    assert fields["sdeb"]["schema"] == {
        "type": ["integer", "null"],
        "default": 4096,
        "minimum": 128,
        "maximum": 99999,
    }
    assert fields["cipher_suite"]["schema"]["enum"] == [1, 2, 3, 4, 5, 6]
    assert fields["partner_password"]["schema"]["format"] == "password"
    assert fields["tls_key_password"]["schema"]["format"] == "password"
    assert fields["partner_id"]["schema"]["type"] == "string"
    for name, field in fields.items():
        assert field["label"] and field["description"], name


def test_provider_info_uses_generated_form() -> None:
    conn_type = next(c for c in get_provider_info()["connection-types"] if c["connection-type"] == "oftp2")
    assert conn_type["connection-type"] == "oftp2"
    assert conn_type["conn-fields"] == conn_fields()
    assert "extra" in conn_type["ui-field-behaviour"]["hidden-fields"]


def test_airflow_providers_manager_sees_the_form(airflow_home: Path) -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "oftp2" in manager.hooks
    widgets = manager.connection_form_widgets
    assert widgets["extra__oftp2__sdeb"].field["value"] == 4096
    assert widgets["extra__oftp2__partner_password"].is_sensitive


def test_committed_docs_match_the_model() -> None:
    page = (ROOT / "docs" / "airflow.md").read_text(encoding="utf-8")
    assert embed_reference(page) == page, "docs/airflow.md is stale: run python -m oftp2_provider.connection"


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_text(pem)
    monkeypatch.setenv("OFTP2_TEST_PEM", pem)
    assert resolve_secret(f"file:{tmp_path / 'ca.pem'}") == pem.encode()
    assert resolve_secret(str(tmp_path / "ca.pem")) == pem.encode()
    assert resolve_secret("env:OFTP2_TEST_PEM") == pem.encode()
    assert resolve_secret(pem) == pem.encode()
    with pytest.raises(ValueError, match="OFTP2_TEST_MISSING is not set"):
        resolve_secret("env:OFTP2_TEST_MISSING")
    with pytest.raises(ValueError, match="cannot read"):
        resolve_secret(f"file:{tmp_path / 'missing.pem'}")
