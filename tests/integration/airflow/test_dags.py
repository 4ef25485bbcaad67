"""Example DAGs: they import cleanly, and run end to end with dag.test() against a loopback partner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.hooks.oftp2 import OFTP2Hook
from oftp2_provider.ledger import Direction, TransferStatus
from oftp2_provider.protocol.api import OutboundFile
from oftp2_provider.protocol.commands import EERP

from .conftest import OURS, PARTNER, LoopbackPartner

DAGS = Path(__file__).resolve().parents[3] / "dags"

pytestmark = pytest.mark.airflow


def _dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def _dag(dag_id: str) -> Any:
    """The example DAG, without retries (a failure must show at once, not after a retry delay)."""
    dag = _dagbag().get_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0
    return dag


def test_example_dags_import_cleanly(airflow_home: Path) -> None:
    bag = _dagbag()
    assert bag.import_errors == {}
    assert {"oftp2_send_signed_receipt", "oftp2_inbound_event_driven", "oftp2_scheduled_poll"} <= set(
        bag.dag_ids
    )


@pytest.fixture
def dag_env(monkeypatch: pytest.MonkeyPatch, oftp2_conn: Callable[..., str]) -> Iterator[str]:
    conn_id = oftp2_conn("oftp2_dagtest")
    monkeypatch.setenv("OFTP2_CONN_ID", conn_id)
    monkeypatch.setenv("OFTP2_EERP_POLL_SECONDS", "0.5")
    yield conn_id


def _state(dagrun: Any, task_id: str) -> str:
    return str(dagrun.get_task_instance(task_id).state)


def test_send_dag_defers_until_the_eerp_arrives(
    airflow_home: Path, partner: LoopbackPartner, dag_env: str, tmp_path: Path
) -> None:
    """The EERP does not come in the sending session: the task defers; a later poll brings it."""
    partner.behaviour.auto_eerp = False
    out = tmp_path / "out"
    out.mkdir()
    (out / "invoice1.edi").write_text("UNA:+.? 'UNB+UNOC:3+A+B'\n")
    (out / "invoice2.edi").write_text("UNA:+.? 'UNB+UNOC:3+A+C'\n")
    hook = OFTP2Hook(dag_env)
    ledger = hook.get_ledger()
    stop = threading.Event()

    def partner_answers_later() -> None:
        # Wait until both files are recorded as sent, then let the partner hand out the EERPs
        # and poll (as the scheduled poll DAG would) so they land in the ledger.
        while not stop.is_set():
            sent = ledger.list_transfers(direction=Direction.OUTBOUND, status=TransferStatus.SENT)
            if len(sent) == 2:
                time.sleep(1.0)  # let the task defer first
                for t in sent:
                    partner.behaviour.deliver.append(
                        EERP(
                            t.key.dsn,
                            t.key.date,
                            t.key.time,
                            destination=t.key.originator,
                            originator=PARTNER,
                        )
                    )
                hook.poll()
                return
            time.sleep(0.1)

    helper = threading.Thread(target=partner_answers_later, daemon=True)
    helper.start()
    try:
        dag = _dag("oftp2_send_signed_receipt")
        dagrun = dag.test(run_conf={"source": str(out / "*.edi"), "dsn": "{stem}"})
    finally:
        stop.set()
        helper.join(30)
    assert _state(dagrun, "send") == "success"
    assert _state(dagrun, "report") == "success"
    assert sorted(r.sfid.dsn for r in partner.received) == ["invoice1", "invoice2"]
    assert all(r.sfid.signed_eerp for r in partner.received), "signed EERP must be requested (SFIDSIGN=Y)"
    events = {
        e.kind for t in ledger.list_transfers(direction=Direction.OUTBOUND) for e in ledger.events(t.id)
    }
    assert {"sent", "delivered"} <= events
    delivered = ledger.list_transfers(direction=Direction.OUTBOUND, status=TransferStatus.DELIVERED)
    assert len(delivered) == 2


def test_send_dag_fails_fast_on_refusal(
    airflow_home: Path, partner: LoopbackPartner, dag_env: str, tmp_path: Path
) -> None:
    partner.behaviour.refuse["BAD"] = (1, False)
    src = tmp_path / "bad.txt"
    src.write_text("x")
    dag = _dag("oftp2_send_signed_receipt")
    dagrun = dag.test(run_conf={"source": str(src), "dsn": "BAD"})
    assert _state(dagrun, "send") == "failed"  # AirflowFailException: no retries used
    ti = dagrun.get_task_instance("send")
    assert ti.try_number == 1


def test_poll_dag_receives_a_file(
    airflow_home: Path, partner: LoopbackPartner, dag_env: str, tmp_path: Path
) -> None:
    src = tmp_path / "desadv.txt"
    src.write_bytes(b"DESADV\n")
    partner.behaviour.deliver.append(
        OutboundFile(dsn="DESADV1", originator=PARTNER, destination=OURS, path=src)
    )
    dag = _dag("oftp2_scheduled_poll")
    dagrun = dag.test()
    assert _state(dagrun, "poll") == "success"
    ledger = OFTP2Hook(dag_env).get_ledger()
    (row,) = ledger.undispatched_inbound(10)
    assert row.key.dsn == "DESADV1" and row.status is TransferStatus.RECEIVED


def test_send_operator_converts_text_and_rejects_unencodable(
    airflow_home: Path, partner: LoopbackPartner, dag_env: str, tmp_path: Path
) -> None:
    """UTF-8 → ISO-8859-1 on the way out; a character that does not fit fails the task before sending."""
    good = tmp_path / "good.txt"
    good.write_text("Grüße aus Köln\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_text("Preis: 5 €\n", encoding="utf-8")
    dag_dir = tmp_path / "dags"
    dag_dir.mkdir()
    (dag_dir / "encoding_test.py").write_text(
        f"""
from datetime import datetime
from airflow.sdk import DAG
from oftp2_provider.operators.oftp2 import OFTP2SendOperator

with DAG("oftp2_encoding_test", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    for name, src in (("good", {str(good)!r}), ("bad", {str(bad)!r})):
        OFTP2SendOperator(
            task_id=f"send_{{name}}", oftp2_conn_id={dag_env!r}, source=src, dsn=name.upper(),
            record_format="T", source_encoding="utf-8", target_encoding="iso-8859-1",
            wait_for_eerp=True, deferrable=False, poll_interval=0.2, retries=0,
        )
""",
        encoding="utf-8",
    )
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()

    bag = BundleDagBag(dag_folder=str(dag_dir), bundle_path=dag_dir, bundle_name="dags-folder")
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() runs serialized DAGs only
    dag = bag.get_dag("oftp2_encoding_test")
    dagrun = dag.test()
    assert _state(dagrun, "send_good") == "success"
    assert _state(dagrun, "send_bad") == "failed"
    (got,) = partner.received
    assert got.sfid.dsn == "GOOD" and got.path.read_bytes() == "Grüße aus Köln\n".encode("iso-8859-1")
    ledger = OFTP2Hook(dag_env).get_ledger()
    assert [t.key.dsn for t in ledger.list_transfers(direction=Direction.OUTBOUND)] == ["GOOD"]
