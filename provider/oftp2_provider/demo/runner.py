"""The demo's steps (see the package docstring)."""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .processes import BIN, ProcessSet, StepFailed, free_port, wait_for

__all__ = ["DemoResult", "main", "run_demo"]

OURS = "O0013000000OURS"
PARTNER = "O0013000000PARTNER"
AIRFLOW_ID = "O0013000000AIRFLOW"
REMOTE = "O0013000000REMOTE"
OUR_PASSWORD = "OURSPW"
PARTNER_PASSWORD = "PARTPW"
REMOTE_PASSWORD = "REMOTEPW"
AIRFLOW_PASSWORD = "AFLOWPW"
API_USER = "demo"
API_PASSWORD = "demo-api-password"
RELAY_NAMESPACE = "relay-emulator.local"
RELAY_KEY_NAME = "RootManageSharedAccessKey"
STEP_TIMEOUT = 120.0

STEPS = (
    "1 send DAG → partner, signed EERP",
    "2 partner → us, DAG releases EERP",
    "3 webhook through relay → DAG run",
    "4 OFTP2 session through relay tunnel",
)


@dataclass
class StepResult:
    """One row of the summary table."""

    name: str
    status: str = "SKIPPED"
    detail: str = "not run"
    seconds: float = 0.0


@dataclass
class DemoResult:
    """All rows, the work directory and the overall exit code."""

    workdir: Path
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every step succeeded."""
        return all(s.status == "OK" for s in self.steps)


def repo_root() -> Path:
    """The checkout this package runs from (its ``dags/`` are the demo's DAG folder)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "dags").is_dir() and (parent / "provider").is_dir():
            return parent
    return Path.cwd()


# --------------------------------------------------------------------------------------------------
# Configuration of the three parties


@dataclass
class Ports:
    """Loopback ports chosen at start."""

    relay: int = field(default_factory=free_port)
    ours_tls: int = field(default_factory=free_port)
    ours_api: int = field(default_factory=free_port)
    partner_tls: int = field(default_factory=free_port)
    partner_api: int = field(default_factory=free_port)
    remote_api: int = field(default_factory=free_port)
    tunnel: int = field(default_factory=free_port)
    airflow_api: int = field(default_factory=free_port)


def _pair(pki_dir: Path, name: str) -> dict[str, str]:
    return {"cert": str(pki_dir / f"{name}.crt"), "key": str(pki_dir / f"{name}.key")}


def _secure_policy() -> dict[str, Any]:
    return {
        "require_signed": True,
        "require_encrypted": True,
        "sign_outbound": True,
        "encrypt_outbound": True,
        "compress_outbound": True,
        "cipher_suite": 4,
        "request_signed_receipt": True,
        "require_signed_receipts": True,
    }


def gateway_configs(work: Path, pki_dir: Path, ports: Ports, relay_key: str) -> dict[str, Path]:
    """Write the YAML configurations of our gateway, the partner's and the remote partner's.

    The *remote* partner reaches us only through the relay (its ``relay-forward -L`` port).
    """
    from oftp2_provider.gateway.passwords import hash_password

    ca = str(pki_dir / "ca.crt")
    users = [{"name": API_USER, "password_hash": hash_password(API_PASSWORD)}]
    our_cert = str(pki_dir / "server.crt")
    partner_cert = str(pki_dir / "partner.crt")
    remote_cert = str(pki_dir / "client.crt")
    ours = {
        "identity": {
            "odette_id": OURS,
            "password": OUR_PASSWORD,
            "tls": _pair(pki_dir, "server"),
            "auth": _pair(pki_dir, "server"),
            "signing": _pair(pki_dir, "server"),
            "decryption": _pair(pki_dir, "server"),
            "ca_certs": [ca],
        },
        "state_dir": str(work / "ours"),
        "listeners": [
            {"type": "tls", "host": "127.0.0.1", "port": ports.ours_tls},
            {
                "type": "relay",
                "namespace": RELAY_NAMESPACE,
                "path": "oftp",
                "key_name": RELAY_KEY_NAME,
                "key": relay_key,
                "endpoint": f"ws://127.0.0.1:{ports.relay}",
            },
        ],
        "ledger": {"sqlite_path": str(work / "ledger.sqlite")},
        "partners": {
            "partner": {
                "odette_id": PARTNER,
                "password": PARTNER_PASSWORD,
                "secure_auth": True,
                "certificates": {"auth": partner_cert, "signing": partner_cert, "encryption": partner_cert},
                "security": _secure_policy(),
                "receipt_policy": "hold",
                "address": {"host": "localhost", "port": ports.partner_tls, "tls": True, "ca_certs": [ca]},
            },
            "remote": {
                "odette_id": REMOTE,
                "password": REMOTE_PASSWORD,
                "secure_auth": True,
                "certificates": {"auth": remote_cert, "signing": remote_cert, "encryption": remote_cert},
                "security": _secure_policy(),
                "receipt_policy": "immediate",
            },
        },
        "limits": {"idle_timeout": 30, "shutdown_grace": 3},
        "control_api": {"enabled": True, "host": "127.0.0.1", "port": ports.ours_api, "users": users},
    }
    our_entry = {
        "odette_id": OURS,
        "password": OUR_PASSWORD,
        "secure_auth": True,
        "certificates": {"auth": our_cert, "signing": our_cert, "encryption": our_cert},
        "security": _secure_policy(),
        "receipt_policy": "immediate",
    }
    partner = {
        "identity": {
            "odette_id": PARTNER,
            "password": PARTNER_PASSWORD,
            "tls": _pair(pki_dir, "partner"),
            "auth": _pair(pki_dir, "partner"),
            "signing": _pair(pki_dir, "partner"),
            "decryption": _pair(pki_dir, "partner"),
            "ca_certs": [ca],
        },
        "state_dir": str(work / "partner"),
        "listeners": [{"type": "tls", "host": "127.0.0.1", "port": ports.partner_tls}],
        "ledger": {"sqlite_path": str(work / "partner" / "ledger.sqlite")},
        "partners": {
            # our gateway, called directly over TLS
            "ours": {
                **our_entry,
                "address": {"host": "localhost", "port": ports.ours_tls, "tls": True, "ca_certs": [ca]},
            },
            # Airflow's own OFTP identity (the send DAG's hook, with our key pair): TLS, secure
            # authentication, signed+compressed+encrypted files and a signed EERP
            "airflow": {
                "odette_id": AIRFLOW_ID,
                "password": AIRFLOW_PASSWORD,
                "secure_auth": True,
                "certificates": {"auth": our_cert, "signing": our_cert, "encryption": our_cert},
                "security": _secure_policy(),
                "receipt_policy": "immediate",
            },
        },
        "limits": {"idle_timeout": 30, "shutdown_grace": 3},
        "control_api": {"enabled": True, "host": "127.0.0.1", "port": ports.partner_api, "users": users},
    }
    remote = {
        "identity": {
            "odette_id": REMOTE,
            "password": REMOTE_PASSWORD,
            "auth": _pair(pki_dir, "client"),
            "signing": _pair(pki_dir, "client"),
            "decryption": _pair(pki_dir, "client"),
            "ca_certs": [ca],
        },
        "state_dir": str(work / "remote"),
        "listeners": [],
        "ledger": {"sqlite_path": str(work / "remote" / "ledger.sqlite")},
        "partners": {
            # our gateway, through the relay tunnel (relay-forward -L on this host)
            "ours": {**our_entry, "address": {"host": "127.0.0.1", "port": ports.tunnel}},
        },
        "limits": {"idle_timeout": 30, "shutdown_grace": 3},
        "control_api": {"enabled": True, "host": "127.0.0.1", "port": ports.remote_api, "users": users},
    }
    paths = {}
    for name, data in (("ours", ours), ("partner", partner), ("remote", remote)):
        (work / name).mkdir(parents=True, exist_ok=True)
        path = work / name / "gateway.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        paths[name] = path
    return paths


def airflow_env(work: Path, root: Path, ports: Ports, relay_key: str) -> dict[str, str]:
    """Environment of every Airflow process: private AIRFLOW_HOME, SQLite, connections as env vars."""
    pki = work / "pki"
    home = work / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    oftp2_conn = {
        "conn_type": "oftp2",
        "host": "localhost",
        "port": ports.partner_tls,
        "login": AIRFLOW_ID,
        "password": AIRFLOW_PASSWORD,
        "extra": {
            "partner_id": PARTNER,
            "partner_password": PARTNER_PASSWORD,
            "tls": True,
            "tls_ca": f"file:{pki / 'ca.crt'}",
            "secure_auth": True,
            "sign_files": True,
            "compress_files": True,
            "encrypt_files": True,
            "signed_eerp": True,
            "cipher_suite": 4,
            "signing_cert": f"file:{pki / 'server.crt'}",
            "signing_key": f"file:{pki / 'server.key'}",
            "partner_cert": f"file:{pki / 'partner.crt'}",
            "ledger_path": str(work / "ledger.sqlite"),
            "inbox": str(work / "airflow-inbox"),
            "connect_timeout": 10,
            "response_timeout": 30,
            "gateway_api_url": f"http://127.0.0.1:{ports.ours_api}",
            "gateway_api_user": API_USER,
            "gateway_api_password": API_PASSWORD,
        },
    }
    relay_conn = {
        "conn_type": "azure_relay",
        "host": RELAY_NAMESPACE,
        "login": RELAY_KEY_NAME,
        "password": relay_key,
        "extra": {"hybrid_connection": "webhooks", "endpoint": f"ws://127.0.0.1:{ports.relay}"},
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW", "OFTP2_")) and k != "PYTHONPATH"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports.airflow_api}/execution/",
            "AIRFLOW__API__PORT": str(ports.airflow_api),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": base64.b64encode(os.urandom(24)).decode(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW_CONN_OFTP2_DEFAULT": json.dumps(oftp2_conn),
            "AIRFLOW_CONN_AZURE_RELAY_DEFAULT": json.dumps(relay_conn),
            "OFTP2_LEDGER_PATH": str(work / "ledger.sqlite"),
            "OFTP2_PARTNER": PARTNER,
            "OFTP2_INBOUND_POLL_SECONDS": "1",
            "OFTP2_EERP_POLL_SECONDS": "1",
            "RELAY_HYBRID_CONNECTION": "webhooks",
        }
    )
    return env


# --------------------------------------------------------------------------------------------------
# Helpers


class Api:
    """A gateway's control API (HTTP Basic)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        response = httpx.request(
            method, self.base + path, auth=(API_USER, API_PASSWORD), timeout=60.0, **kwargs
        )
        if response.status_code >= 400:
            raise StepFailed(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    def health(self) -> bool:
        """True once the API answers ``ok``."""
        return bool(self._call("GET", "/health").get("status") == "ok")

    def submit(self, partner: str, dsn: str, path: Path) -> dict[str, Any]:
        """Queue ``path`` for ``partner``; returns the transfer."""
        body = {"partner": partner, "dsn": dsn, "path": str(path)}
        return dict(self._call("POST", "/api/v1/transfers", json=body)["transfer"])

    def call(self, partner: str) -> dict[str, Any]:
        """Call ``partner`` now; returns the call result."""
        return dict(self._call("POST", f"/api/v1/partners/{partner}/call"))

    def transfer(self, transfer_id: int) -> dict[str, Any]:
        """One transfer and its events."""
        return dict(self._call("GET", f"/api/v1/transfers/{transfer_id}"))


def _dag_runs(home: Path, dag_id: str) -> list[tuple[str, str]]:
    db = home / "airflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return [
            (str(r), str(s))
            for r, s in conn.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,)
            )
        ]


def _dag_parsed(home: Path, dag_id: str) -> bool:
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=10) as conn:
        return bool(list(conn.execute("SELECT 1 FROM dag WHERE dag_id = ?", (dag_id,))))


def _life(ledger: Any, transfer_id: int) -> str:
    """The transfer's life as ``kind → kind → …`` from the ledger's audit trail."""
    kinds: list[str] = []
    for event in ledger.events(transfer_id):
        if not kinds or kinds[-1] != event.kind:
            kinds.append(event.kind)
    return " → ".join(kinds)


def _their_side(ledger_path: Path, transfer_id: int) -> str:
    """Life and receipt verification of a transfer in another party's ledger."""
    from oftp2_provider.ledger import Ledger

    ledger = Ledger.from_sqlite(ledger_path)
    try:
        verification = [r.verification.lower() for r in ledger.receipts(transfer_id)]
        if "verified" not in verification:
            raise StepFailed(f"their EERP verification {verification}, not verified")
        return f"#{transfer_id} {_life(ledger, transfer_id)}; EERP signature verified"
    finally:
        ledger.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# The demo


class Demo:
    """Starts the parties, runs the steps, stops everything."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.root = repo_root()
        self.ports = Ports()
        self.relay_key = base64.b64encode(os.urandom(32)).decode()
        self.logs = work / "logs"
        self.procs = ProcessSet(self.logs)
        self.ours_api = Api(self.ports.ours_api)
        self.partner_api = Api(self.ports.partner_api)
        self.remote_api = Api(self.ports.remote_api)
        self.env: dict[str, str] = {}
        self.home = work / "airflow"
        self.ledger: Any = None

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> str:
        """PKI, configurations, payloads; returns a one-line summary."""
        from oftp2_provider.pki import generate_test_pki

        self.logs.mkdir(parents=True)
        pki = generate_test_pki(self.work / "pki")
        self.configs = gateway_configs(self.work, pki.directory, self.ports, self.relay_key)
        self.env = airflow_env(self.work, self.root, self.ports, self.relay_key)
        (self.work / "outbox").mkdir()
        return f"CA, our and the partner's certificates in {pki.directory}"

    def start_services(self) -> str:
        """Relay emulator, both gateways, the tunnel entry and the Airflow processes."""
        oftp2 = str(BIN / "oftp2")
        base_env = {k: v for k, v in self.env.items() if not k.startswith("AIRFLOW_CONN")}
        self.procs.start(
            "relay-emulator",
            [
                oftp2,
                "relay-emulator",
                "--port",
                str(self.ports.relay),
                "--namespace",
                RELAY_NAMESPACE,
                "--key-name",
                RELAY_KEY_NAME,
                "--key",
                self.relay_key,
                "--hybrid-connection",
                "oftp",
                "--hybrid-connection",
                "webhooks",
            ],
            base_env,
        )
        wait_for(lambda: _port_open(self.ports.relay), 30, "the relay emulator", alive=self.procs.check_alive)
        for name in ("partner", "ours", "remote"):
            cfg = self.configs[name]
            self.procs.start(f"{name}-gateway", [oftp2, "gateway", "--config", str(cfg)], base_env)
        self.procs.start(
            "remote-relay-forward-L",
            [
                oftp2,
                "relay-forward",
                "--namespace",
                RELAY_NAMESPACE,
                "--path",
                "oftp",
                "--key-name",
                RELAY_KEY_NAME,
                "--key",
                self.relay_key,
                "--endpoint",
                f"ws://127.0.0.1:{self.ports.relay}",
                "-L",
                f"127.0.0.1:{self.ports.tunnel}:oftp",
            ],
            base_env,
        )
        subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=self.env,
            check=True,
            timeout=300,
            stdout=(self.logs / "airflow-db-migrate.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for command in ("api-server", "dag-processor", "scheduler", "triggerer"):
            self.procs.start(f"airflow-{command}", [str(BIN / "airflow"), command], self.env)
        alive = self.procs.check_alive
        wait_for(self.partner_api.health, 60, "the partner gateway", alive=alive)
        wait_for(self.ours_api.health, 60, "our gateway", alive=alive)
        wait_for(self.remote_api.health, 60, "the remote partner's gateway", alive=alive)
        wait_for(lambda: _port_open(self.ports.tunnel), 30, "relay-forward -L", alive=alive)
        from oftp2_provider.ledger import Ledger

        self.ledger = Ledger.from_sqlite(self.work / "ledger.sqlite")
        dags = ("oftp2_send_signed_receipt", "oftp2_inbound_event_driven", "relay_webhook_example")
        for dag_id in dags:
            wait_for(
                functools.partial(_dag_parsed, self.home, dag_id),
                150,
                f"Airflow to parse {dag_id}",
                alive=alive,
            )
        # The scheduled poll DAG runs once when it appears; let it finish before the steps so it
        # cannot take part in them (it polls the same partner with the same ledger).
        wait_for(
            lambda: all(s in ("success", "failed") for _, s in _dag_runs(self.home, "oftp2_scheduled_poll")),
            120,
            "the scheduled poll DAG's first run",
            alive=alive,
        )
        return "relay emulator; our, partner and remote gateways; relay-forward -L; Airflow (4 processes)"

    # ------------------------------------------------------------------ steps

    def step_send(self) -> str:
        """1: the send DAG sends a file to the partner and waits deferred for its signed EERP."""
        src = self.work / "outbox" / "DEMOINVOIC.edi"
        src.write_text("UNA:+.? 'UNB+UNOC:3+AIRFLOW+PARTNER+260101:1200+1'UNH+1+INVOIC:D:96A:UN'\n" * 50)
        conf = json.dumps({"source": str(self.work / "outbox" / "*.edi"), "dsn": "{stem}"})
        subprocess.run(
            [str(BIN / "airflow"), "dags", "trigger", "oftp2_send_signed_receipt", "--conf", conf],
            env=self.env,
            check=True,
            timeout=120,
            stdout=(self.logs / "airflow-dags-trigger.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        runs = wait_for(
            lambda: [
                r for r in _dag_runs(self.home, "oftp2_send_signed_receipt") if r[1] in ("success", "failed")
            ],
            STEP_TIMEOUT,
            "the send DAG run",
            alive=self.procs.check_alive,
        )
        assert isinstance(runs, list)
        if runs[0][1] != "success":
            raise StepFailed(f"send DAG run {runs[0][0]} {runs[0][1]} (see {self.home / 'logs'})")
        from oftp2_provider.ledger import Direction

        rows = self.ledger.list_transfers(direction=Direction.OUTBOUND, partner=PARTNER)
        row = next((r for r in rows if r.key.dsn == "DEMOINVOIC"), None)
        if row is None or row.status.value != "delivered":
            raise StepFailed(f"ledger: DEMOINVOIC is {row.status.value if row else 'missing'}, not delivered")
        if not (row.security_level == 3 and row.compression == 1 and row.signed_eerp):
            raise StepFailed(
                f"DEMOINVOIC went out with SFIDSEC {row.security_level}, SFIDCOMP {row.compression}, "
                f"signed EERP {row.signed_eerp}: not signed+encrypted+compressed with a signed EERP"
            )
        verification = [r.verification.lower() for r in self.ledger.receipts(row.id)]
        if "verified" not in verification:
            raise StepFailed(f"EERP verification {verification}, not verified")
        return (
            f"#{row.id} {_life(self.ledger, row.id)}; EERP signature verified; run {runs[0][0]}. "
            "TLS, secure authentication, file signed+compressed+encrypted (suite 04), signed EERP"
        )

    def step_inbound(self) -> str:
        """2: the partner sends us a secured file; a DAG processes it and releases the held EERP."""
        src = self.work / "partner-orders.edi"
        src.write_text("UNA:+.? 'UNB+UNOC:3+PARTNER+OURS+260101:1200+2'UNH+1+ORDERS:D:96A:UN'\n" * 400)
        sent = self.partner_api.submit("ours", "DEMOORDERS", src)
        if not (sent["security_level"] == 3 and sent["compression"] == 1):
            raise StepFailed(f"partner queued the file unsecured: {sent}")
        result = self.partner_api.call("ours")
        if not result.get("ok") or result.get("files_sent") != 1:
            raise StepFailed(f"partner's call to us: {result}")
        from oftp2_provider.ledger import Direction

        def ours_released() -> Any:
            rows = self.ledger.list_transfers(direction=Direction.INBOUND, partner=PARTNER)
            row = next((r for r in rows if r.key.dsn == "DEMOORDERS"), None)
            return row if row is not None and row.status.value == "released" else None

        row = wait_for(
            ours_released,
            STEP_TIMEOUT,
            "the inbound DAG to release the receipt",
            alive=self.procs.check_alive,
        )
        assert row is not None
        if _sha256(Path(row.local_path)) != _sha256(src):
            raise StepFailed("the received file differs from what the partner sent")
        call = self.ours_api.call("partner")
        if not call.get("ok"):
            raise StepFailed(f"our call to the partner (to send the EERP): {call}")
        theirs = self.partner_api.transfer(int(sent["id"]))["transfer"]
        if theirs["status"] != "delivered":
            raise StepFailed(f"partner's ledger shows {theirs['status']}, not delivered")
        runs = _dag_runs(self.home, "oftp2_inbound_event_driven")
        partner_side = _their_side(self.work / "partner" / "ledger.sqlite", int(sent["id"]))
        return f"ours #{row.id} {_life(self.ledger, row.id)} (DAG runs: {len(runs)}); partner {partner_side}"

    def step_webhook(self) -> str:
        """3: one webhook through the relay emulator starts one run of the webhook DAG."""
        import asyncio

        from oftp2_provider.relay import HybridConnectionAddress, HybridConnectionClient, SasTokenProvider

        address = HybridConnectionAddress(RELAY_NAMESPACE, "webhooks", f"ws://127.0.0.1:{self.ports.relay}")
        client = HybridConnectionClient(address, SasTokenProvider(RELAY_KEY_NAME, self.relay_key))

        def post() -> bool:
            response = asyncio.run(
                client.request(
                    "POST",
                    "demo",
                    body=b'{"event": "oftp2-demo"}',
                    headers={"Content-Type": "application/json"},
                )
            )
            return response.status == 202

        wait_for(post, 90, "the relay to accept the webhook (202)", alive=self.procs.check_alive)
        runs = wait_for(
            lambda: [
                r for r in _dag_runs(self.home, "relay_webhook_example") if r[1] in ("success", "failed")
            ],
            STEP_TIMEOUT,
            "the webhook DAG run",
            alive=self.procs.check_alive,
        )
        assert isinstance(runs, list)
        if len(runs) != 1 or runs[0][1] != "success":
            raise StepFailed(f"webhook DAG runs: {runs}")
        return f"202 accepted; run {runs[0][0]} success"

    def step_tunnel(self) -> str:
        """4: the remote partner calls us through the relay tunnel; a secured file and its EERP pass."""
        src = self.work / "partner-desadv.edi"
        src.write_text("UNA:+.? 'UNB+UNOC:3+PARTNER+OURS+260101:1200+3'UNH+1+DESADV:D:96A:UN'\n" * 200)
        sent = self.remote_api.submit("ours", "DEMORELAY", src)
        result = self.remote_api.call("ours")
        if not result.get("ok") or result.get("files_sent") != 1:
            raise StepFailed(f"remote partner's call through the tunnel: {result}")
        from oftp2_provider.ledger import Direction

        theirs = self.remote_api.transfer(int(sent["id"]))["transfer"]
        if theirs["status"] != "delivered":
            raise StepFailed(f"remote partner's ledger shows {theirs['status']}, not delivered")
        rows = self.ledger.list_transfers(direction=Direction.INBOUND, partner=REMOTE)
        row = next((r for r in rows if r.key.dsn == "DEMORELAY"), None)
        if row is None or row.status.value not in ("received", "released"):
            raise StepFailed(f"our ledger: DEMORELAY is {row.status.value if row else 'missing'}")
        if _sha256(Path(row.local_path)) != _sha256(src):
            raise StepFailed("the file received through the tunnel differs from what was sent")
        remote_side = _their_side(self.work / "remote" / "ledger.sqlite", int(sent["id"]))
        return (
            f"remote -L :{self.ports.tunnel} → emulator → our relay listener; ours #{row.id} "
            f"{_life(self.ledger, row.id)}; remote {remote_side}"
        )

    def stop(self) -> None:
        """Stop every process this demo started."""
        if self.ledger is not None:
            self.ledger.close()
        self.procs.stop()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_demo(work: Path) -> DemoResult:
    """Run every step in ``work`` (emptied first); never raises for a failed step."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    demo = Demo(work)
    result = DemoResult(work, [StepResult("certificates"), StepResult("services")])
    result.steps += [StepResult(name) for name in STEPS]
    actions = [
        demo.prepare,
        demo.start_services,
        demo.step_send,
        demo.step_inbound,
        demo.step_webhook,
        demo.step_tunnel,
    ]
    blocked = ""
    try:
        for step, action in zip(result.steps, actions, strict=True):
            if blocked:
                step.detail = blocked
                continue
            started = time.monotonic()
            try:
                step.detail = action()
                step.status = "OK"
            except (StepFailed, subprocess.SubprocessError, OSError, ValueError) as exc:
                step.status = "FAILED"
                step.detail = str(exc)
                if action in (demo.prepare, demo.start_services):
                    blocked = f"not run: {step.name} failed"
            step.seconds = time.monotonic() - started
    finally:
        demo.stop()
    return result


def _print(result: DemoResult, total: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="airflow-provider-oftp2 demo", show_lines=True)
    table.add_column("step")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("details (from the ledgers)")
    colours = {"OK": "green", "FAILED": "red", "SKIPPED": "yellow"}
    for step in result.steps:
        table.add_row(
            step.name, f"[{colours[step.status]}]{step.status}[/]", f"{step.seconds:.0f}", step.detail
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(
        f"total {total:.0f} s; logs in {result.workdir / 'logs'} and {result.workdir / 'airflow' / 'logs'}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the demo, print the table, return 0 only if every step succeeded."""
    parser = argparse.ArgumentParser(prog="python -m oftp2_provider.demo", description=__doc__)
    parser.add_argument(
        "--workdir", type=Path, default=repo_root() / ".demo", help="work directory (emptied)"
    )
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    try:
        result = run_demo(args.workdir.resolve())
    except KeyboardInterrupt:
        print("interrupted; every process the demo started was stopped")
        return 130
    _print(result, time.monotonic() - started)
    summary = [
        {"step": r.name, "status": r.status, "detail": r.detail, "seconds": r.seconds} for r in result.steps
    ]
    (result.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if result.ok else 1
