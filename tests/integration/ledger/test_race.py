"""Several processes (gateways, Airflow workers) hammering one ledger file or database.

Real processes (``fork``), a real SQLite file in WAL mode and the embedded PostgreSQL server:
every queued transfer must be claimed by exactly one worker at a time, every counter update must
survive, and every inbound virtual file must be received exactly once.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from oftp2_provider.ledger import InvalidTransition, Ledger, TransferStatus, VirtualFileKey
from oftp2_provider.ledger.schema import LATEST_VERSION

PARTNER = "O0013000000RACE"
SHA = "ab" * 32
WORKERS = 4
TRANSFERS = 120

ctx = multiprocessing.get_context("fork")


@pytest.fixture(params=["sqlite", "postgresql"])
def race_uri(request: pytest.FixtureRequest, ledger_dir: Path) -> Iterator[str]:
    """An empty, migrated ledger location shared by the racing processes."""
    if request.param == "sqlite":
        uri = "sqlite:///" + quote(str(ledger_dir / "race.db"))
    else:
        uri = request.getfixturevalue("postgres_uri")
    led = Ledger.from_uri(uri)
    led.migrate()
    led.close()
    yield uri


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_uri(request: pytest.FixtureRequest, ledger_dir: Path) -> str:
    """A ledger location with no schema yet."""
    if request.param == "sqlite":
        return "sqlite:///" + quote(str(ledger_dir / "empty.db"))
    return str(request.getfixturevalue("postgres_uri"))


def _key(i: int) -> VirtualFileKey:
    return VirtualFileKey(f"RACE{i:05d}", "20261124", f"15300{i:05d}", "O0013000000ME", PARTNER)


def _claim_worker(uri: str, name: str, barrier: Barrier, results: Any) -> None:
    led = Ledger.from_uri(uri)
    rng = random.Random(name)
    claimed: list[tuple[int, int]] = []
    try:
        barrier.wait(60)
        while (t := led.claim_outbound(PARTNER, name)) is not None:
            claimed.append((t.id, t.attempts))
            time.sleep(0.002)  # "sending the file" happens outside any transaction
            if t.attempts < 3 and rng.random() < 0.3:
                # SFNA with "retry later": straight back to the queue, someone may take it again
                led.mark_failed(t.id, f"retry from {name}", retry=True)
            else:
                led.mark_sent(t.id, transmitted_size=1)
        results.put((name, claimed, None))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((name, claimed, repr(exc)))
    finally:
        led.close()


def _inbound_worker(uri: str, name: str, keys: list[int], barrier: Barrier, results: Any) -> None:
    led = Ledger.from_uri(uri)
    order = list(keys)
    random.Random(name).shuffle(order)
    completed: list[int] = []
    duplicates = 0
    try:
        barrier.wait(60)
        for i in order:
            t, dup = led.begin_inbound(PARTNER, _key(i), session_id=name)
            if dup:
                duplicates += 1
                continue
            try:
                led.complete_inbound(t.id, f"/in/{i}", 1, SHA, session_id=name)
                completed.append(i)
            except InvalidTransition:
                pass  # another session finished this file first
        results.put((name, completed, duplicates, None))
    except BaseException as exc:
        results.put((name, completed, duplicates, repr(exc)))
    finally:
        led.close()


def _run(target: Any, args_for: Any) -> list[tuple[Any, ...]]:
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(f"w{n}"), barrier, results)) for n in range(WORKERS)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    errors = [r[-1] for r in out if r[-1]]
    assert errors == []
    return out


def test_every_transfer_claimed_exactly_once_at_a_time(race_uri: str) -> None:
    led = Ledger.from_uri(race_uri)
    ids = [led.enqueue_outbound(PARTNER, _key(i), f"/out/{i}", 1, SHA).id for i in range(TRANSFERS)]

    out = _run(_claim_worker, lambda name: (race_uri, name))

    claims = Counter(tid for _, claimed, _ in out for tid, _ in claimed)
    assert set(claims) == set(ids)
    busy_workers = [name for name, claimed, _ in out if claimed]
    assert len(busy_workers) >= 2, "the race did not overlap; the test proved nothing"
    for t in led.list(partner=PARTNER, limit=TRANSFERS + 1):
        assert t.status is TransferStatus.SENT
        kinds = [e.kind for e in led.events(t.id)]
        # the audit trail alternates claim → (requeue → claim)* → sent: never two claims in a row
        assert kinds[0] == "enqueued" and kinds[-1] == "sent", kinds
        body = kinds[1:-1]
        assert body == ["claimed", "requeued"] * ((len(body) - 1) // 2) + ["claimed"], kinds
        # no lost update on the attempts counter
        assert t.attempts == claims[t.id] == kinds.count("claimed")
        # the attempts each worker saw when it claimed are 1, 2, 3 … in order
        seen = sorted(a for _, claimed, _ in out for tid, a in claimed if tid == t.id)
        assert seen == list(range(1, t.attempts + 1))
    led.close()


def test_each_inbound_file_received_once(race_uri: str) -> None:
    keys = list(range(40))
    out = _run(_inbound_worker, lambda name: (race_uri, name, keys))

    completions = Counter(i for _, completed, _, _ in out for i in completed)
    assert sorted(completions) == keys
    assert set(completions.values()) == {1}
    led = Ledger.from_uri(race_uri)
    rows = led.list(direction="in", limit=1000)
    assert len(rows) == len(keys)
    assert {t.status for t in rows} == {TransferStatus.RECEIVED}
    duplicates = sum(d for _, _, d, _ in out)
    assert duplicates == len(led.events(kind="duplicate_inbound", limit=10_000))
    led.close()


def test_threads_share_one_ledger(race_uri: str) -> None:
    """One Ledger object used from several threads (as AsyncLedger does): a connection per thread."""
    led = Ledger.from_uri(race_uri)
    ids = {led.enqueue_outbound(PARTNER, _key(i), f"/out/{i}", 1, SHA).id for i in range(60)}
    got: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            barrier.wait(30)
            while (t := led.claim_outbound(PARTNER, name)) is not None:
                led.mark_sent(t.id)
                with lock:
                    got.append(t.id)
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(WORKERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert sorted(got) == sorted(ids)
    assert {t.status for t in led.list(limit=100)} == {TransferStatus.SENT}
    led.close()


def _migrate_worker(uri: str, name: str, barrier: Barrier, results: Any) -> None:
    led = Ledger.from_uri(uri)
    try:
        barrier.wait(60)
        results.put((name, led.migrate(), None))
    except BaseException as exc:
        results.put((name, None, repr(exc)))
    finally:
        led.close()


def test_concurrent_first_start_migrates_once(empty_uri: str) -> None:
    """Several gateways starting at once on an empty database: one migrates, all end up current."""
    out = _run(_migrate_worker, lambda name: (empty_uri, name))
    assert [version for _, version, _ in out] == [LATEST_VERSION] * WORKERS
    led = Ledger.from_uri(empty_uri)
    assert led.schema_version() == LATEST_VERSION
    assert len(led.events(kind="x")) == 0  # the schema is usable
    led.close()


def _receipt_worker(uri: str, name: str, barrier: Barrier, results: Any) -> None:
    led = Ledger.from_uri(uri)
    sent: list[int] = []
    try:
        barrier.wait(60)
        while claimed := led.claim_receipts(PARTNER, name, limit=5):
            for t in claimed:
                time.sleep(0.001)  # "sending the EERP"
                led.mark_receipt_sent(t.id)
                sent.append(t.id)
        results.put((name, sent, None))
    except BaseException as exc:
        results.put((name, sent, repr(exc)))
    finally:
        led.close()


def test_each_receipt_sent_by_one_gateway(race_uri: str) -> None:
    led = Ledger.from_uri(race_uri)
    ids = []
    for i in range(60):
        t, _ = led.begin_inbound(PARTNER, _key(i))
        ids.append(led.complete_inbound(t.id, f"/in/{i}", 1, SHA).id)
    out = _run(_receipt_worker, lambda name: (race_uri, name))
    sent = Counter(tid for _, got, _ in out for tid in got)
    assert sorted(sent) == sorted(ids)
    assert set(sent.values()) == {1}
    assert led.receipts_to_send(PARTNER) == []
    led.close()
