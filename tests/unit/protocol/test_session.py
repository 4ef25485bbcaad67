"""Two sans-I/O sessions wired back to back in memory, and the ESID answers to bad input."""

from __future__ import annotations

import os

import pytest

from oftp2_provider.protocol import codec, framing
from oftp2_provider.protocol.api import AcceptDecision, PartnerConfig, Role, SessionConfig
from oftp2_provider.protocol.commands import (
    EERP,
    NERP,
    SFID,
    SFPA,
    SSID,
    SSRM,
    ProtocolLevel,
    RecordFormat,
    SendReceive,
)
from oftp2_provider.protocol.errors import EsidReason, LocalProtocolError
from oftp2_provider.protocol.session import (
    ConnectionRequested,
    CreditReceived,
    DataReceived,
    EERPReceived,
    Event,
    FileAccepted,
    FileConfirmed,
    FileEnded,
    FileOffered,
    FileRefused,
    FileRejected,
    NERPReceived,
    ReceiptAcknowledged,
    Session,
    SessionEnded,
    SessionStarted,
    TurnReceived,
    restarts_in_v_records,
)
from oftp2_provider.protocol.state import State

CLIENT = "O0013CLIENT"
SERVER = "O0013SERVER"


class Wire:
    """Two sessions and the bytes in flight between them, counted per command octet."""

    def __init__(self, client: Session, server: Session) -> None:
        self.c = client
        self.s = server
        self.log: list[tuple[str, bytes]] = []  # (sender, command octet)

    def deliver(self, sender: Session, data: bytes) -> list[Event]:
        receiver = self.s if sender is self.c else self.c
        dec = framing.StreamDecoder()
        dec.feed(data)
        for buf in dec:
            self.log.append(("c" if sender is self.c else "s", buf[:1]))
        receiver.receive_data(data)
        return receiver.events()

    def c2s(self, data: bytes) -> list[Event]:
        return self.deliver(self.c, data)

    def s2c(self, data: bytes) -> list[Event]:
        return self.deliver(self.s, data)

    def trace(self) -> str:
        return " ".join(f"{who}:{cmd.decode()}" for who, cmd in self.log)


def connect(
    ccfg: SessionConfig | None = None,
    scfg: SessionConfig | None = None,
    *,
    decision: AcceptDecision | None = None,
    partner: PartnerConfig | None = None,
) -> tuple[Wire, list[Event], list[Event]]:
    c = Session(Role.INITIATOR, ccfg or SessionConfig(CLIENT, "CPW"), partner=partner)
    s = Session(Role.RESPONDER, scfg or SessionConfig(SERVER, "SPW"))
    w = Wire(c, s)
    assert w.s2c(s.start()) == []
    evs = w.c2s(c.data_to_send())
    assert isinstance(evs[0], ConnectionRequested)
    server_events = evs[1:]
    client_events = w.s2c(s.accept_connection(decision))
    server_events += w.c2s(c.data_to_send())
    return w, client_events, server_events + s.events()


def started(ccfg: SessionConfig | None = None, scfg: SessionConfig | None = None) -> Wire:
    w, cev, _ = connect(ccfg, scfg)
    assert isinstance(cev[0], SessionStarted), cev
    return w


def sfid(
    dsn: str = "TEST.FILE", restart: int = 0, fmt: RecordFormat = RecordFormat.UNSTRUCTURED, lrecl: int = 0
) -> SFID:
    return SFID(dsn, "20240131", "1230450001", SERVER, CLIENT, format=fmt, lrecl=lrecl, restart=restart)


def send_file(
    w: Wire, data: bytes, *, records: list[bytes] | None = None, restart_ok: int = 0
) -> list[Event]:
    """Client sends one file; returns the server's events (data concatenated)."""
    c, s = w.c, w.s
    offer = sfid(
        fmt=RecordFormat.FIXED if records else RecordFormat.UNSTRUCTURED,
        lrecl=len(records[0]) if records else 0,
    )
    ev = w.c2s(c.send_sfid(offer))
    assert isinstance(ev[0], FileOffered)
    ev = w.s2c(s.accept_file(restart_ok))
    assert isinstance(ev[0], FileAccepted)
    server_events: list[Event] = []

    def pump(out: bytes) -> None:
        server_events.extend(w.c2s(out))
        back = s.data_to_send()
        if back:
            for e in w.s2c(back):
                assert isinstance(e, CreditReceived)

    chunks = [(r, True) for r in records] if records else [(data, True)]
    for chunk, eor in chunks:
        pump(c.send_data(chunk, eor))
        while c.data_blocked:
            pump(c.data_to_send())
    while True:
        try:
            pump(c.end_file())
            break
        except LocalProtocolError:
            pump(c.data_to_send())
    return server_events


# --- start-up and negotiation -------------------------------------------------------------------------


def test_session_start_negotiates_minimum() -> None:
    w, cev, sev = connect(
        SessionConfig(CLIENT, "CPW", sdeb=4096, credit=64, compression=True),
        SessionConfig(SERVER, "SPW", sdeb=2048, credit=999, compression=True, restart=False),
    )
    (start,) = cev
    assert isinstance(start, SessionStarted) and start.speaker
    n = start.negotiated
    assert (n.sdeb, n.credit, n.compression, n.restart, n.level) == (
        2048,
        64,
        True,
        False,
        ProtocolLevel.V2_0,
    )
    assert n.partner_code == SERVER
    assert isinstance(sev[0], SessionStarted) and not sev[0].speaker
    assert sev[0].negotiated.partner_code == CLIENT
    assert w.c.state is State.IDLESP and w.s.state is State.IDLELI


@pytest.mark.parametrize(
    ("client_level", "server_level", "expected"),
    [
        (ProtocolLevel.V2_0, ProtocolLevel.V1_4, ProtocolLevel.V1_4),
        (ProtocolLevel.V1_4, ProtocolLevel.V2_0, ProtocolLevel.V1_4),
        (ProtocolLevel.V1_3, ProtocolLevel.V2_0, ProtocolLevel.V1_3),
        (ProtocolLevel.V2_0, ProtocolLevel.V1_3, ProtocolLevel.V1_3),
        (ProtocolLevel.V1_2, ProtocolLevel.V2_0, ProtocolLevel.V1_2),
    ],
)
def test_level_negotiation_and_layouts(
    client_level: ProtocolLevel, server_level: ProtocolLevel, expected: ProtocolLevel
) -> None:
    w = started(
        SessionConfig(CLIENT, "CPW", level=client_level), SessionConfig(SERVER, "SPW", level=server_level)
    )
    assert w.c.level is expected and w.s.level is expected
    date = "240131" if expected < ProtocolLevel.V1_4 else "20240131"
    tm = "123045" if expected < ProtocolLevel.V1_4 else "1230450001"
    out = w.c.send_sfid(SFID("DSN", date, tm, SERVER, CLIENT))
    expected_len = 165 if expected is ProtocolLevel.V2_0 else 128
    assert len(out) == 4 + expected_len
    (ev,) = w.c2s(out)
    assert isinstance(ev, FileOffered) and ev.sfid.date == date


def test_level_override_by_accept_decision() -> None:
    _w, cev, _ = connect(decision=AcceptDecision.accept(level=ProtocolLevel.V1_4))
    assert isinstance(cev[0], SessionStarted) and cev[0].negotiated.level is ProtocolLevel.V1_4


def _answer(client: Session, **fields: object) -> list[Event]:
    client.receive_data(framing.frame(codec.encode(SSRM(), ProtocolLevel.V2_0)))
    client.events()
    client.data_to_send()
    base = dict(level=ProtocolLevel.V2_0, code=SERVER, password="SPW", sdeb=99999, credit=999)
    base.update(fields)
    ssid = SSID(**base)  # type: ignore[arg-type]
    client.receive_data(framing.frame(codec.encode(ssid, ssid.level)))
    return client.events()


def _esid_reason(data: bytes) -> int:
    dec = framing.StreamDecoder()
    dec.feed(data)
    bufs = list(dec)
    assert bufs and bufs[-1][:1] == b"F", bufs
    return codec.decode_esid(bufs[-1]).reason


@pytest.mark.parametrize(
    ("ours", "answer", "reason"),
    [
        (
            dict(level=ProtocolLevel.V1_4),
            dict(level=ProtocolLevel.V2_0),
            EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
        ),
        (dict(sdeb=4096), dict(sdeb=8192), EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE),
        (dict(credit=10), dict(credit=11), EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE),
        (
            dict(send_receive=SendReceive.SEND),
            dict(send_receive=SendReceive.SEND),
            EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
        ),
        ({}, dict(secure_auth=True), EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE),
    ],
)
def test_initiator_rejects_bad_answers(
    ours: dict[str, object], answer: dict[str, object], reason: EsidReason
) -> None:
    c = Session(Role.INITIATOR, SessionConfig(CLIENT, "CPW", **ours))  # type: ignore[arg-type]
    (ev,) = _answer(c, **answer)
    assert isinstance(ev, SessionEnded) and ev.reason == reason and not ev.by_peer
    assert _esid_reason(c.data_to_send()) == reason
    assert c.closed


def test_initiator_checks_partner_code_and_password() -> None:
    c = Session(Role.INITIATOR, SessionConfig(CLIENT, "CPW"), partner=PartnerConfig(SERVER, "right"))
    (ev,) = _answer(c, password="WRONG")
    assert isinstance(ev, SessionEnded) and ev.reason == EsidReason.INVALID_PASSWORD
    c = Session(Role.INITIATOR, SessionConfig(CLIENT, "CPW"), partner=PartnerConfig("O0013OTHER", "SPW"))
    (ev,) = _answer(c)
    assert isinstance(ev, SessionEnded) and ev.reason == EsidReason.USER_CODE_NOT_KNOWN
    # passwords compare case-insensitively by default
    c = Session(Role.INITIATOR, SessionConfig(CLIENT, "CPW"), partner=PartnerConfig(SERVER, "spw"))
    (ev,) = _answer(c)
    assert isinstance(ev, SessionStarted)


def test_responder_rejects_with_decision_code() -> None:
    c = Session(Role.INITIATOR, SessionConfig(CLIENT, "CPW"))
    s = Session(Role.RESPONDER, SessionConfig(SERVER, "SPW"))
    w = Wire(c, s)
    w.s2c(s.start())
    w.c2s(c.data_to_send())
    out = s.reject_connection(EsidReason.INVALID_PASSWORD, "Invalid password")
    (ev,) = s.events()
    assert isinstance(ev, SessionEnded) and ev.reason == 4
    (cev,) = w.s2c(out)
    assert (
        isinstance(cev, SessionEnded) and cev.reason == 4 and cev.by_peer and cev.text == "Invalid password"
    )


def test_responder_auth_mismatch_is_esid_12() -> None:
    _w, cev, _sev = connect(SessionConfig(CLIENT, "CPW"), SessionConfig(SERVER, "SPW", secure_auth=True))
    assert (
        isinstance(cev[0], SessionEnded)
        and cev[0].reason == EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE
    )


def test_responder_send_only_pair_is_esid_10() -> None:
    _, cev, _ = connect(
        SessionConfig(CLIENT, "CPW", send_receive=SendReceive.RECEIVE),
        SessionConfig(SERVER, "SPW", send_receive=SendReceive.RECEIVE),
    )
    assert isinstance(cev[0], SessionEnded) and cev[0].reason == EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE


# --- secure authentication with injected crypto ------------------------------------------------------


class FakeAuth:
    """Challenge = the secret itself, reversed: enough to drive the state machine without CMS."""

    def __init__(self, tamper: bool = False) -> None:
        self.tamper = tamper

    def make_challenge(self, partner_code: str) -> tuple[bytes, bytes]:
        secret = os.urandom(20)
        return secret[::-1], secret

    def answer_challenge(self, challenge: bytes) -> bytes:
        answer = challenge[::-1]
        return bytes(20) if self.tamper else answer


def test_secure_authentication_success() -> None:
    w, cev, sev = connect(
        SessionConfig(CLIENT, "CPW", secure_auth=True, authenticator=FakeAuth()),
        SessionConfig(SERVER, "SPW", secure_auth=True, authenticator=FakeAuth()),
    )
    # drive the SECD/AUCH/AURP exchange to the end
    cevents, sevents = list(cev), list(sev)
    for _ in range(6):
        sevents += w.c2s(w.c.data_to_send())
        cevents += w.s2c(w.s.data_to_send())
    assert any(isinstance(e, SessionStarted) and e.speaker for e in cevents)
    assert any(isinstance(e, SessionStarted) and not e.speaker for e in sevents)
    assert w.c.state is State.IDLESP and w.s.state is State.IDLELI
    assert w.trace().split()[3:] == ["c:J", "s:A", "c:S", "s:J", "c:A", "s:S"]


def test_secure_authentication_wrong_answer_is_esid_11() -> None:
    w, _cev, sev = connect(
        SessionConfig(CLIENT, "CPW", secure_auth=True, authenticator=FakeAuth(tamper=True)),
        SessionConfig(SERVER, "SPW", secure_auth=True, authenticator=FakeAuth()),
    )
    sevents = list(sev)
    for _ in range(3):
        sevents += w.c2s(w.c.data_to_send())
        w.s2c(w.s.data_to_send())
    ended = [e for e in sevents if isinstance(e, SessionEnded)]
    assert ended and ended[0].reason == EsidReason.INVALID_CHALLENGE_RESPONSE


# --- files, credit, turn --------------------------------------------------------------------------------


def test_credit_window_two_three_buffers() -> None:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=128, credit=2))
    data = os.urandom(3 * 126 - 30)  # three DATA buffers at SDEB 128
    sev = send_file(w, data)
    got = b"".join(e.data for e in sev if isinstance(e, DataReceived))
    assert got == data
    ended = [e for e in sev if isinstance(e, FileEnded)]
    assert ended[0].counts_match and ended[0].octets == len(data)
    assert w.trace().split()[-7:] == ["c:H", "s:2", "c:D", "c:D", "s:C", "c:D", "c:T"]


def test_credit_window_two_four_buffers_waits_for_second_cdt() -> None:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=128, credit=2))
    data = os.urandom(4 * 126 - 30)
    send_file(w, data)
    assert w.trace().split()[-9:] == ["c:H", "s:2", "c:D", "c:D", "s:C", "c:D", "c:D", "s:C", "c:T"]


def _offered(credit: int) -> Wire:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=128, credit=credit))
    assert isinstance(w.c2s(w.c.send_sfid(sfid()))[0], FileOffered)
    assert isinstance(w.s2c(w.s.accept_file(0))[0], FileAccepted)
    return w


def test_data_buffers_received_together_come_as_one_event() -> None:
    w = _offered(credit=5)
    data = os.urandom(3 * 120)
    wire = w.c.send_data(data, True) + w.c.end_file()
    dec = framing.StreamDecoder()
    dec.feed(wire)
    assert [b[:1] for b in dec] == [b"D", b"D", b"D", b"T"]
    w.s.receive_data(wire)
    events = w.s.events()
    assert [type(e) for e in events] == [DataReceived, FileEnded]  # three buffers, one event, then EFID
    assert events[0].data == data and events[1].counts_match  # type: ignore[union-attr]
    assert w.s.data_to_send() == b""  # no CDT due: 3 of 5 credits used


def test_a_due_cdt_ends_the_run_of_data_buffers() -> None:
    w = _offered(credit=2)
    data = os.urandom(3 * 126 - 30)  # three buffers at SDEB 128
    w.s.receive_data(w.c.send_data(data, True))  # two buffers go out, the third waits for credit
    ev = w.s.next_event()
    assert isinstance(ev, DataReceived) and len(ev.data) > 126 and data.startswith(ev.data)
    cdt = w.s.data_to_send()
    assert cdt[4:5] == b"C"  # due now, before anything else is decoded
    assert w.s.next_event() is None
    assert isinstance(w.s2c(cdt)[0], CreditReceived)


def test_cdt_is_queued_as_soon_as_the_window_has_arrived() -> None:
    w = _offered(credit=2)
    data = os.urandom(3 * 126 - 30)
    wire = w.c.send_data(data, True)  # the two buffers the credit allows
    w.s.receive_data(wire[:-1])  # the second buffer is not complete yet: nothing is due
    assert not w.s.has_output
    w.s.receive_data(wire[-1:])
    assert w.s.has_output  # due before either buffer is decoded
    cdt = w.s.data_to_send()
    assert cdt[4:5] == b"C" and len(cdt) == 7
    events = w.s.events()
    assert [type(e) for e in events] == [DataReceived] and len(events[0].data) > 126
    assert w.s.data_to_send() == b""  # accounted when the credit reached 0, not sent twice
    assert isinstance(w.s2c(cdt)[0], CreditReceived)
    w.s.receive_data(w.c.data_to_send() + w.c.end_file())  # the third buffer under the new credit
    events = w.s.events()
    assert [type(e) for e in events] == [DataReceived, FileEnded] and events[1].counts_match  # type: ignore[union-attr]


def test_no_early_cdt_when_another_command_comes_first() -> None:
    w = _offered(credit=3)
    data = os.urandom(126)
    wire = w.c.send_data(data, True) + w.c.end_file()  # one DATA, then EFID: credit stays at 2
    w.s.receive_data(wire)
    assert not w.s.has_output
    events = w.s.events()
    assert [type(e) for e in events] == [DataReceived, FileEnded]
    assert w.s.data_to_send() == b""


def test_bad_buffer_after_good_data_buffers_keeps_the_order() -> None:
    w = _offered(credit=5)
    data = os.urandom(2 * 120)
    wire = w.c.send_data(data, False) + w.c.flush_data()
    w.s.receive_data(wire + framing.frame(b"D" + bytes(200)))  # above SDEB + 1
    events = w.s.events()
    assert isinstance(events[0], DataReceived) and events[0].data == data
    assert isinstance(events[1], SessionEnded) and events[1].reason == EsidReason.EXCHANGE_BUFFER_SIZE_ERROR
    assert len(events) == 2


def test_undecodable_buffer_in_a_run_ends_the_session_after_the_good_octets() -> None:
    w = _offered(credit=5)
    data = os.urandom(2 * 120)
    good = w.c.send_data(data, False) + w.c.flush_data()
    bad = framing.frame(b"D" + bytes([0x3F]) + bytes(10))  # announces 63 octets, has 10
    w.s.receive_data(good + bad + good)
    events = w.s.events()
    assert isinstance(events[0], DataReceived) and events[0].data == data
    assert isinstance(events[1], SessionEnded)
    assert events[1].reason == EsidReason.COMMAND_CONTAINED_INVALID_DATA and not events[1].by_peer
    assert len(events) == 2


def test_a_run_stops_where_the_credit_runs_out() -> None:
    w = _offered(credit=2)
    data = os.urandom(4 * 126)
    wire = w.c.send_data(data, False)  # two buffers: the credit
    extra = framing.frame(b"D" + bytes([20]) + bytes(20))  # the first of the next window
    w.s.receive_data(wire + extra)
    first = w.s.next_event()
    assert isinstance(first, DataReceived) and len(first.data) > 126 and data.startswith(first.data)
    assert w.s.data_to_send()[4:5] == b"C"  # the CDT is due exactly here
    second = w.s.next_event()
    assert isinstance(second, DataReceived) and second.data == bytes(20)


@pytest.mark.parametrize("split", [1, 7, 64, 1000, 5000])
def test_runs_decode_the_same_however_the_stream_is_cut(split: int) -> None:
    w = _offered(credit=7)
    records = [os.urandom(n) for n in (0, 1, 62, 63, 64, 126, 127, 500, 3000)]
    data = b"".join(records)
    got = bytearray()
    pending = w.c.send_data(data, True)
    while True:
        for i in range(0, len(pending), split):
            w.s.receive_data(pending[i : i + split])
            for ev in w.s.events():
                assert isinstance(ev, DataReceived)
                got += ev.data
            cdt = w.s.data_to_send()
            if cdt:
                w.s2c(cdt)
        pending = w.c.data_to_send()
        if not pending:
            break
    w.s.receive_data(w.c.end_file())  # the held-back last subrecord, then EFID
    events = w.s.events()
    for ev in events[:-1]:
        assert isinstance(ev, DataReceived)
        got += ev.data
    assert isinstance(events[-1], FileEnded) and events[-1].counts_match
    assert bytes(got) == data


@pytest.mark.parametrize(("sdeb", "credit"), [(128, 1), (99999, 999), (4096, 64)])
def test_transfer_round_trip(sdeb: int, credit: int) -> None:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=sdeb, credit=credit))
    data = os.urandom(200_000)
    sev = send_file(w, data)
    assert b"".join(e.data for e in sev if isinstance(e, DataReceived)) == data
    (ev,) = w.s2c(w.s.answer_end_file(True))
    assert isinstance(ev, FileConfirmed) and not ev.change_direction


def test_fixed_records_counted() -> None:
    w = started()
    recs = [bytes([i]) * 80 for i in range(10)]
    sev = send_file(w, b"", records=recs)
    ended = next(e for e in sev if isinstance(e, FileEnded))
    assert ended.counts_match and ended.records == 10 and ended.efid.record_count == 10


def test_count_mismatch_is_reported() -> None:
    w = started()
    w.c2s(w.c.send_sfid(sfid()))
    w.s2c(w.s.accept_file())
    w.c2s(w.c.send_data(b"abc", True))
    ev = w.c2s(w.c.end_file(unit_count=4))[-1]
    assert isinstance(ev, FileEnded) and not ev.counts_match and ev.octets == 3
    (ev2,) = w.s2c(w.s.answer_end_file(False, 11, "bad count"))
    assert isinstance(ev2, FileRejected) and ev2.reason == 11 and w.c.state is State.IDLESP


def test_sfna_keeps_turn() -> None:
    w = started()
    w.c2s(w.c.send_sfid(sfid()))
    (ev,) = w.s2c(w.s.refuse_file(13, retry=False, text="duplicate"))
    assert isinstance(ev, FileRefused) and ev.reason == 13 and not ev.retry and ev.text == "duplicate"
    assert w.c.state is State.IDLESP and w.s.state is State.IDLELI


def test_efpa_y_solicited_cd_and_normal_end() -> None:
    w = started()
    send_file(w, b"hello")
    (ev,) = w.s2c(w.s.answer_end_file(True, want_turn=True))
    assert isinstance(ev, FileConfirmed) and ev.change_direction
    assert w.c.state is State.IDLELI
    (turn,) = w.c2s(w.c.data_to_send())  # the CD the client sent automatically
    assert isinstance(turn, TurnReceived) and turn.solicited and w.s.state is State.IDLESP
    # a solicited Speaker may hand the turn straight back
    (back,) = w.s2c(w.s.change_direction())
    assert isinstance(back, TurnReceived) and not back.solicited and w.c.state is State.IDLESPCD
    (end,) = w.c2s(w.c.end_session())
    assert isinstance(end, SessionEnded) and end.reason == 0 and end.by_peer
    assert w.c.state is State.WF_NDISC and w.s.state is State.CLOSED


def test_eerp_nerp_rtr() -> None:
    w = started()
    e = EERP("TEST.FILE", "20240131", "1230450001", SERVER, CLIENT)
    (ev,) = w.c2s(w.c.send_eerp(e))
    assert isinstance(ev, EERPReceived) and ev.eerp == e
    (ack,) = w.s2c(w.s.data_to_send())
    assert isinstance(ack, ReceiptAcknowledged)
    n = NERP("TEST.FILE", "20240131", "1230450001", SERVER, CLIENT, CLIENT, 23)
    (ev2,) = w.c2s(w.c.send_nerp(n))
    assert isinstance(ev2, NERPReceived) and ev2.nerp.reason == 23
    w.s2c(w.s.data_to_send())
    assert w.c.state is State.IDLESP


def test_nerp_not_below_level_4() -> None:
    w = started(SessionConfig(CLIENT, "CPW", level=ProtocolLevel.V1_3))
    with pytest.raises(LocalProtocolError, match="NERP"):
        w.c.send_nerp(NERP("X", "240131", "123045", SERVER, CLIENT, CLIENT, 23))


def test_local_misuse_raises_and_changes_nothing() -> None:
    w = started()
    with pytest.raises(LocalProtocolError):
        w.c.end_session()  # ESID 00 only after an unsolicited CD
    with pytest.raises(LocalProtocolError):
        w.s.send_sfid(sfid())  # the listener may not start files
    with pytest.raises(LocalProtocolError):
        w.c.send_data(b"x")
    assert w.c.state is State.IDLESP and w.s.state is State.IDLELI


# --- restart ---------------------------------------------------------------------------------------------


def test_restart_units_and_counts() -> None:
    w = started()
    data = os.urandom(20 * 1024 + 7)
    w.c2s(w.c.send_sfid(sfid(restart=10)))
    (acc,) = w.s2c(w.s.accept_file(8))
    assert isinstance(acc, FileAccepted) and acc.restart_offset == 8 * 1024
    sev = w.c2s(w.c.send_data(data[acc.restart_offset :], True))
    sev += w.c2s(w.c.end_file())
    ended = next(e for e in sev if isinstance(e, FileEnded))
    assert ended.efid.unit_count == len(data) and ended.counts_match


V_RECORDS = [b"", b"a" * 70, b"b" * 65535, b"c", b"", b"d" * 300, b"e" * 64]


def _v_offer(w: Wire, restart: int) -> None:
    (offered,) = w.c2s(w.c.send_sfid(sfid(restart=restart, fmt=RecordFormat.VARIABLE)))
    assert isinstance(offered, FileOffered) and restarts_in_v_records(offered.sfid)


def _v_finish(w: Wire, records: list[bytes]) -> FileEnded:
    sev = w.c2s(w.c.send_records(records))
    while True:
        try:
            sev += w.c2s(w.c.end_file())
            break
        except LocalProtocolError:
            w.s2c(w.s.data_to_send())
            sev += w.c2s(w.c.data_to_send())
    return next(e for e in sev if isinstance(e, FileEnded))


def test_v_restart_counts_records_and_the_octets_the_embedders_give() -> None:
    w = started()
    _v_offer(w, restart=5)
    kept = V_RECORDS[:3]
    (acc,) = w.s2c(w.s.accept_file(3, restart_octets=sum(map(len, kept))))
    # the session cannot turn 3 V records into octets: the embedder walks the file
    assert isinstance(acc, FileAccepted) and acc.restart == 3 and acc.restart_offset == 0
    with pytest.raises(LocalProtocolError, match="set_restart_octets"):
        w.c.send_records(V_RECORDS[3:])
    with pytest.raises(LocalProtocolError, match="set_restart_octets"):
        w.c.end_file()
    with pytest.raises(LocalProtocolError, match="cannot be the data"):
        w.c.set_restart_octets(3 * 65535 + 1)
    w.c.set_restart_octets(sum(map(len, kept)))
    ended = _v_finish(w, V_RECORDS[3:])
    assert ended.counts_match
    assert ended.efid.record_count == len(V_RECORDS) == ended.records
    assert ended.efid.unit_count == sum(map(len, V_RECORDS)) == ended.octets  # whole file, no prefixes
    with pytest.raises(LocalProtocolError, match="accepted V-format file"):
        w.c.set_restart_octets(0)


def test_v_restart_with_wrong_octets_does_not_match() -> None:
    w = started()
    _v_offer(w, restart=3)
    w.s2c(w.s.accept_file(3, restart_octets=sum(map(len, V_RECORDS[:3]))))
    w.c.set_restart_octets(sum(map(len, V_RECORDS[:3])) - 1)
    ended = _v_finish(w, V_RECORDS[3:])
    assert not ended.counts_match


def test_v_accept_needs_the_octets_of_the_records_kept() -> None:
    w = started()
    _v_offer(w, restart=5)
    with pytest.raises(LocalProtocolError, match="restart_octets"):
        w.s.accept_file(2)
    with pytest.raises(LocalProtocolError, match="cannot be the data"):
        w.s.accept_file(2, restart_octets=2 * 65535 + 1)
    with pytest.raises(LocalProtocolError, match="beyond the offered"):
        w.s.accept_file(6, restart_octets=0)
    w.s2c(w.s.accept_file(0))  # from the start: nothing to tell
    w.c.send_records([b"x"])  # and the sender needs no set_restart_octets()
    with pytest.raises(LocalProtocolError, match="before the first DATA"):
        w.c.set_restart_octets(0)  # too late: DATA went out


def test_restart_octets_must_agree_with_the_unit() -> None:
    w = started()
    w.c2s(w.c.send_sfid(sfid(restart=10)))
    with pytest.raises(LocalProtocolError, match="means 8192 octets"):
        w.s.accept_file(8, restart_octets=8000)
    (acc,) = w.s2c(w.s.accept_file(8, restart_octets=8192))
    assert isinstance(acc, FileAccepted) and acc.restart_offset == 8192
    with pytest.raises(LocalProtocolError, match="accepted V-format file"):
        w.c.set_restart_octets(8192)


def test_sfpa_restart_for_a_file_without_units_is_esid_02() -> None:
    w = started()
    w.c2s(w.c.send_sfid(sfid(restart=4, fmt=RecordFormat.FIXED, lrecl=0)))
    w.s.events()
    w.c.receive_data(framing.frame(codec.encode(SFPA(2), ProtocolLevel.V2_0)))
    (ev,) = w.c.events()
    assert isinstance(ev, SessionEnded) and ev.reason == EsidReason.PROTOCOL_VIOLATION


def test_sfpa_beyond_offer_is_esid_02() -> None:
    w = started()
    w.c2s(w.c.send_sfid(sfid(restart=10)))
    w.s.events()
    w.c.receive_data(framing.frame(codec.encode(SFPA(11), ProtocolLevel.V2_0)))
    (ev,) = w.c.events()
    assert isinstance(ev, SessionEnded) and ev.reason == EsidReason.PROTOCOL_VIOLATION
    assert _esid_reason(w.c.data_to_send()) == 2


def test_restart_without_negotiation_is_esid_02() -> None:
    w = started(SessionConfig(CLIENT, "CPW"), SessionConfig(SERVER, "SPW", restart=False))
    raw = framing.frame(codec.encode(sfid(restart=3), ProtocolLevel.V2_0))
    w.s.receive_data(raw)
    (ev,) = w.s.events()
    assert isinstance(ev, SessionEnded) and ev.reason == EsidReason.PROTOCOL_VIOLATION


# --- bad input from the network ------------------------------------------------------------------------


def _listener() -> Session:
    return started().s


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (framing.frame(b"Zgarbage"), EsidReason.COMMAND_NOT_RECOGNISED),
        (framing.frame(b"D\x80"), EsidReason.PROTOCOL_VIOLATION),  # DATA while idle
        (framing.frame(b"2" + b"0" * 17), EsidReason.PROTOCOL_VIOLATION),  # SFPA to a listener
        (framing.frame(b"HABC"), EsidReason.EXCHANGE_BUFFER_SIZE_ERROR),  # truncated SFID
        (b"\x20\x00\x00\x05R", EsidReason.EXCHANGE_BUFFER_SIZE_ERROR),  # bad STH version
        (b"\x10\x00\x00\x02", EsidReason.EXCHANGE_BUFFER_SIZE_ERROR),  # bad STH length
        (b"GET / HTTP/1.1\r\n\r\n", EsidReason.EXCHANGE_BUFFER_SIZE_ERROR),
    ],
)
def test_bad_input_ends_with_reason(raw: bytes, reason: EsidReason) -> None:
    s = _listener()
    s.receive_data(raw)
    evs = s.events()
    assert isinstance(evs[-1], SessionEnded) and evs[-1].reason == reason and not evs[-1].by_peer
    assert _esid_reason(s.data_to_send()) == reason
    s.receive_data(framing.frame(b"R"))  # nothing more happens after the end
    assert s.events() == []


def test_invalid_field_is_esid_06() -> None:
    s = _listener()
    good = codec.encode(sfid(), ProtocolLevel.V2_0)
    bad = good[:112] + b"ABCDEFGHIJKLM" + good[125:]  # SFIDFSIZ not numeric
    s.receive_data(framing.frame(bad))
    (ev,) = s.events()
    assert isinstance(ev, SessionEnded) and ev.reason == EsidReason.COMMAND_CONTAINED_INVALID_DATA


def test_oversize_data_is_esid_07_and_sdeb_plus_one_tolerated() -> None:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=128))
    w.c2s(w.c.send_sfid(sfid()))
    w.s2c(w.s.accept_file())
    one_more = b"D" + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63  # 129 octets = SDEB + 1
    w.s.receive_data(framing.frame(one_more))
    (ev,) = w.s.events()
    assert isinstance(ev, DataReceived) and len(ev.data) == 126 and w.s.tolerated == 1
    w.s.receive_data(framing.frame(one_more + b"\x00"))  # SDEB + 2
    (end,) = w.s.events()
    assert isinstance(end, SessionEnded) and end.reason == EsidReason.EXCHANGE_BUFFER_SIZE_ERROR


def test_large_command_buffer_accepted_with_small_sdeb() -> None:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=128))
    long = SFID("DSN", "20240131", "1230450001", SERVER, CLIENT, description="é" * 400)
    (ev,) = w.c2s(w.c.send_sfid(long))
    assert isinstance(ev, FileOffered) and ev.sfid.description == "é" * 400


def test_split_and_coalesced_reads() -> None:
    w = started(SessionConfig(CLIENT, "CPW", sdeb=256, credit=50))
    w.c2s(w.c.send_sfid(sfid()))
    w.s2c(w.s.accept_file())
    data = os.urandom(5000)
    wire = w.c.send_data(data, True) + w.c.end_file()
    got: list[Event] = []
    for i in range(0, len(wire), 7):
        w.s.receive_data(wire[i : i + 7])
        got += w.s.events()
    assert b"".join(e.data for e in got if isinstance(e, DataReceived)) == data
    assert isinstance(got[-1], FileEnded) and got[-1].counts_match


def test_peer_esid_and_connection_lost() -> None:
    w = started()
    (ev,) = w.s2c(w.s.end_session(EsidReason.TIME_OUT, "idle"))
    assert isinstance(ev, SessionEnded) and ev.reason == 9 and ev.by_peer and ev.text == "idle"
    w2 = started()
    w2.c.connection_lost()
    (lost,) = w2.c.events()
    assert isinstance(lost, SessionEnded) and lost.connection_lost


# --- the embedding API helpers ---------------------------------------------------------------------


def test_timestamps_unique_with_per_second_counter() -> None:
    import datetime as dt

    from oftp2_provider.protocol.api import TimestampGenerator

    fixed = dt.datetime(2024, 1, 31, 12, 30, 45, 999, tzinfo=dt.timezone.utc)
    gen = TimestampGenerator(lambda: fixed)
    stamps = [gen() for _ in range(10001)]
    assert stamps[0] == ("20240131", "1230450001")
    assert stamps[9998] == ("20240131", "1230459999")
    assert stamps[9999] == ("20240131", "1230460001")  # counter exhausted: next second
    assert len(set(stamps)) == len(stamps)


def test_outbound_file_validation_and_passwords(tmp_path: object) -> None:
    from pathlib import Path

    from oftp2_provider.protocol.api import OutboundFile, passwords_match

    with pytest.raises(ValueError, match="exactly one"):
        OutboundFile("D", CLIENT, SERVER)
    with pytest.raises(ValueError, match="size"):
        OutboundFile("D", CLIENT, SERVER, source=lambda off: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="lrecl"):
        OutboundFile("D", CLIENT, SERVER, path=Path("x"), format=RecordFormat.FIXED)
    f = OutboundFile("D", CLIENT, SERVER, path=Path("x"))
    assert len(f.date) == 8 and len(f.time) == 10
    assert passwords_match("Secret", "SECRET  ")
    assert not passwords_match("Secret", "SECRET", case_sensitive=True)
    with pytest.raises(ValueError, match="password"):
        SessionConfig(CLIENT, "123456789")
    with pytest.raises(ValueError, match="sdeb"):
        SessionConfig(CLIENT, "PW", sdeb=127)
