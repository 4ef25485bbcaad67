"""Ledger behaviour on SQLite: idempotency, duplicates, receipts, dispatch, audit trail, AsyncLedger."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from oftp2_provider.ledger import (
    AsyncLedger,
    Direction,
    InvalidTransition,
    KeyConflict,
    Ledger,
    ReceiptKind,
    ReceiptState,
    TransferNotFound,
    TransferStatus,
    VirtualFileKey,
)
from oftp2_provider.protocol.commands import EERP, NERP, SFID

from .conftest import digest

KeyFactory = Callable[..., VirtualFileKey]
SHA = digest(b"hello")
P1 = "O0013000000P1"
P2 = "O0013000000P2"


def _sent(ledger: Ledger, key: VirtualFileKey, partner: str = P1) -> int:
    t = ledger.enqueue_outbound(partner, key, "/out/f", 5, SHA)
    claimed = ledger.claim_outbound(partner, "w")
    assert claimed is not None and claimed.id == t.id
    return ledger.mark_sent(t.id, transmitted_size=99, transmitted_digest="ab" * 32).id


# ---------------------------------------------------------------- keys


def test_key_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"VirtualFileKey\.dsn must not be empty"):
        VirtualFileKey("", "20260101", "1200000001", "A", "B")
    with pytest.raises(ValueError, match=r"VirtualFileKey\.originator=' A' has leading"):
        VirtualFileKey("D", "20260101", "1200000001", " A", "B")
    with pytest.raises(TypeError, match=r"VirtualFileKey\.time must be a string"):
        VirtualFileKey("D", "20260101", 1200000001, "A", "B")  # type: ignore[arg-type]


def test_key_from_commands_mirrors_receipt_roles() -> None:
    sfid = SFID(dsn="INV42", date="20261124", time="1530000001", destination="O0013YOU", originator="O0013ME")
    key = VirtualFileKey.from_sfid(sfid)
    assert (key.originator, key.destination) == ("O0013ME", "O0013YOU")
    eerp = EERP(dsn="INV42", date="20261124", time="1530000001", destination="O0013ME", originator="O0013YOU")
    assert VirtualFileKey.from_receipt(eerp) == key
    nerp = NERP(
        dsn="INV42",
        date="20261124",
        time="1530000001",
        destination="O0013ME",
        originator="O0013YOU",
        creator="O0013YOU",
        reason=31,
    )
    assert VirtualFileKey.from_receipt(nerp) == key


# ---------------------------------------------------------------- outbound


def test_enqueue_is_idempotent_on_key(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    first = ledger.enqueue_outbound(
        P1, key, "/out/a", 5, SHA, security_level=3, cipher_suite=2, signed_eerp=True
    )
    again = ledger.enqueue_outbound(P1, key, "/out/a", 5, SHA)
    assert again == first
    assert (first.security_level, first.cipher_suite, first.signed_eerp, first.status) == (
        3,
        2,
        True,
        TransferStatus.QUEUED,
    )
    assert len(ledger.list(direction="out")) == 1
    assert [e.kind for e in ledger.events(first.id)] == ["enqueued"]


@pytest.mark.parametrize(
    ("change", "field"),
    [({"size": 6}, "size"), ({"sha256": digest(b"other")}, "sha256"), ({"partner": P2}, "partner")],
)
def test_enqueue_same_key_other_content_conflicts(
    ledger: Ledger, make_key: KeyFactory, change: dict[str, object], field: str
) -> None:
    key = make_key()
    ledger.enqueue_outbound(P1, key, "/out/a", 5, SHA)
    args: dict[str, object] = {
        "partner": P1,
        "key": key,
        "path": "/out/a",
        "size": 5,
        "sha256": SHA,
        **change,
    }
    with pytest.raises(KeyConflict, match=f"with {field}="):
        ledger.enqueue_outbound(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": -1}, "size must be a non-negative integer"),
        ({"sha256": "ABC"}, "sha256 must be a lower-case hex SHA-256"),
        ({"partner": ""}, "partner must not be empty"),
        ({"record_format": "X"}, "record_format must be one of"),
    ],
)
def test_enqueue_rejects_bad_values(
    ledger: Ledger, make_key: KeyFactory, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"partner": P1, "key": make_key(), "path": "/out/a", "size": 5, "sha256": SHA}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ledger.enqueue_outbound(**args)  # type: ignore[arg-type]
    assert ledger.list() == []


def test_claim_is_fifo_per_partner(ledger: Ledger, make_key: KeyFactory) -> None:
    ids_p1 = [ledger.enqueue_outbound(P1, make_key(), f"/out/{i}", 5, SHA).id for i in range(3)]
    id_p2 = ledger.enqueue_outbound(P2, make_key(), "/out/x", 5, SHA).id
    got = []
    while (t := ledger.claim_outbound(P1, "w")) is not None:
        got.append(t.id)
    assert got == ids_p1
    other = ledger.claim_outbound(P2, "w")
    assert other is not None and other.id == id_p2
    assert ledger.claim_outbound(P2, "w") is None


def test_requeue_stale_sending(ledger: Ledger, make_key: KeyFactory) -> None:
    t = ledger.enqueue_outbound(P1, make_key(), "/out/a", 5, SHA)
    assert ledger.claim_outbound(P1, "crashed-gw") is not None
    assert ledger.requeue_stale(timedelta(hours=1)) == []
    time.sleep(0.01)
    requeued = ledger.requeue_stale(timedelta(milliseconds=1), partner=P1)
    assert [r.id for r in requeued] == [t.id]
    assert (requeued[0].status, requeued[0].worker) == (TransferStatus.QUEUED, None)
    again = ledger.claim_outbound(P1, "gw-2")
    assert again is not None and again.attempts == 2


# ---------------------------------------------------------------- receipts for outbound files


def test_eerp_delivers_and_is_stored_verbatim(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    tid = _sent(ledger, key)
    raw = b"E" + bytes(range(256))
    t = ledger.record_receipt(key, "EERP", raw, "signature valid", session_id="sess-9")
    assert t is not None and t.status is TransferStatus.DELIVERED and t.is_final
    (receipt,) = ledger.receipts(tid)
    assert (receipt.kind, receipt.raw, receipt.verification, receipt.key) == (
        ReceiptKind.EERP,
        raw,
        "signature valid",
        key,
    )
    assert [e.kind for e in ledger.events(session_id="sess-9")] == ["delivered"]


def test_repeated_eerp_changes_nothing(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    tid = _sent(ledger, key)
    first = ledger.record_receipt(key, ReceiptKind.EERP, b"E1", "unsigned")
    second = ledger.record_receipt(key, ReceiptKind.EERP, b"E1", "unsigned")
    assert first == second
    assert len(ledger.receipts(tid)) == 2
    assert [e.kind for e in ledger.events(tid)][-2:] == ["delivered", "receipt_ignored"]


@pytest.mark.parametrize("kind", ["EERP", "NERP"])
def test_receipt_settles_a_transfer_queued_for_a_resend(
    ledger: Ledger, make_key: KeyFactory, kind: str
) -> None:
    """The session broke after the partner's EFPA (requeued); the partner then sends its receipt."""
    key = make_key()
    t = ledger.enqueue_outbound(P1, key, "/out/f", 5, SHA)
    assert ledger.claim_outbound(P1, "w") is not None
    queued = ledger.mark_failed(t.id, "session ended", retry=True)
    assert queued.status is TransferStatus.QUEUED
    got = ledger.record_receipt(key, kind, b"R", "unsigned", 33 if kind == "NERP" else None)
    want = TransferStatus.DELIVERED if kind == "EERP" else TransferStatus.REFUSED
    assert got is not None and got.status is want and got.is_final
    assert ledger.claim_outbound(P1, "w") is None  # not sent again
    assert [e.kind for e in ledger.events(t.id)][-1] == ("delivered" if kind == "EERP" else "refused")


def test_receipt_for_a_refused_transfer_is_ignored(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    t = ledger.enqueue_outbound(P1, key, "/out/f", 5, SHA)
    assert ledger.claim_outbound(P1, "w") is not None
    ledger.mark_refused(t.id, 14, "direction refused")
    got = ledger.record_receipt(key, "EERP", b"E", "unsigned")
    assert got is not None and got.status is TransferStatus.REFUSED
    assert [e.kind for e in ledger.events(t.id)][-1] == "receipt_ignored"


def test_nerp_refuses_with_code(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    _sent(ledger, key)
    t = ledger.record_receipt(key, "NERP", b"N...", "unsigned", 33, "decryption failed")
    assert t is not None
    assert (t.status, t.nerp_code, t.nerp_text) == (TransferStatus.REFUSED, 33, "decryption failed")
    with pytest.raises(ValueError, match="NERP needs its reason code"):
        ledger.record_receipt(key, "NERP", b"N", "unsigned")


def test_rejected_receipt_only_audited(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    tid = _sent(ledger, key)
    t = ledger.record_receipt(key, "EERP", b"E", "signature invalid: wrong signer", accepted=False)
    assert t is not None and t.status is TransferStatus.SENT
    assert ledger.events(tid)[-1].kind == "receipt_rejected"
    assert len(ledger.receipts(tid)) == 1


def test_receipt_for_unknown_file_is_kept(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    assert ledger.record_receipt(key, "EERP", b"E?", "unsigned") is None
    (event,) = ledger.events(kind="receipt_unknown")
    assert event.transfer_id is None and event.detail["key"] == str(key)
    with pytest.raises(TypeError, match="raw must be the receipt's command bytes"):
        ledger.record_receipt(key, "EERP", "E", "unsigned")  # type: ignore[arg-type]


# ---------------------------------------------------------------- inbound


def test_duplicate_inbound_never_creates_a_second_row(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    t, dup = ledger.begin_inbound(P1, key, announced_size=2048, signed_eerp=True)
    assert not dup and t.status is TransferStatus.RECEIVING and t.attempts == 1
    ledger.complete_inbound(t.id, "/in/a", 5, SHA)
    again, dup = ledger.begin_inbound(P1, key)
    assert dup and again.id == t.id and again.status is TransferStatus.RECEIVED
    assert len(ledger.list(direction=Direction.INBOUND)) == 1
    assert ledger.events(t.id)[-1].kind == "duplicate_inbound"


def test_interrupted_inbound_resumes_same_row(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    t, _ = ledger.begin_inbound(P1, key, session_id="s1")
    ledger.set_restart_offset(t.id, 30)
    ledger.fail_inbound(t.id, "connection lost", restart_offset=30)
    resumed, dup = ledger.begin_inbound(P1, key, session_id="s2")
    assert not dup
    assert (resumed.id, resumed.status, resumed.attempts, resumed.restart_offset, resumed.session_id) == (
        t.id,
        TransferStatus.RECEIVING,
        2,
        30,
        "s2",
    )
    # a session that died without fail_inbound leaves "receiving": the next SFID resumes it too
    again, dup = ledger.begin_inbound(P1, key, session_id="s3")
    assert not dup and again.attempts == 3


def test_same_key_in_both_directions_is_allowed(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    out = ledger.enqueue_outbound(P1, key, "/out/a", 5, SHA)
    inbound, dup = ledger.begin_inbound(P1, key)
    assert not dup and inbound.id != out.id
    assert ledger.find(key).id == out.id  # type: ignore[union-attr]
    assert ledger.find(key, "in").id == inbound.id  # type: ignore[union-attr]
    assert ledger.find(VirtualFileKey("NOPE", "20260101", "1200000001", "A", "B")) is None


def test_receipts_to_send_immediate_and_held(ledger: Ledger, make_key: KeyFactory) -> None:
    immediate, _ = ledger.begin_inbound(P1, make_key())
    held, _ = ledger.begin_inbound(P1, make_key())
    other, _ = ledger.begin_inbound(P2, make_key())
    assert ledger.receipts_to_send(P1) == []
    ledger.complete_inbound(immediate.id, "/in/1", 5, SHA)
    ledger.complete_inbound(held.id, "/in/2", 5, SHA, hold_receipt=True)
    ledger.complete_inbound(other.id, "/in/3", 5, SHA)
    assert [t.id for t in ledger.receipts_to_send(P1)] == [immediate.id]
    ledger.release_receipt(held.id, nerp_code=34, text="rejected by ERP")
    due = ledger.receipts_to_send(P1)
    assert [(t.id, t.nerp_code) for t in due] == [(immediate.id, None), (held.id, 34)]
    ledger.mark_receipt_sent(immediate.id)
    assert [t.id for t in ledger.receipts_to_send(P1)] == [held.id]
    ledger.resend_receipt(immediate.id)
    assert [t.id for t in ledger.receipts_to_send(P1)] == [immediate.id, held.id]


def test_dispatch_is_acknowledged_once(ledger: Ledger, make_key: KeyFactory) -> None:
    receiving, _ = ledger.begin_inbound(P1, make_key())
    done = []
    for _ in range(3):
        t, _ = ledger.begin_inbound(P2, make_key())
        done.append(ledger.complete_inbound(t.id, f"/in/{t.id}", 5, SHA).id)
    out = ledger.enqueue_outbound(P1, make_key(), "/out/a", 5, SHA)
    assert [t.id for t in ledger.undispatched_inbound()] == done
    assert [t.id for t in ledger.undispatched_inbound(limit=2)] == done[:2]
    assert ledger.undispatched_inbound(partner=P1) == []
    assert ledger.mark_dispatched([done[0], done[1], out.id, receiving.id]) == 3
    assert ledger.mark_dispatched([done[0]]) == 0
    assert ledger.mark_dispatched([]) == 0
    assert [t.id for t in ledger.undispatched_inbound()] == [done[2]]
    first = ledger.get(done[0])
    assert first.dispatched and first.dispatched_at is not None
    assert [e.kind for e in ledger.events(done[0])][-1] == "dispatched"
    # an outbound row is never marked dispatched
    assert not ledger.get(out.id).dispatched


# ---------------------------------------------------------------- audit and queries


def test_every_change_is_an_event_with_utc_time(ledger: Ledger, make_key: KeyFactory) -> None:
    key = make_key()
    tid = _sent(ledger, key)
    ledger.record_receipt(key, "EERP", b"E", "unsigned")
    events = ledger.events(tid)
    assert [e.kind for e in events] == ["enqueued", "claimed", "sent", "delivered"]
    for e in events:
        at = datetime.fromisoformat(e.at)
        assert at.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - at) < timedelta(minutes=5)
    transfer = ledger.get(tid)
    for stamp in (transfer.created_at, transfer.updated_at):
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)


def test_add_event(ledger: Ledger, make_key: KeyFactory) -> None:
    t = ledger.enqueue_outbound(P1, make_key(), "/out/a", 5, SHA)
    e = ledger.add_event(
        "operator_note", transfer_id=t.id, session_id="s", detail={"who": "ops", "n": [1, 2]}
    )
    assert (e.kind, e.transfer_id, e.session_id, e.detail) == (
        "operator_note",
        t.id,
        "s",
        {"who": "ops", "n": [1, 2]},
    )
    free = ledger.add_event("session_start", session_id="s2")
    assert free.transfer_id is None and free.detail == {}
    assert ledger.events(session_id="s") == [e]
    with pytest.raises(TransferNotFound):
        ledger.add_event("x", transfer_id=999)
    with pytest.raises(ValueError, match="event kind"):
        ledger.add_event("")


def test_list_filters(ledger: Ledger, make_key: KeyFactory) -> None:
    a = ledger.enqueue_outbound(P1, make_key(), "/out/a", 5, SHA)
    b = ledger.enqueue_outbound(P2, make_key(), "/out/b", 5, SHA)
    c, _ = ledger.begin_inbound(P1, make_key())
    assert [t.id for t in ledger.list()] == [c.id, b.id, a.id]
    assert [t.id for t in ledger.list(partner=P1)] == [c.id, a.id]
    assert [t.id for t in ledger.list(status="receiving")] == [c.id]
    assert [t.id for t in ledger.list(status=[TransferStatus.QUEUED, "receiving"], limit=2)] == [c.id, b.id]
    assert [t.id for t in ledger.list(direction="out", offset=1)] == [a.id]
    assert ledger.list(status=[]) == []
    with pytest.raises(ValueError):
        ledger.list(status="lost")
    with pytest.raises(TransferNotFound):
        ledger.get(12345)


# ---------------------------------------------------------------- async twin


async def test_async_ledger_round_trip(ledger: Ledger, make_key: KeyFactory) -> None:
    aled = AsyncLedger(ledger)
    key = make_key()
    t = await aled.enqueue_outbound(P1, key, "/out/a", 5, SHA, signed_eerp=True)
    claimed = await aled.claim_outbound(P1, "async-w")
    assert claimed is not None and claimed.id == t.id
    await aled.mark_sent(t.id)
    delivered = await aled.record_receipt(key, "EERP", b"E", "unsigned")
    assert delivered is not None and delivered.status is TransferStatus.DELIVERED
    inbound, dup = await aled.begin_inbound(P2, make_key())
    assert not dup
    await aled.complete_inbound(inbound.id, "/in/a", 5, SHA, hold_receipt=True)
    released = await aled.release_receipt(inbound.id)
    assert released.receipt_state is ReceiptState.DUE
    assert [x.id for x in await aled.receipts_to_send(P2)] == [inbound.id]
    assert await aled.mark_dispatched(x.id for x in await aled.undispatched_inbound()) == 1
    assert len(await aled.list(partner=P1)) == 1
    assert [e.kind for e in await aled.events(t.id)] == ["enqueued", "claimed", "sent", "delivered"]
    with pytest.raises(InvalidTransition):
        await aled.mark_sent(t.id)


async def test_async_ledger_does_not_block_the_loop(tmp_path: Path, make_key: KeyFactory) -> None:
    """While another connection holds the SQLite write lock, an AsyncLedger write waits in its
    thread and the event loop keeps running other tasks."""
    path = tmp_path / "locked.db"
    led = Ledger.from_sqlite(path)
    led.migrate()
    aled = AsyncLedger(led)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    write = asyncio.create_task(aled.enqueue_outbound(P1, make_key(), "/out/a", 5, SHA))
    await asyncio.sleep(0.5)
    assert not write.done()  # really waiting for the lock
    assert ticks >= 20  # the loop was free meanwhile
    blocker.execute("COMMIT")
    blocker.close()
    t = await asyncio.wait_for(write, 10)
    tick_task.cancel()
    assert t.status is TransferStatus.QUEUED
    await aled.close()


# ---------------------------------------------------------------- retention


def test_purge_finished_only(ledger: Ledger, make_key: KeyFactory) -> None:
    delivered_key, refused_key, sent_key = make_key(), make_key(), make_key()
    delivered = _sent(ledger, delivered_key)
    ledger.record_receipt(delivered_key, "EERP", b"E", "unsigned")
    refused = _sent(ledger, refused_key)
    ledger.record_receipt(refused_key, "NERP", b"N", "unsigned", 23)
    still_sent = _sent(ledger, sent_key)

    def inbound(dispatch: bool, receipt_sent: bool) -> int:
        t, _ = ledger.begin_inbound(P1, make_key())
        ledger.complete_inbound(t.id, "/in/x", 5, SHA)
        if receipt_sent:
            ledger.mark_receipt_sent(t.id)
        if dispatch:
            ledger.mark_dispatched([t.id])
        return t.id

    done_in = inbound(True, True)
    undispatched = inbound(False, True)
    receipt_due = inbound(True, False)
    receiving, _ = ledger.begin_inbound(P1, make_key())

    assert ledger.purge_finished(timedelta(hours=1)) == 0
    time.sleep(0.01)
    assert ledger.purge_finished(timedelta(0)) == 3
    left = {t.id for t in ledger.list(limit=100)}
    assert left == {still_sent, undispatched, receipt_due, receiving.id}
    for gone in (delivered, refused, done_in):
        assert ledger.events(gone) == [] and ledger.receipts(gone) == []
        with pytest.raises(TransferNotFound):
            ledger.get(gone)
    (purged,) = ledger.events(kind="purged")
    assert purged.detail["count"] == 3
    assert ledger.purge_finished(timedelta(0)) == 0
    with pytest.raises(ValueError, match="older_than must not be negative"):
        ledger.purge_finished(timedelta(seconds=-1))


# ---------------------------------------------------------------- receipt claims (several gateways)


def test_claim_receipts_one_sender_at_a_time(ledger: Ledger, make_key: KeyFactory) -> None:
    ids = []
    for hold in (False, False, True):
        t, _ = ledger.begin_inbound(P1, make_key())
        ledger.complete_inbound(t.id, "/in/x", 5, SHA, hold_receipt=hold)
        ids.append(t.id)
    first = ledger.claim_receipts(P1, "gw-1", session_id="s1")
    assert [t.id for t in first] == ids[:2] and {t.worker for t in first} == {"gw-1"}
    assert ledger.claim_receipts(P1, "gw-2") == []
    assert [t.id for t in ledger.claim_receipts(P1, "gw-1")] == ids[:2]  # its own claims again
    assert ledger.claim_receipts(P2, "gw-1") == []
    sent = ledger.mark_receipt_sent(ids[0])
    assert sent.worker is None and sent.receipt_state is ReceiptState.SENT
    with pytest.raises(InvalidTransition):
        ledger.unclaim_receipt(ids[1], "gw-2")  # not its claim
    assert ledger.unclaim_receipt(ids[1], "gw-1").worker is None
    assert [t.id for t in ledger.claim_receipts(P1, "gw-2")] == [ids[1]]
    # a crashed gateway's claim is taken over after stale_after
    time.sleep(0.01)
    assert ledger.claim_receipts(P1, "gw-3", stale_after=timedelta(hours=1)) == []
    taken = ledger.claim_receipts(P1, "gw-3", stale_after=timedelta(0))
    assert [(t.id, t.worker) for t in taken] == [(ids[1], "gw-3")]
    # a released held receipt becomes claimable
    ledger.release_receipt(ids[2], nerp_code=34)
    assert [t.id for t in ledger.claim_receipts(P1, "gw-1")] == [ids[2]]
    kinds = [e.kind for e in ledger.events(ids[1])]
    assert kinds.count("receipt_claimed") == 4 and "receipt_unclaimed" in kinds


def test_worker_guard_stops_a_late_worker(ledger: Ledger, make_key: KeyFactory) -> None:
    t = ledger.enqueue_outbound(P1, make_key(), "/out/a", 5, SHA)
    assert ledger.claim_outbound(P1, "gw-slow") is not None
    time.sleep(0.01)
    ledger.requeue_stale(timedelta(0))
    taken = ledger.claim_outbound(P1, "gw-fast")
    assert taken is not None and taken.worker == "gw-fast"
    with pytest.raises(InvalidTransition, match="claimed by 'gw-fast'"):
        ledger.mark_sent(t.id, worker="gw-slow")
    with pytest.raises(InvalidTransition, match="claimed by 'gw-fast'"):
        ledger.mark_failed(t.id, "late failure", worker="gw-slow")
    assert ledger.get(t.id).status is TransferStatus.SENDING
    assert ledger.mark_sent(t.id, worker="gw-fast").status is TransferStatus.SENT


def test_session_guard_on_inbound(ledger: Ledger, make_key: KeyFactory) -> None:
    """The partner reconnects while the old connection hangs: the old session must not fail or
    complete the reception the new session now owns."""
    key = make_key()
    old, _ = ledger.begin_inbound(P1, key, session_id="old")
    new, dup = ledger.begin_inbound(P1, key, session_id="new")
    assert not dup and new.id == old.id and new.session_id == "new"
    with pytest.raises(InvalidTransition, match="taken over by session 'new'"):
        ledger.fail_inbound(old.id, "read timeout", session_id="old", guard_session=True)
    with pytest.raises(InvalidTransition, match="taken over by session 'new'"):
        ledger.complete_inbound(old.id, "/in/a", 5, SHA, session_id="old", guard_session=True)
    assert ledger.get(old.id).status is TransferStatus.RECEIVING
    with pytest.raises(ValueError, match="guard_session needs the session_id"):
        ledger.fail_inbound(old.id, "x", guard_session=True)
    done = ledger.complete_inbound(new.id, "/in/a", 5, SHA, session_id="new", guard_session=True)
    assert done.status is TransferStatus.RECEIVED
