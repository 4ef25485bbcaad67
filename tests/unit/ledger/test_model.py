"""Random sequences of ledger calls checked against a small in-memory model (hypothesis stateful).

The model is written from the life cycle on the docs page, independently of the SQL: after every
step the rows in SQLite must match it (status, receipt state, attempts, dispatched, NERP code) and
each transfer must have one audit event per successful change.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from oftp2_provider.ledger import InvalidTransition, Ledger, VirtualFileKey

SHA = "ef" * 32
PARTNERS = ("O0013000000A", "O0013000000B")


@dataclass
class Row:
    direction: str
    partner: str
    key: VirtualFileKey
    status: str
    receipt: str = "none"
    attempts: int = 0
    dispatched: bool = False
    nerp: int | None = None
    events: int = 1


@dataclass
class Model:
    rows: dict[int, Row] = field(default_factory=dict)


OUT_ALLOWED = {
    "mark_sent": {"sending"},
    "mark_failed": {"sending", "sent"},
    "requeue": {"failed"},
    # a receipt also settles a file queued again for a re-send (the partner has it)
    "eerp": {"queued", "sending", "sent", "failed"},
    "nerp": {"queued", "sending", "sent", "failed"},
}


class LedgerMachine(RuleBasedStateMachine):
    """Drives a SQLite ledger and the model side by side."""

    def __init__(self) -> None:
        super().__init__()
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        self.dir = Path(tempfile.mkdtemp(prefix="oftp2-ledger-model-", dir=base))
        self.ledger = Ledger.from_sqlite(self.dir / "m.db")
        self.model = Model()
        self.n = 0

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _new_key(self) -> VirtualFileKey:
        self.n += 1
        return VirtualFileKey(f"M{self.n:05d}", "20261124", f"{self.n:010d}", "O0013ME", "O0013YOU")

    def _ids(self, direction: str) -> list[int]:
        return [i for i, r in self.model.rows.items() if r.direction == direction]

    def _pick(self, direction: str, data: st.DataObject) -> int:
        """A transfer id, drawn state first so that rare states get as many steps as common ones."""
        by_state: dict[tuple[str, str], list[int]] = {}
        for i in self._ids(direction):
            row = self.model.rows[i]
            by_state.setdefault((row.status, row.receipt), []).append(i)
        state = data.draw(st.sampled_from(sorted(by_state)))
        return data.draw(st.sampled_from(by_state[state]))

    def _expect(self, allowed: bool, call: object) -> bool:
        """Run ``call``; it must succeed exactly when the model allows it."""
        assert callable(call)
        if allowed:
            call()
            return True
        try:
            call()
        except InvalidTransition:
            return False
        raise AssertionError("the ledger allowed a change the model forbids")

    # ---------------------------------------------------------------- outbound

    @rule(partner=st.sampled_from(PARTNERS), again=st.booleans())
    def enqueue(self, partner: str, again: bool) -> None:
        existing = [i for i in self._ids("out") if self.model.rows[i].partner == partner]
        if again and existing:
            row = self.model.rows[existing[0]]
            t = self.ledger.enqueue_outbound(partner, row.key, "/out/x", 1, SHA)
            assert t.id == existing[0]  # idempotent, no event
            return
        key = self._new_key()
        t = self.ledger.enqueue_outbound(partner, key, "/out/x", 1, SHA)
        assert t.id not in self.model.rows
        self.model.rows[t.id] = Row("out", partner, key, "queued")

    @rule(partner=st.sampled_from(PARTNERS))
    def claim(self, partner: str) -> None:
        queued = sorted(
            i
            for i in self._ids("out")
            if self.model.rows[i].partner == partner and self.model.rows[i].status == "queued"
        )
        t = self.ledger.claim_outbound(partner, "w")
        if not queued:
            assert t is None
            return
        assert t is not None and t.id == queued[0]
        row = self.model.rows[t.id]
        row.status, row.attempts, row.events = "sending", row.attempts + 1, row.events + 1

    @precondition(lambda self: bool(self._ids("out")))
    @rule(data=st.data(), action=st.sampled_from(sorted(OUT_ALLOWED)), retry=st.booleans())
    def outbound_step(self, data: st.DataObject, action: str, retry: bool) -> None:
        tid = self._pick("out", data)
        row = self.model.rows[tid]
        ok = row.status in OUT_ALLOWED[action]
        calls = {
            "mark_sent": lambda: self.ledger.mark_sent(tid),
            "mark_failed": lambda: self.ledger.mark_failed(tid, "x", retry=retry),
            "requeue": lambda: self.ledger.requeue(tid),
        }
        if action in calls:
            if self._expect(ok, calls[action]):
                row.status = {"mark_sent": "sent", "requeue": "queued"}.get(
                    action, "queued" if retry else "failed"
                )
                row.events += 1
            return
        # receipts: never raise; a receipt in the wrong state is recorded and ignored
        kind, reason = ("EERP", None) if action == "eerp" else ("NERP", 31)
        t = self.ledger.record_receipt(row.key, kind, b"R", "unsigned", reason)
        assert t is not None and t.id == tid
        row.events += 1
        if ok:
            row.status = "delivered" if kind == "EERP" else "refused"
            row.nerp = reason if kind == "NERP" else row.nerp

    # ---------------------------------------------------------------- inbound

    @rule(partner=st.sampled_from(PARTNERS), data=st.data())
    def begin(self, partner: str, data: st.DataObject) -> None:
        ids = self._ids("in")
        if ids and data.draw(st.booleans()):
            tid = self._pick("in", data)
            row = self.model.rows[tid]
            t, dup = self.ledger.begin_inbound(partner, row.key)
            assert t.id == tid
            assert dup == (row.status in ("received", "released"))
            row.events += 1
            if not dup:
                row.status, row.attempts, row.partner = "receiving", row.attempts + 1, partner
            return
        key = self._new_key()
        t, dup = self.ledger.begin_inbound(partner, key)
        assert not dup and t.id not in self.model.rows
        self.model.rows[t.id] = Row("in", partner, key, "receiving", attempts=1)

    @precondition(lambda self: bool(self._ids("in")))
    @rule(
        data=st.data(),
        action=st.sampled_from(["complete", "complete_hold", "fail", "release", "nerp", "sent", "resend"]),
    )
    def inbound_step(self, data: st.DataObject, action: str) -> None:
        tid = self._pick("in", data)
        row = self.model.rows[tid]
        led = self.ledger
        if action in ("complete", "complete_hold"):
            hold = action == "complete_hold"
            if self._expect(
                row.status == "receiving",
                lambda: led.complete_inbound(tid, "/in/x", 1, SHA, hold_receipt=hold),
            ):
                row.status, row.receipt, row.events = "received", "held" if hold else "due", row.events + 1
        elif action == "fail":
            if self._expect(row.status == "receiving", lambda: led.fail_inbound(tid, "x")):
                row.status, row.events = "failed", row.events + 1
        elif action in ("release", "nerp"):
            code = 34 if action == "nerp" else None
            allowed = row.status == "received" and row.receipt == "held"
            if self._expect(allowed, lambda: led.release_receipt(tid, nerp_code=code)):
                row.status, row.receipt, row.nerp, row.events = "released", "due", code, row.events + 1
        elif action == "sent":
            if self._expect(row.receipt == "due", lambda: led.mark_receipt_sent(tid)):
                row.receipt, row.events = "sent", row.events + 1
        elif action == "resend" and self._expect(row.receipt == "sent", lambda: led.resend_receipt(tid)):
            row.receipt, row.events = "due", row.events + 1

    @rule()
    def dispatch(self) -> None:
        pending = self.ledger.undispatched_inbound(limit=1000)
        want = sorted(
            i
            for i, r in self.model.rows.items()
            if r.direction == "in" and not r.dispatched and r.status in ("received", "released")
        )
        assert [t.id for t in pending] == want
        assert self.ledger.mark_dispatched(want) == len(want)
        for i in want:
            self.model.rows[i].dispatched = True
            self.model.rows[i].events += 1

    # ---------------------------------------------------------------- invariants

    @invariant()
    def rows_match_model(self) -> None:
        rows = {t.id: t for t in self.ledger.list(limit=10_000)}
        assert set(rows) == set(self.model.rows)
        for tid, want in self.model.rows.items():
            got = rows[tid]
            assert (
                got.direction.value,
                got.status.value,
                got.receipt_state.value,
                got.attempts,
                got.dispatched,
            ) == (
                want.direction,
                want.status,
                want.receipt,
                want.attempts,
                want.dispatched,
            ), tid
            assert got.nerp_code == want.nerp, tid
        for partner in PARTNERS:
            due = [t.id for t in self.ledger.receipts_to_send(partner)]
            assert due == sorted(
                i
                for i, r in self.model.rows.items()
                if r.direction == "in" and r.partner == partner and r.receipt == "due"
            )

    @invariant()
    def one_event_per_change(self) -> None:
        counts: dict[int, int] = {}
        for e in self.ledger.events(limit=100_000):
            if e.transfer_id is not None:
                counts[e.transfer_id] = counts.get(e.transfer_id, 0) + 1
        assert counts == {i: r.events for i, r in self.model.rows.items()}


LedgerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ledger_matches_model = LedgerMachine.TestCase
