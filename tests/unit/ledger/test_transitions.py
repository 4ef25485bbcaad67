"""Every status-changing call from every reachable state, on SQLite: allowed ones change the row and
write one event, forbidden ones raise InvalidTransition and leave the row and the audit trail alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from oftp2_provider.ledger import (
    Direction,
    InvalidTransition,
    Ledger,
    ReceiptState,
    Transfer,
    TransferNotFound,
    TransferStatus,
    VirtualFileKey,
)

from .conftest import digest

SHA = digest(b"payload")
PARTNER = "O0013000000PARTNER"


def _bring_to(ledger: Ledger, key: VirtualFileKey, state: str) -> Transfer:
    """Create a transfer and drive it into ``state`` using only the public API."""
    if state.startswith("out:"):
        t = ledger.enqueue_outbound(PARTNER, key, "/data/out/f", 7, SHA)
        if state == "out:queued":
            return t
        claimed = ledger.claim_outbound(PARTNER, "w1")
        assert claimed is not None and claimed.id == t.id
        if state == "out:sending":
            return claimed
        if state == "out:sent":
            return ledger.mark_sent(t.id)
        if state == "out:delivered":
            return ledger.mark_delivered(ledger.mark_sent(t.id).id)
        if state == "out:refused":
            return ledger.mark_refused(t.id, 6, "too big")
        if state == "out:failed":
            return ledger.mark_failed(t.id, "connection reset")
        raise AssertionError(state)
    t, dup = ledger.begin_inbound(PARTNER, key)
    assert not dup
    if state == "in:receiving":
        return t
    if state == "in:failed":
        return ledger.fail_inbound(t.id, "decryption failed", refusal_code=22)
    hold = state in ("in:received_held", "in:released_due", "in:released_sent")
    t = ledger.complete_inbound(t.id, "/data/in/f", 7, SHA, hold_receipt=hold)
    if state in ("in:received_held", "in:received_due"):
        return t
    if state == "in:received_sent":
        return ledger.mark_receipt_sent(t.id)
    t = ledger.release_receipt(t.id)
    if state == "in:released_due":
        return t
    if state == "in:released_sent":
        return ledger.mark_receipt_sent(t.id)
    raise AssertionError(state)


STATES = [
    "out:queued",
    "out:sending",
    "out:sent",
    "out:delivered",
    "out:refused",
    "out:failed",
    "in:receiving",
    "in:failed",
    "in:received_held",
    "in:received_due",
    "in:received_sent",
    "in:released_due",
    "in:released_sent",
]

Action = Callable[[Ledger, int], Transfer]

# action name -> (call, states it is allowed from, expected (status, receipt_state) afterwards;
# None keeps the value the row had)
ACTIONS: dict[str, tuple[Action, set[str], tuple[str | None, str | None]]] = {
    "mark_sent": (lambda led, i: led.mark_sent(i, transmitted_size=9), {"out:sending"}, ("sent", None)),
    "mark_delivered": (
        lambda led, i: led.mark_delivered(i),
        {"out:sending", "out:sent", "out:failed"},
        ("delivered", None),
    ),
    "mark_refused": (
        lambda led, i: led.mark_refused(i, 14, "direction refused"),
        {"out:sending", "out:sent", "out:failed"},
        ("refused", None),
    ),
    "mark_failed": (
        lambda led, i: led.mark_failed(i, "timeout"),
        {"out:sending", "out:sent"},
        ("failed", None),
    ),
    "mark_failed_retry": (
        lambda led, i: led.mark_failed(i, "SFNA retry", retry=True),
        {"out:sending", "out:sent"},
        ("queued", None),
    ),
    "requeue": (lambda led, i: led.requeue(i), {"out:failed"}, ("queued", None)),
    "set_restart_offset": (
        lambda led, i: led.set_restart_offset(i, 12),
        {"out:queued", "out:sending", "out:failed", "in:receiving", "in:failed"},
        (None, None),
    ),
    "complete_inbound": (
        lambda led, i: led.complete_inbound(i, "/data/in/x", 1, SHA),
        {"in:receiving"},
        ("received", "due"),
    ),
    "fail_inbound": (lambda led, i: led.fail_inbound(i, "EFNA 21"), {"in:receiving"}, ("failed", None)),
    "release_receipt": (lambda led, i: led.release_receipt(i), {"in:received_held"}, ("released", "due")),
    "release_receipt_nerp": (
        lambda led, i: led.release_receipt(i, nerp_code=34, text="mapping failed"),
        {"in:received_held"},
        ("released", "due"),
    ),
    "mark_receipt_sent": (
        lambda led, i: led.mark_receipt_sent(i),
        {"in:received_due", "in:released_due"},
        (None, "sent"),
    ),
    "resend_receipt": (
        lambda led, i: led.resend_receipt(i),
        {"in:received_sent", "in:released_sent"},
        (None, "due"),
    ),
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_transition_table(
    ledger: Ledger, make_key: Callable[..., VirtualFileKey], state: str, action: str
) -> None:
    call, allowed, (want_status, want_receipt) = ACTIONS[action]
    before = _bring_to(ledger, make_key(), state)
    events_before = ledger.events(before.id)
    if state in allowed:
        after = call(ledger, before.id)
        assert after.id == before.id
        assert after.status.value == (want_status or before.status.value)
        assert after.receipt_state.value == (want_receipt or before.receipt_state.value)
        assert after.updated_at >= before.updated_at
        new_events = ledger.events(before.id)[len(events_before) :]
        assert len(new_events) == 1, [e.kind for e in new_events]
    else:
        with pytest.raises(InvalidTransition) as info:
            call(ledger, before.id)
        assert info.value.transfer_id == before.id
        assert before.status.value in str(info.value)
        assert ledger.get(before.id) == before
        assert ledger.events(before.id) == events_before


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_unknown_id_is_not_found(ledger: Ledger, action: str) -> None:
    call = ACTIONS[action][0]
    with pytest.raises(TransferNotFound, match="no transfer 4242"):
        call(ledger, 4242)


def test_claim_only_from_queued(ledger: Ledger, make_key: Callable[..., VirtualFileKey]) -> None:
    for state in STATES:
        if state != "out:queued":
            _bring_to(ledger, make_key(), state)
    assert ledger.claim_outbound(PARTNER, "w2") is None
    queued = _bring_to(ledger, make_key(), "out:queued")
    claimed = ledger.claim_outbound(PARTNER, "w2", session_id="s-1")
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.worker, claimed.attempts, claimed.session_id) == (
        queued.id,
        TransferStatus.SENDING,
        "w2",
        1,
        "s-1",
    )


def test_direction_is_checked(ledger: Ledger, make_key: Callable[..., VirtualFileKey]) -> None:
    inbound = _bring_to(ledger, make_key(), "in:receiving")
    with pytest.raises(InvalidTransition, match="outbound only"):
        ledger.mark_failed(inbound.id, "x")
    outbound = _bring_to(ledger, make_key(), "out:sending")
    with pytest.raises(InvalidTransition, match="inbound only"):
        ledger.fail_inbound(outbound.id, "x")
    assert ledger.get(outbound.id).status is TransferStatus.SENDING


def test_refused_records_code_and_text(ledger: Ledger, make_key: Callable[..., VirtualFileKey]) -> None:
    t = _bring_to(ledger, make_key(), "out:sending")
    refused = ledger.mark_refused(t.id, 6, "file size too big")
    assert (refused.nerp_code, refused.nerp_text, refused.last_error) == (
        6,
        "file size too big",
        "file size too big",
    )
    assert refused.is_final


def test_release_receipt_choices(ledger: Ledger, make_key: Callable[..., VirtualFileKey]) -> None:
    eerp = ledger.release_receipt(_bring_to(ledger, make_key(), "in:received_held").id)
    assert (eerp.nerp_code, eerp.nerp_text, eerp.receipt_state) == (None, None, ReceiptState.DUE)
    default_nerp = ledger.release_receipt(_bring_to(ledger, make_key(), "in:received_held").id, ok=False)
    assert default_nerp.nerp_code == 34
    coded = ledger.release_receipt(
        _bring_to(ledger, make_key(), "in:received_held").id, nerp_code=31, text="signature not valid"
    )
    assert (coded.nerp_code, coded.nerp_text) == (31, "signature not valid")
    held = _bring_to(ledger, make_key(), "in:received_held")
    for bad in (0, 100):
        with pytest.raises(ValueError, match="nerp_code"):
            ledger.release_receipt(held.id, nerp_code=bad)
    assert ledger.get(held.id).receipt_state is ReceiptState.HELD


def test_receipt_state_named_in_error(ledger: Ledger, make_key: Callable[..., VirtualFileKey]) -> None:
    due = _bring_to(ledger, make_key(), "in:received_due")
    with pytest.raises(InvalidTransition, match=r"received \(receipt due\)"):
        ledger.release_receipt(due.id)


def test_failed_outbound_keeps_restart_offset(
    ledger: Ledger, make_key: Callable[..., VirtualFileKey]
) -> None:
    t = _bring_to(ledger, make_key(), "out:sending")
    failed = ledger.mark_failed(t.id, "link down", retry=True, restart_offset=40)
    assert (failed.status, failed.restart_offset, failed.worker, failed.last_error) == (
        TransferStatus.QUEUED,
        40,
        None,
        "link down",
    )
    again = ledger.claim_outbound(PARTNER, "w9")
    assert again is not None and (again.id, again.attempts, again.restart_offset) == (t.id, 2, 40)
    sent = ledger.mark_sent(t.id)
    assert (sent.restart_offset, sent.last_error) == (0, None)


def test_direction_enum_values() -> None:
    assert {d.value for d in Direction} == {"in", "out"}
