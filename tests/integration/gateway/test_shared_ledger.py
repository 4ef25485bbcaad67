"""Two gateways on one PostgreSQL ledger: each queued file is sent exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.ledger import Direction, Ledger, TransferStatus

from .conftest import A_ID, B_ID, gateway_config


async def test_two_gateways_one_postgres_ledger_no_double_send(
    tmp_path: Path, start_gateway: Callable[..., Any], postgres_uri: str
) -> None:
    receiver_cfg = gateway_config(
        tmp_path / "b",
        B_ID,
        password="BPW",
        partners={"a": {"odette_id": A_ID, "password": "APW"}},
    )
    receiver: Gateway = await start_gateway(receiver_cfg)
    senders: list[Gateway] = []
    for node in ("node-1", "node-2"):
        cfg = gateway_config(
            tmp_path / node,
            A_ID,
            password="APW",
            node_id=node,
            ledger={"uri": postgres_uri},
            partners={"b": {"odette_id": B_ID, "password": "BPW", "address": f"127.0.0.1:{receiver.port()}"}},
        )
        senders.append(await start_gateway(cfg))
    assert senders[0].ledger.ledger.dialect == "postgresql"

    queued = [
        await senders[i % 2].submit_file("b", dsn=f"SHARED{i:02d}", content=f"file {i}".encode() * 2000)
        for i in range(12)
    ]
    # both nodes call the same partner at the same time, twice
    results = await asyncio.gather(*(gw.call_partner("b") for gw in senders for _ in range(2)))
    assert all(r.ok for r in results), results
    assert sum(r.files_sent for r in results) == 12

    inbound = await receiver.ledger.list_transfers(direction=Direction.INBOUND, limit=100)
    assert sorted(t.key.dsn for t in inbound) == [f"SHARED{i:02d}" for i in range(12)]
    assert all(t.attempts == 1 and t.status is TransferStatus.RECEIVED for t in inbound)
    assert await receiver.ledger.events(kind="duplicate_inbound") == []
    for t in inbound:
        i = int(t.key.dsn[-2:])
        assert _read(t.local_path) == f"file {i}".encode() * 2000

    rows = [await senders[0].ledger.get(t.id) for t in queued]
    assert all(r.attempts == 1 for r in rows), [(r.key.dsn, r.attempts) for r in rows]
    assert {r.worker for r in rows} <= {"node-1", "node-2"}
    # the receipts came back in the same sessions
    assert {r.status for r in rows} == {TransferStatus.DELIVERED}


def _read(path: str | None) -> bytes:
    assert path is not None
    return Path(path).read_bytes()


async def test_ledger_from_an_airflow_connection_id(
    tmp_path: Path, start_gateway: Callable[..., Any], postgres_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFTP2_GATEWAY_LEDGER", postgres_uri)
    gw: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "a",
            A_ID,
            ledger={"conn_id": "oftp2_gateway_ledger"},
            partners={"b": {"odette_id": B_ID, "password": "BPW"}},
        )
    )
    assert gw.ledger.ledger.dialect == "postgresql"
    queued = await gw.submit_file("b", dsn="VIA.CONN", content=b"x")
    other = Ledger.from_uri(postgres_uri)  # the same database seen directly
    try:
        assert (await asyncio.to_thread(other.get, queued.id)).key.dsn == "VIA.CONN"
    finally:
        other.close()


async def test_two_nodes_send_each_released_receipt_once(
    tmp_path: Path, start_gateway: Callable[..., Any], postgres_uri: str
) -> None:
    nodes: list[Gateway] = []
    for node in ("rx-1", "rx-2"):
        nodes.append(
            await start_gateway(
                gateway_config(
                    tmp_path / node,
                    A_ID,
                    node_id=node,
                    ledger={"uri": postgres_uri},
                    partners={"b": {"odette_id": B_ID, "password": "BPW", "receipt_policy": "hold"}},
                )
            )
        )
    callers: list[Gateway] = []
    for i, node_gw in enumerate(nodes):
        callers.append(
            await start_gateway(
                gateway_config(
                    tmp_path / f"caller-{i}",
                    B_ID,
                    password="BPW",
                    partners={
                        "a": {
                            "odette_id": A_ID,
                            "password": "OWNPW",
                            "address": f"127.0.0.1:{node_gw.port()}",
                        }
                    },
                )
            )
        )
    for i in range(10):
        await callers[0].submit_file("a", dsn=f"HELD{i}", content=b"x" * (i + 1))
    assert (await callers[0].call_partner("a")).files_sent == 10
    for row in await nodes[0].ledger.list_transfers(direction=Direction.INBOUND):
        await nodes[0].ledger.release_receipt(row.id, True)

    # the partner calls both nodes at the same time: every EERP goes out exactly once
    results = await asyncio.gather(callers[0].call_partner("a"), callers[1].call_partner("a"))
    assert all(r.ok for r in results)
    assert sum(r.receipts_received for r in results) == 10, results
    rows = await nodes[0].ledger.list_transfers(direction=Direction.INBOUND)
    assert {r.receipt_state.value for r in rows} == {"sent"}
