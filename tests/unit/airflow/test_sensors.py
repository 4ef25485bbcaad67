"""Sensors on a real ledger: EERP wait (poke and deferral) and classic inbound-file claiming."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from oftp2_provider.ledger import Ledger, Transfer
from oftp2_provider.sensors.oftp2 import OFTP2EERPSensor, OFTP2InboundFileSensor, evaluate_receipts
from oftp2_provider.triggers.oftp2 import OFTP2EERPTrigger

from .conftest import PARTNER


def _eerp_sensor(ledger_path: Path, ids: Any, **kw: Any) -> OFTP2EERPSensor:
    return OFTP2EERPSensor(
        task_id="wait", transfer_ids=ids, ledger_path=str(ledger_path), oftp2_conn_id=None, **kw
    )


def test_eerp_sensor_pokes_until_delivered(
    ledger: Ledger, ledger_path: Path, sent_transfer: Callable[..., Transfer]
) -> None:
    t = sent_transfer("A")
    sensor = _eerp_sensor(ledger_path, {"transfer_ids": [t.id]}, deferrable=False)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    ledger.record_receipt(t.key, "EERP", b"E", "VERIFIED")
    done = sensor.poke({})  # type: ignore[arg-type]
    assert not isinstance(done, bool) and done.is_done
    assert done.xcom_value["delivered"] == [t.id]


def test_eerp_sensor_nerp_fails_fast(
    ledger: Ledger, ledger_path: Path, sent_transfer: Callable[..., Transfer]
) -> None:
    t = sent_transfer("A")
    ledger.record_receipt(t.key, "NERP", b"N", "UNSIGNED", 31, "signature not valid")
    with pytest.raises(AirflowFailException, match="NERP 31 signature not valid"):
        _eerp_sensor(ledger_path, [t.id], deferrable=False).poke({})  # type: ignore[arg-type]
    done = _eerp_sensor(ledger_path, [t.id], deferrable=False, fail_on_nerp=False).poke({})  # type: ignore[arg-type]
    assert not isinstance(done, bool) and done.xcom_value["delivered"] == []


def test_eerp_sensor_defers_with_a_deadline(
    ledger_path: Path, sent_transfer: Callable[..., Transfer]
) -> None:
    t = sent_transfer("A")
    sensor = _eerp_sensor(ledger_path, str(t.id), timeout=60, poke_interval=7)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})  # type: ignore[arg-type]
    trigger = info.value.trigger
    assert isinstance(trigger, OFTP2EERPTrigger)
    assert trigger.transfer_ids == [t.id] and trigger.poll_interval == 7 and trigger.deadline is not None


def test_evaluate_receipts_outcomes() -> None:
    ok = {"transfer_id": 1, "dsn": "A", "status": "delivered", "receipt_verification": "VERIFIED"}
    forged = {**ok, "transfer_id": 2, "receipt_verification": "BAD_SIGNATURE"}
    assert evaluate_receipts({"status": "done", "transfers": [ok]}, fail_on_nerp=True)["delivered"] == [1]
    with pytest.raises(AirflowFailException, match="2: BAD_SIGNATURE"):
        evaluate_receipts({"status": "done", "transfers": [ok, forged]}, fail_on_nerp=True)
    with pytest.raises(AirflowException, match="deadline"):
        evaluate_receipts({"status": "timeout", "pending": [1]}, fail_on_nerp=True)
    with pytest.raises(AirflowFailException, match="no outbound transfer"):
        evaluate_receipts({"status": "error", "message": "no outbound transfer with id 9"}, fail_on_nerp=True)


def test_inbound_sensor_claims_files_once(
    ledger: Ledger, ledger_path: Path, received_transfer: Callable[..., Transfer]
) -> None:
    sensor = OFTP2InboundFileSensor(
        task_id="files", partner=PARTNER, dsn_pattern="INV*", ledger_path=str(ledger_path), oftp2_conn_id=None
    )
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    inv = received_transfer("INV9")
    received_transfer("ORD9")
    got = sensor.poke({})  # type: ignore[arg-type]
    assert not isinstance(got, bool) and [f["transfer_id"] for f in got.xcom_value] == [inv.id]
    assert sensor.poke({}) is False  # type: ignore[arg-type]  # claimed: not offered again
    assert [t.key.dsn for t in ledger.undispatched_inbound(10)] == ["ORD9"]
