"""The demo's generated configurations are valid and really ask for the security the demo claims."""

from __future__ import annotations

import json
from pathlib import Path

from oftp2_provider.connection import OFTP2ConnectionConfig
from oftp2_provider.demo.runner import AIRFLOW_ID, OURS, PARTNER, REMOTE, Ports, airflow_env, gateway_configs
from oftp2_provider.gateway.config import load_config
from oftp2_provider.pki import PKIBundle


def test_gateway_configurations_load_and_are_secured(tmp_path: Path, test_pki: PKIBundle) -> None:
    paths = gateway_configs(tmp_path, test_pki.directory, Ports(), "a2V5")
    ours, partner, remote = (load_config(paths[name]) for name in ("ours", "partner", "remote"))
    assert [lst.type for lst in ours.listeners] == ["tls", "relay"]
    assert remote.listeners == []  # the remote partner reaches us only through the relay
    assert ours.partners["partner"].receipt_policy == "hold"
    pairs = [
        (ours.partners["partner"], PARTNER),
        (ours.partners["remote"], REMOTE),
        (partner.partners["ours"], OURS),
        (remote.partners["ours"], OURS),
    ]
    for cfg, odette_id in pairs:
        sec = cfg.security
        assert cfg.odette_id == odette_id and cfg.secure_auth
        assert sec.sign_outbound and sec.encrypt_outbound and sec.compress_outbound
        assert sec.require_signed and sec.require_encrypted and sec.require_signed_receipts
    airflow = partner.partners["airflow"]
    assert airflow.odette_id == AIRFLOW_ID and airflow.secure_auth
    assert airflow.security.require_signed and airflow.security.require_encrypted
    assert remote.partners["ours"].address is not None and not remote.partners["ours"].address.tls


def test_airflow_connection_is_valid(tmp_path: Path) -> None:
    env = airflow_env(tmp_path, tmp_path, Ports(), "a2V5")
    body = json.loads(env["AIRFLOW_CONN_OFTP2_DEFAULT"])

    class Conn:
        conn_id = "oftp2_default"
        host, port, login, password = body["host"], body["port"], body["login"], body["password"]
        extra = body["extra"]

    config = OFTP2ConnectionConfig.from_connection(Conn())
    assert config.extras.tls and config.extras.signed_eerp and config.extras.partner_id == PARTNER
    e = config.extras
    assert e.secure_auth and e.sign_files and e.encrypt_files and e.compress_files
    assert e.signing_cert and e.signing_key and e.partner_cert
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
