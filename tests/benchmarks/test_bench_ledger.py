"""Ledger throughput on SQLite and PostgreSQL, as ratios against baselines measured in the same run.

1. Life cycle cost: ``OFTP2_BENCH_LEDGER_N`` (default 1000) outbound files go through
   enqueue → claim → sent → EERP.  Baseline: the same rows written with hand-written SQL on the
   database driver directly, with the same number of transactions (4 per file) and the same
   statements (row insert, 3 status updates, receipt insert, 4 event inserts), run interleaved in
   chunks of 50.  The ratio is the price of the ledger's layering (CAS checks and re-reads, row
   mapping, JSON events); both are dominated by commits (fsync).
2. Claim scaling: the same number of queued files claimed and marked sent by 1 process, then by 4
   processes; the ratio says how well concurrent gateways share one ledger.

Correctness is checked (every file delivered / claimed once); timings are only reported.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from oftp2_provider.ledger import Ledger, TransferStatus, VirtualFileKey
from oftp2_provider.ledger.store import utcnow

N = int(os.environ.get("OFTP2_BENCH_LEDGER_N", "1000"))
PARTNER = "O0013000000BENCH"
SHA = "cd" * 32
ctx = multiprocessing.get_context("fork")


def _key(i: int, prefix: str = "B") -> VirtualFileKey:
    return VirtualFileKey(f"{prefix}{i:07d}", "20261124", f"{i % 10_000_000_000:010d}", "O0013ME", PARTNER)


@pytest.fixture(params=["sqlite", "postgresql"])
def bench_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated ledger on a real disk (SQLite) or the embedded PostgreSQL."""
    if request.param == "sqlite":
        uri = "sqlite:///" + quote(str(tmp_path / "bench.db"))
    else:
        uri = request.getfixturevalue("postgres_uri")
    led = Ledger.from_uri(uri)
    led.migrate()
    led.close()
    yield uri


def _baseline(led: Ledger, n: int, first: int = 0) -> float:
    """Hand-written SQL, same statements and transaction count as the ledger's life cycle."""
    backend = led._backend
    cols = (
        "direction, partner, dsn, file_date, file_time, originator, destination, status, local_path, "
        "size, sha256, receipt_state, created_at, updated_at"
    )
    start = time.perf_counter()
    for i in range(first, first + n):
        k = _key(i, "R")
        now = utcnow()
        with backend.transaction() as cur:
            row = cur.row(
                f"INSERT INTO transfers ({cols}) VALUES ({', '.join('?' * 14)}) RETURNING id",
                ("out", PARTNER, k.dsn, k.date, k.time, k.originator, k.destination, "queued", "/o", 1, SHA, "none",
                 now, now),
            )  # fmt: skip
            assert row is not None
            tid = row["id"]
            cur.execute(
                "INSERT INTO events (transfer_id, kind, detail, at) VALUES (?, ?, ?, ?)",
                (tid, "enqueued", json.dumps({}), now),
            )
        for old, new in (("queued", "sending"), ("sending", "sent"), ("sent", "delivered")):
            with backend.transaction() as cur:
                assert (
                    cur.execute(
                        "UPDATE transfers SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
                        (new, utcnow(), tid, old),
                    )
                    == 1
                )
                if new == "delivered":
                    cur.execute(
                        "INSERT INTO receipts (transfer_id, kind, dsn, file_date, file_time, originator, "
                        "destination, raw, verification, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            tid,
                            "EERP",
                            k.dsn,
                            k.date,
                            k.time,
                            k.originator,
                            k.destination,
                            b"E",
                            "unsigned",
                            now,
                        ),
                    )
                cur.execute(
                    "INSERT INTO events (transfer_id, kind, detail, at) VALUES (?, ?, ?, ?)",
                    (tid, new, json.dumps({}), now),
                )
    return time.perf_counter() - start


def _ledger_cycle(led: Ledger, n: int, first: int = 0) -> float:
    start = time.perf_counter()
    for i in range(first, first + n):
        k = _key(i)
        led.enqueue_outbound(PARTNER, k, "/o", 1, SHA)
        t = led.claim_outbound(PARTNER, "bench")
        assert t is not None
        led.mark_sent(t.id)
        done = led.record_receipt(k, "EERP", b"E", "unsigned")
        assert done is not None and done.status is TransferStatus.DELIVERED
    return time.perf_counter() - start


def test_life_cycle_against_raw_sql(bench_uri: str) -> None:
    led = Ledger.from_uri(bench_uri)
    base = ours = 0.0
    chunk = 50
    for first in range(0, N, chunk):  # interleaved, so load changes on the host hit both alike
        base += _baseline(led, min(chunk, N - first), first)
        ours += _ledger_cycle(led, min(chunk, N - first), first)
    assert len(led.list(status="delivered", limit=2 * N + 1)) == 2 * N  # baseline rows + ledger rows
    print(
        f"\n[ledger {led.dialect}] {N} files enqueue→claim→sent→EERP: ledger {N / ours:.0f} files/s, "
        f"raw SQL baseline {N / base:.0f} files/s, ratio ledger/baseline time {ours / base:.2f}"
    )
    led.close()


def _claimer(uri: str, barrier: Barrier, results: Any) -> None:
    led = Ledger.from_uri(uri)
    got = 0
    barrier.wait(60)
    while (t := led.claim_outbound(PARTNER, str(os.getpid()))) is not None:
        led.mark_sent(t.id)
        got += 1
    results.put(got)
    led.close()


def _claim_run(uri: str, workers: int) -> float:
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(uri, barrier, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    barrier.wait(60)
    start = time.perf_counter()
    counts = [results.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join(30)
    assert sum(counts) == N
    return elapsed


def test_claim_scaling(bench_uri: str) -> None:
    led = Ledger.from_uri(bench_uri)
    for i in range(N):
        led.enqueue_outbound(PARTNER, _key(i, "S"), "/o", 1, SHA)
    one = _claim_run(bench_uri, 1)
    for i in range(N):
        led.enqueue_outbound(PARTNER, _key(i, "M"), "/o", 1, SHA)
    four = _claim_run(bench_uri, 4)
    sent = led.list(status="sent", limit=2 * N + 1)
    assert len(sent) == 2 * N and all(t.attempts == 1 for t in sent)
    print(
        f"\n[ledger {led.dialect}] claim+sent of {N} files: 1 process {N / one:.0f}/s, "
        f"4 processes {N / four:.0f}/s, speed-up {one / four:.2f}x (2 cores)"
    )
    led.close()
