"""The session state machine tables: every Speaker/Listener transition, valid and invalid."""

from __future__ import annotations

import pytest

from oftp2_provider.protocol.errors import EsidReason, LocalProtocolError, RemoteProtocolError
from oftp2_provider.protocol.state import (
    RECEIVE,
    SEND,
    SPEAKER_STATES,
    State,
    StateMachine,
)

ALL_COMMANDS = ("SSRM SSID SECD AUCH AURP SFID SFPA SFNA DATA CDT EFID EFPA EFNA CD EERP NERP RTR").split()


def machine(state: State, window: int = 3, credit: int | None = None) -> StateMachine:
    sm = StateMachine(state)
    sm.window = window
    sm.credit = window if credit is None else credit
    return sm


# --- valid transitions, straight from the tables -------------------------------------------------

SEND_CASES = [
    (State.IDLESP, "SFID", State.OPOP),
    (State.IDLESPCD, "SFID", State.OPOP),
    (State.IDLESP, "EERP", State.WF_RTR),
    (State.IDLESPCD, "NERP", State.WF_RTR),
    (State.IDLESP, "CD", State.IDLELICD),
    (State.OPO, "EFID", State.CLOP),
    (State.OPIWFA, "SFPA", State.OPI),
    (State.OPIWFA, "SFNA", State.IDLELI),
    (State.CLIWFA, "EFPA", State.IDLELI),
    (State.CLIWFA, "EFNA", State.IDLELI),
    (State.IDLELI, "RTR", State.IDLELI),
    (State.I_WF_RM, "SSID", State.I_WF_SSID),
]


@pytest.mark.parametrize(("state", "cmd", "new"), SEND_CASES)
def test_send_valid(state: State, cmd: str, new: State) -> None:
    sm = machine(state)
    assert sm.send(cmd) is new
    assert sm.state is new


RECEIVE_CASES = [
    (State.OPOP, "SFPA", State.OPO),
    (State.OPOP, "SFNA", State.IDLESP),
    (State.OPOWFC, "CDT", State.OPO),
    (State.CLOP, "EFPA", State.IDLESP),
    (State.CLOP, "EFNA", State.IDLESP),
    (State.WF_RTR, "RTR", State.IDLESP),
    (State.IDLELI, "SFID", State.OPIWFA),
    (State.IDLELICD, "SFID", State.OPIWFA),
    (State.IDLELI, "EERP", State.IDLELI),
    (State.IDLELICD, "NERP", State.IDLELI),
    (State.IDLELI, "CD", State.IDLESPCD),
    (State.WF_CD, "CD", State.IDLESP),
    (State.OPI, "EFID", State.CLIWFA),
    (State.A_NC_ONLY, "SSID", State.A_WF_CONRS),
    (State.I_WF_RM, "SSRM", State.I_WF_RM),
]


@pytest.mark.parametrize(("state", "cmd", "new"), RECEIVE_CASES)
def test_receive_valid(state: State, cmd: str, new: State) -> None:
    sm = machine(state)
    assert sm.receive(cmd) is new


# --- everything not in the table is a protocol violation (ESID 02) -----------------------------------


def _invalid_receives() -> list[tuple[State, str]]:
    out = []
    for state in State:
        if state in (State.WF_NDISC, State.CLOSED):
            continue
        for cmd in ALL_COMMANDS:
            if (state, cmd) in RECEIVE:
                continue
            out.append((state, cmd))
    return out


@pytest.mark.parametrize(("state", "cmd"), _invalid_receives())
def test_receive_invalid_is_esid_02(state: State, cmd: str) -> None:
    sm = machine(state)
    with pytest.raises(RemoteProtocolError) as info:
        sm.receive(cmd)
    assert info.value.reason == EsidReason.PROTOCOL_VIOLATION
    assert sm.state is state  # nothing changed


def _invalid_sends() -> list[tuple[State, str]]:
    return [
        (state, cmd)
        for state in State
        for cmd in ALL_COMMANDS
        if (state, cmd) not in SEND and state not in (State.WF_NDISC, State.CLOSED)
    ]


@pytest.mark.parametrize(("state", "cmd"), _invalid_sends())
def test_send_invalid_is_local_error(state: State, cmd: str) -> None:
    sm = machine(state)
    if cmd == "CD" and state is State.CLOP:
        pytest.skip("CD in CLOP depends on EFPA(Y); covered below")
    with pytest.raises(LocalProtocolError):
        sm.send(cmd)
    assert sm.state is state


# --- guards the tables cannot express ---------------------------------------------------------------


def test_listener_credit_counts_down_and_cdt_resets() -> None:
    sm = machine(State.OPIWFA, window=2)
    sm.send("SFPA")
    assert sm.credit == 2
    sm.receive("DATA")
    assert not sm.listener_needs_cdt()
    sm.receive("DATA")
    assert sm.listener_needs_cdt()
    sm.send("CDT")
    assert sm.credit == 2 and sm.state is State.OPI


def test_listener_data_without_credit_is_esid_02() -> None:
    sm = machine(State.OPI, window=2, credit=0)
    with pytest.raises(RemoteProtocolError) as info:
        sm.receive("DATA")
    assert info.value.reason == EsidReason.PROTOCOL_VIOLATION


def test_speaker_credit_window_and_efid_rule() -> None:
    sm = machine(State.OPOP, window=2)
    sm.receive("SFPA")
    assert sm.state is State.OPO and sm.credit == 2
    sm.send("DATA")
    assert sm.state is State.OPO
    sm.send("DATA")
    assert sm.state is State.OPOWFC
    with pytest.raises(LocalProtocolError, match="CDT"):
        sm.send("EFID")  # EFID is forbidden while waiting for credit
    with pytest.raises(LocalProtocolError, match="credit"):
        sm.send("DATA")
    sm.receive("CDT")
    assert sm.state is State.OPO and sm.credit == 2
    sm.send("EFID")
    assert sm.state is State.CLOP and sm.credit == 0


def test_stray_cdt_tolerated_in_opo_and_clop() -> None:
    sm = machine(State.OPO, window=5, credit=1)
    sm.receive("CDT")
    assert sm.state is State.OPO and sm.credit == 5 and sm.tolerated == 1
    sm.send("EFID")
    sm.receive("CDT")
    assert sm.state is State.CLOP and sm.tolerated == 2


def test_efpa_y_forces_cd() -> None:
    sm = machine(State.CLOP)
    sm.receive("EFPA", change_direction=True)
    assert sm.state is State.CLOP and sm.owes_cd
    with pytest.raises(LocalProtocolError, match="send CD"):
        sm.send("SFID")
    assert sm.send("CD") is State.IDLELI
    assert not sm.owes_cd


def test_cd_without_efpa_y_in_clop_is_local_error() -> None:
    sm = machine(State.CLOP)
    with pytest.raises(LocalProtocolError):
        sm.send("CD")


def test_listener_efpa_y_waits_for_solicited_cd() -> None:
    sm = machine(State.CLIWFA)
    assert sm.send("EFPA", change_direction=True) is State.WF_CD
    assert sm.receive("CD") is State.IDLESP
    # after a solicited CD the new Speaker may hand the turn straight back
    assert sm.send("CD") is State.IDLELICD


def test_loop_rule() -> None:
    sm = machine(State.IDLELI)
    assert sm.receive("CD") is State.IDLESPCD
    with pytest.raises(LocalProtocolError, match="unsolicited"):
        sm.send("CD")
    # the peer who sent us an unsolicited CD may not get one straight back either
    peer = machine(State.IDLELICD)
    with pytest.raises(RemoteProtocolError) as info:
        peer.receive("CD")
    assert info.value.reason == EsidReason.PROTOCOL_VIOLATION


def test_esid_00_only_after_unsolicited_cd() -> None:
    for state in SPEAKER_STATES - {State.IDLESPCD}:
        with pytest.raises(LocalProtocolError, match="ESID 00"):
            machine(state).send("ESID", reason=0)
    sm = machine(State.IDLESPCD)
    assert sm.send("ESID", reason=0) is State.WF_NDISC


def test_eerp_in_idlespcd_returns_to_idlesp_then_cd_needed_before_end() -> None:
    sm = machine(State.IDLESPCD)
    sm.send("EERP")
    sm.receive("RTR")
    assert sm.state is State.IDLESP
    with pytest.raises(LocalProtocolError):
        sm.send("ESID", reason=0)
    assert sm.send("CD") is State.IDLELICD


def test_non_zero_esid_any_time_and_esid_received_closes() -> None:
    for state in (State.OPO, State.OPI, State.I_WF_SSID, State.WF_AUCH):
        sm = machine(state)
        assert sm.send("ESID", reason=int(EsidReason.TIME_OUT)) is State.WF_NDISC
        with pytest.raises(LocalProtocolError):
            sm.send("ESID", reason=99)
        assert machine(state).receive("ESID") is State.CLOSED


def test_input_after_end_is_ignored() -> None:
    sm = machine(State.WF_NDISC)
    assert sm.receive("DATA") is State.WF_NDISC


def test_secure_auth_sequence_both_roles() -> None:
    ini = StateMachine(State.I_WF_SSID)
    ini.set_role(True)
    ini.secure_auth = True
    rsp = StateMachine(State.A_WF_CONRS)
    rsp.set_role(False)
    rsp.secure_auth = True
    assert rsp.send("SSID") is State.WF_SECD
    assert ini.ssid_answer_accepted() is State.I_WF_SSID
    assert ini.send("SECD") is State.WF_AUCH
    rsp.receive("SECD")
    assert rsp.send("AUCH") is State.WF_AURP
    ini.receive("AUCH")
    assert ini.send("AURP") is State.WF_SECD
    rsp.receive("AURP")
    assert rsp.auth_verified() is State.WF_AURP  # must still ask for the initiator's challenge
    assert rsp.send("SECD") is State.WF_AUCH
    ini.receive("SECD")
    assert ini.send("AUCH") is State.WF_AURP
    rsp.receive("AUCH")
    assert rsp.send("AURP") is State.IDLELI
    ini.receive("AURP")
    assert ini.auth_verified() is State.IDLESP


def test_initiator_without_auth_starts_as_speaker() -> None:
    sm = StateMachine(State.I_WF_SSID)
    sm.set_role(True)
    assert sm.ssid_answer_accepted() is State.IDLESP
    rsp = StateMachine(State.A_WF_CONRS)
    rsp.set_role(False)
    assert rsp.send("SSID") is State.IDLELI


def test_bulk_data_accounting_matches_single_steps() -> None:
    bulk = machine(State.OPO, window=5, credit=5)
    assert bulk.send_data_buffers(3) == 3 and bulk.state is State.OPO and bulk.credit == 2
    assert bulk.send_data_buffers(7) == 2 and bulk.state is State.OPOWFC and bulk.credit == 0
    assert bulk.send_data_buffers(1) == 0  # no credit: nothing may go
    assert machine(State.IDLESP).send_data_buffers(4) == 0
