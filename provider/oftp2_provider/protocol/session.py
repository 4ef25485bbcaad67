"""The public sans-I/O OFTP session: bytes in → events out, method calls → bytes out.

A :class:`Session` never touches a socket, a clock or a file.  The embedder (the asyncio drivers in
:mod:`oftp2_provider.protocol.transport`, or a test) feeds received octets to
:meth:`Session.receive_data`, pulls typed events with :meth:`Session.next_event` and writes the bytes
returned by the command methods (``send_sfid``, ``accept_file``, ``send_data`` …) and by
:meth:`Session.data_to_send`.

Some answers are automatic and are queued for :meth:`Session.data_to_send`: the Initiator's SSID
after SSRM, CDT when the Listener's credit runs out, RTR after an EERP/NERP, CD after EFPA(Y), the
secure-authentication exchange, and ESID when the peer breaks the protocol.  Every method that
returns bytes also returns whatever was queued before it, so the wire order is always right.

Errors from the peer never raise: the session queues ESID with the right reason code, logs the
problem, and reports :class:`SessionEnded`.  Calling a method in a state where the protocol does
not allow it raises :class:`~oftp2_provider.protocol.errors.LocalProtocolError` and changes nothing.
"""

from __future__ import annotations

import hmac
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from . import codec, framing, records
from .api import (
    AcceptDecision,
    Negotiated,
    PartnerConfig,
    Role,
    SessionConfig,
    passwords_match,
)
from .commands import (
    AUCH,
    AURP,
    CD,
    CDT,
    EERP,
    EFID,
    EFNA,
    EFPA,
    ESID,
    NERP,
    RTR,
    SECD,
    SFID,
    SFNA,
    SFPA,
    SSID,
    SSRM,
    Command,
    ProtocolLevel,
    RecordFormat,
    SecurityLevel,
    SendReceive,
)
from .errors import DecodeError, EsidReason, FieldError, LocalProtocolError, RemoteProtocolError
from .state import FINAL_STATES, State, StateMachine

__all__ = [
    "ConnectionRequested",
    "CreditReceived",
    "DataReceived",
    "EERPReceived",
    "Event",
    "FileAccepted",
    "FileConfirmed",
    "FileEnded",
    "FileOffered",
    "FileRefused",
    "FileRejected",
    "NERPReceived",
    "ReceiptAcknowledged",
    "Session",
    "SessionEnded",
    "SessionStarted",
    "TurnReceived",
    "restart_unit",
    "restarts_in_v_records",
]

log = logging.getLogger(__name__)

#: At most this many file octets are joined into one DataReceived event.
_COALESCE_OCTETS = 1 << 20
_CDT_FRAME = framing.frame(b"C  ")

# ---------------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class ConnectionRequested:
    """Responder: the Initiator's SSID arrived; answer with :meth:`Session.accept_connection`."""

    ssid: SSID


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The SSID exchange (and secure authentication) is complete."""

    negotiated: Negotiated
    speaker: bool


@dataclass(frozen=True, slots=True)
class FileOffered:
    """Listener: the Speaker offered a file; answer with ``accept_file`` or ``refuse_file``."""

    sfid: SFID


@dataclass(frozen=True, slots=True)
class FileAccepted:
    """Speaker: SFPA — send DATA from ``restart_offset`` octets (``restart`` in protocol units).

    For an unsecured V file (:func:`restarts_in_v_records`) ``restart`` counts records of varying
    length and ``restart_offset`` is 0: the embedder finds where record ``restart`` ends, sends
    from there and reports the data octets it skipped with :meth:`Session.set_restart_octets`
    before sending DATA.
    """

    sfid: SFID
    restart: int
    restart_offset: int


@dataclass(frozen=True, slots=True)
class FileRefused:
    """Speaker: SFNA."""

    sfid: SFID
    reason: int
    retry: bool
    text: str


@dataclass(frozen=True, slots=True)
class CreditReceived:
    """Speaker: CDT — more DATA may be sent (held buffers are now in :meth:`Session.data_to_send`)."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Listener: decoded file octets from one or more consecutive DATA buffers and the number of
    records they completed."""

    data: bytes | bytearray
    records: int


@dataclass(frozen=True, slots=True)
class FileEnded:
    """Listener: EFID; ``octets``/``records`` are what this session counted (restart included).

    ``counts_match`` tells whether the EFID counts agree; answer with ``answer_end_file``.
    """

    sfid: SFID
    efid: EFID
    octets: int
    records: int
    counts_match: bool


@dataclass(frozen=True, slots=True)
class FileConfirmed:
    """Speaker: EFPA; with ``change_direction`` the session already sent CD and we are Listener."""

    sfid: SFID
    change_direction: bool


@dataclass(frozen=True, slots=True)
class FileRejected:
    """Speaker: EFNA."""

    sfid: SFID
    reason: int
    text: str


@dataclass(frozen=True, slots=True)
class EERPReceived:
    """Listener: an EERP.  RTR goes out with the next output (unless the session is aborted first)."""

    eerp: EERP


@dataclass(frozen=True, slots=True)
class NERPReceived:
    """Listener: a NERP.  RTR goes out with the next output (unless the session is aborted first)."""

    nerp: NERP


@dataclass(frozen=True, slots=True)
class ReceiptAcknowledged:
    """Speaker: RTR after our EERP/NERP."""


@dataclass(frozen=True, slots=True)
class TurnReceived:
    """We became the Speaker through CD; ``solicited`` = we asked for it with EFPA(Y)."""

    solicited: bool


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session is over: ESID received (``by_peer``), ESID sent, or the connection was lost."""

    reason: int
    text: str
    by_peer: bool
    connection_lost: bool = False


Event = (
    ConnectionRequested
    | SessionStarted
    | FileOffered
    | FileAccepted
    | FileRefused
    | CreditReceived
    | DataReceived
    | FileEnded
    | FileConfirmed
    | FileRejected
    | EERPReceived
    | NERPReceived
    | ReceiptAcknowledged
    | TurnReceived
    | SessionEnded
)


def restart_unit(sfid: SFID) -> int:
    """Octets per restart unit: 1024 for U/T and secured files, LRECL for F, 0 for V.

    An unsecured V file restarts in records too, but they vary in length: its restart position
    maps to octets only by walking the file's length prefixes (see :func:`restarts_in_v_records`
    and :mod:`~oftp2_provider.protocol.vrecords`).
    """
    secured = sfid.security != SecurityLevel.NONE or sfid.compression != 0 or sfid.envelope != 0
    if secured or sfid.format in (RecordFormat.UNSTRUCTURED, RecordFormat.TEXT):
        return 1024
    if sfid.format is RecordFormat.FIXED and sfid.lrecl > 0:
        return sfid.lrecl
    return 0


def restarts_in_v_records(sfid: SFID) -> bool:
    """True for an unsecured V file: its restart position counts records of varying length.

    The session cannot turn such a position into octets; the embedder finds the record boundary
    and tells the session the data octets it skipped (``accept_file(restart_octets=…)`` on the
    receiving side, :meth:`Session.set_restart_octets` on the sending side).
    """
    return sfid.format is RecordFormat.VARIABLE and restart_unit(sfid) == 0


def _can(own: SendReceive, peer: SendReceive) -> tuple[bool, bool]:
    """(we can send, we can receive) for the two SSIDSR values."""
    send = own in (SendReceive.SEND, SendReceive.BOTH) and peer in (SendReceive.RECEIVE, SendReceive.BOTH)
    recv = own in (SendReceive.RECEIVE, SendReceive.BOTH) and peer in (SendReceive.SEND, SendReceive.BOTH)
    return send, recv


# ---------------------------------------------------------------------------------------------------
# The session


class Session:
    """One OFTP session (one TCP connection), sans I/O.

    ``role`` is fixed for the session.  An Initiator may pass ``partner`` to check the Responder's
    SSID code and password (ESID 03/04 on mismatch) and to choose the password it presents.
    """

    def __init__(
        self,
        role: Role,
        config: SessionConfig,
        *,
        partner: PartnerConfig | None = None,
        name: str = "",
    ) -> None:
        self.role = Role(role)
        self.config = config
        self.partner = partner
        self.name = name or role.value
        self._sm = StateMachine(State.I_WF_RM if self.role is Role.INITIATOR else State.A_NC_ONLY)
        self._sm.set_role(self.role is Role.INITIATOR)
        self._sm.secure_auth = config.secure_auth
        self._decoder = framing.StreamDecoder()
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self.negotiated: Negotiated | None = None
        self._level: ProtocolLevel = config.level
        self._peer_ssid: SSID | None = None
        self._challenge_secret = b""
        self._ended: SessionEnded | None = None
        # Speaker file state
        self._tx_sfid: SFID | None = None
        self._tx_encoder: records.DataEncoder | None = None
        self._tx_held: deque[bytes] = deque()  # DATA exchange buffers waiting for credit (no STH)
        self._tx_octets = 0
        self._tx_records = 0
        self._tx_restart_octets = 0
        self._tx_restart_records = 0
        self._tx_restart_unknown = False  # V restart: set_restart_octets() is still due
        self._tx_sth: tuple[int, bytes] = (0, b"")
        # Listener file state
        self._rx_sfid: SFID | None = None
        self._rx_decoder: records.DataDecoder | None = None
        self._rx_octets = 0
        self._rx_records = 0
        self._rx_restart_octets = 0
        self._rx_restart_records = 0
        self._rx_efid: EFID | None = None
        self._rtr_at: int | None = None
        # a CDT queued as soon as the window's last DATA buffer had arrived, before decoding it
        self._cdt_early = False

    # ------------------------------------------------------------------------------------------------
    # properties
    @property
    def state(self) -> State:
        """The current state-machine state."""
        return self._sm.state

    @property
    def level(self) -> ProtocolLevel:
        """The negotiated protocol level (our own level before the SSID exchange)."""
        return self._level

    @property
    def is_speaker(self) -> bool:
        """True when we hold the turn."""
        return self._sm.is_speaker

    @property
    def is_listener(self) -> bool:
        """True when the partner holds the turn."""
        return self._sm.is_listener

    @property
    def ended(self) -> SessionEnded | None:
        """How the session ended, or None while it is running."""
        return self._ended

    @property
    def closed(self) -> bool:
        """True once ESID was sent or received (or the connection was lost)."""
        return self._sm.state in FINAL_STATES

    @property
    def credit(self) -> int:
        """Remaining credit (Speaker: DATA buffers we may still send)."""
        return self._sm.credit

    @property
    def data_blocked(self) -> bool:
        """Speaker: DATA buffers are held back until a CDT arrives."""
        return bool(self._tx_held) or self._sm.state is State.OPOWFC

    @property
    def held_buffers(self) -> int:
        """Speaker: DATA buffers encoded but waiting for credit."""
        return len(self._tx_held)

    @property
    def tolerated(self) -> int:
        """How many peer irregularities were tolerated (stray CDT, SDEB+1 DATA)."""
        return self._sm.tolerated

    # ------------------------------------------------------------------------------------------------
    # output helpers
    def _queue(self, command: Command) -> None:
        self._out.append(framing.frame(codec.encode(command, self._level)))

    def _take(self) -> bytes:
        if self._rtr_at is not None:
            # the RTR owed for an EERP/NERP goes out once the embedder has handled the receipt
            self._out.insert(self._rtr_at, framing.frame(codec.encode(RTR(), self._level)))
            self._rtr_at = None
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        return data

    def data_to_send(self) -> bytes:
        """Bytes queued by automatic answers (SSID, CDT, RTR, CD, AUCH/AURP, ESID), in order."""
        return self._take()

    def _send(self, command: Command, *, change_direction: bool = False) -> bytes:
        if self._sm.state in FINAL_STATES and not isinstance(command, ESID):
            raise LocalProtocolError(
                f"session is over ({self._sm.state.value}); cannot send {type(command).__name__}"
            )
        name = type(command).__name__
        try:
            buf = framing.frame(codec.encode(command, self._level))
        except FieldError as exc:
            raise LocalProtocolError(f"cannot encode {name} at level {int(self._level)}: {exc}") from exc
        self._sm.send(name, change_direction=change_direction)
        self._out.append(buf)
        return self._take()

    # ------------------------------------------------------------------------------------------------
    # start-up
    def start(self) -> bytes:
        """Responder: the SSRM that opens the session."""
        if self.role is not Role.RESPONDER or self._sm.state is not State.A_NC_ONLY or self._out:
            raise LocalProtocolError("start() is for a new Responder session")
        self._out.append(framing.frame(codec.encode(SSRM(), self._level)))
        return self._take()

    def _own_password(self) -> str:
        if self.partner is not None and self.partner.our_password is not None:
            return self.partner.our_password
        return self.config.password

    def _initiator_ssid(self) -> SSID:
        c = self.config
        return SSID(
            level=c.level,
            code=c.odette_id,
            password=self._own_password(),
            sdeb=c.sdeb,
            send_receive=c.send_receive,
            compression=c.compression,
            restart=c.restart,
            special_logic=False,
            credit=c.credit,
            secure_auth=c.secure_auth and c.level >= ProtocolLevel.V2_0,
            user_data=c.user_data,
        )

    def accept_connection(self, decision: AcceptDecision | None = None) -> bytes:
        """Responder: answer the Initiator's SSID (accept with our SSID, or reject with ESID)."""
        if self._sm.state is not State.A_WF_CONRS or self._peer_ssid is None:
            raise LocalProtocolError(f"no connection request pending (state {self._sm.state.value})")
        decision = decision or AcceptDecision.accept()
        peer = self._peer_ssid
        if not decision.accepted:
            return self._abort_local(decision.reason, decision.text)
        partner = decision.partner or self.partner
        c = self.config
        level = min(peer.level, c.level)
        for cap in (partner.max_level if partner else None, decision.level):
            if cap is not None:
                level = min(level, ProtocolLevel(cap))
        sdeb = min(peer.sdeb, c.sdeb, partner.sdeb if partner and partner.sdeb else 99999)
        credit = min(peer.credit, c.credit, partner.credit if partner and partner.credit else 999)
        own_sr = partner.send_receive if partner and partner.send_receive else c.send_receive
        can_send, can_recv = _can(own_sr, peer.send_receive)
        if not (can_send or can_recv):
            return self._abort_local(
                EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
                f"send/receive modes incompatible: ours {own_sr.value}, yours {peer.send_receive.value}",
            )
        want_auth = c.secure_auth
        if partner is not None and partner.secure_auth is not None:
            want_auth = partner.secure_auth
        peer_auth = peer.secure_auth if peer.level >= ProtocolLevel.V2_0 else False
        if want_auth and level < ProtocolLevel.V2_0:
            return self._abort_local(
                EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE,
                "secure authentication required but the level is below 2.0",
            )
        if peer_auth != want_auth:
            return self._abort_local(
                EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE,
                f"SSIDAUTH mismatch: ours {'Y' if want_auth else 'N'}, yours {'Y' if peer_auth else 'N'}",
            )
        if want_auth and c.authenticator is None:
            return self._abort_local(
                EsidReason.RESOURCES_NOT_AVAILABLE, "secure authentication not configured"
            )
        answer_sr = own_sr
        if own_sr is SendReceive.BOTH and peer.send_receive is not SendReceive.BOTH:
            answer_sr = SendReceive.RECEIVE if peer.send_receive is SendReceive.SEND else SendReceive.SEND
        answer = SSID(
            level=level,
            code=c.odette_id,
            password=partner.our_password if partner and partner.our_password is not None else c.password,
            sdeb=sdeb,
            send_receive=answer_sr,
            compression=peer.compression and c.compression,
            restart=peer.restart and c.restart,
            special_logic=False,
            credit=credit,
            secure_auth=want_auth,
            user_data=c.user_data,
        )
        self._level = level
        self._sm.secure_auth = want_auth
        self._sm.window = credit
        self.negotiated = Negotiated(
            level=level,
            sdeb=sdeb,
            credit=credit,
            compression=answer.compression,
            restart=answer.restart,
            secure_auth=want_auth,
            can_send=can_send,
            can_receive=can_recv,
            partner_code=peer.code,
            partner_password=peer.password,
            partner_user_data=peer.user_data,
        )
        data = self._send(answer)
        if not want_auth:
            self._events.append(SessionStarted(self.negotiated, speaker=False))
        return data

    def reject_connection(self, reason: int, text: str = "") -> bytes:
        """Responder: refuse the Initiator's SSID with ESID ``reason`` (03, 04, 08 …)."""
        return self.accept_connection(AcceptDecision.reject(reason, text))

    # ------------------------------------------------------------------------------------------------
    # Speaker commands
    def send_sfid(self, sfid: SFID) -> bytes:
        """Offer a file (SFID)."""
        if self.negotiated is not None and not self.negotiated.can_send:
            raise LocalProtocolError("the negotiated send/receive mode does not let us send files")
        if sfid.restart and not (self.negotiated and self.negotiated.restart):
            raise LocalProtocolError("SFID restart position given but restart was not negotiated")
        data = self._send(sfid)
        self._tx_sfid = sfid
        self._tx_held.clear()
        return data

    def _release_held(self) -> None:
        held = self._tx_held
        n = self._sm.send_data_buffers(len(held)) if held else 0
        if not n:
            return
        out = self._out
        size, sth = self._tx_sth  # the STH of the last length seen: almost every buffer is full
        for _ in range(n):
            buf = held.popleft()
            if len(buf) != size:
                size, sth = len(buf), framing.header(len(buf))
            out.append(sth)  # STH and buffer are joined once in _take()
            out.append(buf)
        self._tx_sth = size, sth

    def send_data(self, chunk: bytes | bytearray | memoryview, eor: bool = False) -> bytes:
        """Speaker: encode file octets into DATA buffers; returns what the credit allows to send now.

        Buffers beyond the credit are held and released by the next CDT (see :attr:`data_blocked`).
        ``eor`` marks the end of a record (F/V) or of the whole file (U/T).
        """
        if self._tx_encoder is None or self._sm.state not in (State.OPO, State.OPOWFC):
            raise LocalProtocolError(f"cannot send DATA in state {self._sm.state.value}")
        if self._tx_restart_unknown:
            raise LocalProtocolError("V-format restart: call set_restart_octets() before sending DATA")
        self._tx_octets += len(chunk)
        if eor:
            self._tx_records += 1
        self._tx_held.extend(self._tx_encoder.write(chunk, end_of_record=eor))
        self._release_held()
        return self._take()

    def send_records(self, recs: Sequence[bytes]) -> bytes:
        """Speaker: send complete records (F/V) in one call; like ``send_data(r, eor=True)`` for each."""
        if self._tx_encoder is None or self._sm.state not in (State.OPO, State.OPOWFC):
            raise LocalProtocolError(f"cannot send DATA in state {self._sm.state.value}")
        if self._tx_restart_unknown:
            raise LocalProtocolError("V-format restart: call set_restart_octets() before sending DATA")
        enc, held = self._tx_encoder, self._tx_held
        for r in recs:
            held.extend(enc.write(r, end_of_record=True))
            self._tx_octets += len(r)
        self._tx_records += len(recs)
        self._release_held()
        return self._take()

    def set_restart_octets(self, octets: int) -> None:
        """Speaker, after :class:`FileAccepted` of a V file with a restart: the data octets (length
        prefixes excluded) of the ``restart`` records skipped, so that EFIDUCNT covers the whole file.
        """
        sfid = self._tx_sfid
        if sfid is None or self._tx_encoder is None or not restarts_in_v_records(sfid):
            raise LocalProtocolError("set_restart_octets() is for an accepted V-format file")
        if self._tx_octets or self._tx_records:
            raise LocalProtocolError("set_restart_octets() must come before the first DATA")
        if not 0 <= octets <= self._tx_restart_records * 0xFFFF:
            raise LocalProtocolError(
                f"{octets} octets cannot be the data of {self._tx_restart_records} V records"
            )
        self._tx_restart_octets = octets
        self._tx_restart_unknown = False

    def flush_data(self) -> bytes:
        """Speaker: send (or hold) the partly filled last DATA buffer."""
        if self._tx_encoder is None:
            raise LocalProtocolError("no file is being sent")
        self._tx_held.extend(self._tx_encoder.flush())
        self._release_held()
        return self._take()

    def end_file(self, record_count: int | None = None, unit_count: int | None = None) -> bytes:
        """Speaker: EFID with the totals of the whole file (defaults: what went through ``send_data``).

        Flushes the encoder first; raises :class:`LocalProtocolError` while DATA is still held back
        for lack of credit (wait for :class:`CreditReceived`, then call again).
        """
        if self._tx_sfid is None or self._tx_encoder is None:
            raise LocalProtocolError("no file is being sent")
        if self._tx_restart_unknown and unit_count is None:
            raise LocalProtocolError("V-format restart: call set_restart_octets() before end_file()")
        self._tx_held.extend(self._tx_encoder.flush())
        self._release_held()
        if self.data_blocked:
            # the released DATA stays queued for data_to_send() / the next call
            raise LocalProtocolError("DATA is waiting for credit: EFID must wait for the next CDT")
        fmt = self._tx_sfid.format
        if record_count is None:
            record_count = (
                self._tx_restart_records + self._tx_records
                if fmt in (RecordFormat.FIXED, RecordFormat.VARIABLE)
                else 0
            )
        if unit_count is None:
            unit_count = self._tx_restart_octets + self._tx_octets
        data = self._send(EFID(record_count=record_count, unit_count=unit_count))
        self._tx_encoder = None
        return data

    def send_eerp(self, eerp: EERP) -> bytes:
        """Speaker: send an End-to-End Response (wait for :class:`ReceiptAcknowledged`)."""
        return self._send(eerp)

    def send_nerp(self, nerp: NERP) -> bytes:
        """Speaker: send a Negative End Response (level ≥ 4)."""
        if self._level < ProtocolLevel.V1_4:
            raise LocalProtocolError("NERP does not exist below protocol level 4 (OFTP 1.4)")
        return self._send(nerp)

    def change_direction(self) -> bytes:
        """Speaker: hand the turn to the partner (CD)."""
        return self._send(CD())

    def end_session(self, reason: int = EsidReason.NORMAL, text: str = "") -> bytes:
        """Send ESID.  Reason 00 is allowed only right after an unsolicited CD; others at any time."""
        if self._sm.state in FINAL_STATES:
            return self._take()
        if int(reason) == 0:
            data = self._send(ESID(0, text))
            self._finish(SessionEnded(0, text, by_peer=False))
            return data
        return self._abort_local(int(reason), text)

    # ------------------------------------------------------------------------------------------------
    # Listener commands
    def accept_file(self, restart: int = 0, *, restart_octets: int | None = None) -> bytes:
        """Listener: SFPA; ``restart`` (records or 1 KiB blocks) must be ≤ the offered position.

        For an unsecured V file (:func:`restarts_in_v_records`) a restart needs ``restart_octets``:
        the data octets (length prefixes excluded) of the ``restart`` records kept, which the EFID
        unit count includes.  For other files it follows from the restart unit.
        """
        sfid = self._rx_sfid
        if sfid is None or self._sm.state is not State.OPIWFA:
            raise LocalProtocolError(f"no file offer pending (state {self._sm.state.value})")
        if restart < 0 or restart > sfid.restart:
            raise LocalProtocolError(f"restart {restart} is beyond the offered position {sfid.restart}")
        unit = restart_unit(sfid)
        octets = restart * unit
        if restarts_in_v_records(sfid):
            if restart and restart_octets is None:
                raise LocalProtocolError(
                    "V-format restart needs restart_octets (the data of the records kept)"
                )
            octets = restart_octets or 0
            if not 0 <= octets <= restart * 0xFFFF:
                raise LocalProtocolError(f"{octets} octets cannot be the data of {restart} V records")
        elif restart and not unit:
            raise LocalProtocolError(f"{sfid.format.value} file without a record length: accept from 0")
        elif restart_octets is not None and restart_octets != octets:
            raise LocalProtocolError(f"restart {restart} means {octets} octets, not {restart_octets}")
        data = self._send(SFPA(restart))
        self._rx_restart_octets = octets
        self._rx_restart_records = (
            restart if sfid.format in (RecordFormat.FIXED, RecordFormat.VARIABLE) else 0
        )
        self._rx_octets = 0
        self._rx_records = 0
        self._cdt_early = False
        self._rx_decoder = records.DataDecoder(sfid.format, v_prefix=sfid.format is RecordFormat.VARIABLE)
        return data

    def refuse_file(self, reason: int, retry: bool = False, text: str = "") -> bytes:
        """Listener: SFNA with ``reason`` (and whether a later retry may succeed).

        ``text`` exists from level 5 on; below it is logged (debug) and not sent.
        """
        data = self._send(SFNA(int(reason), retry, self._reason_text("SFNA", text)))
        self._rx_sfid = None
        return data

    def answer_end_file(
        self, ok: bool = True, reason: int = 0, text: str = "", want_turn: bool = False
    ) -> bytes:
        """Listener: EFPA (``ok``; ``want_turn`` asks for the turn) or EFNA with ``reason``.

        The EFNA ``text`` exists from level 5 on; below it is logged (debug) and not sent.
        """
        if self._sm.state is not State.CLIWFA:
            raise LocalProtocolError(f"no EFID to answer (state {self._sm.state.value})")
        if ok:
            data = self._send(EFPA(want_turn), change_direction=want_turn)
        else:
            data = self._send(EFNA(int(reason) or 99, self._reason_text("EFNA", text)))
        self._rx_sfid = None
        self._rx_decoder = None
        return data

    def _reason_text(self, name: str, text: str) -> str:
        if text and self._level < ProtocolLevel.V2_0:
            log.debug("%s reason text not sent at level %d: %s", name, int(self._level), text)
            return ""
        return text

    # ------------------------------------------------------------------------------------------------
    # input
    def receive_data(self, data: bytes) -> None:
        """Feed octets received from the network (b"" is ignored; use ``connection_lost``)."""
        if data and self._sm.state is not State.CLOSED:
            self._decoder.feed(data)
            sm = self._sm
            if sm.state is State.OPI and not self._cdt_early and sm.credit > 0:
                # The Speaker's credit runs out within what has arrived: the CDT is due now, so
                # queue it before the window is decoded (the Speaker can start the next window
                # meanwhile); _data() accounts for it when the credit reaches 0.
                if self._decoder.count_leading(0x44, sm.credit) >= sm.credit:
                    self._cdt_early = True
                    self._out.append(_CDT_FRAME)

    @property
    def has_output(self) -> bool:
        """True when bytes are queued for :meth:`data_to_send` (for example an early CDT)."""
        return bool(self._out)

    def connection_lost(self) -> None:
        """The transport is gone; reports :class:`SessionEnded` unless the session already ended."""
        if self._ended is None:
            state = self._sm.state
            self._sm.close()
            clean = state is State.WF_NDISC
            self._finish(
                SessionEnded(
                    EsidReason.UNSPECIFIED, "connection lost", by_peer=True, connection_lost=not clean
                )
            )
        else:
            self._sm.close()

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed.

        Consecutive DATA buffers that are already received come as one :class:`DataReceived`
        (up to about 1 MiB); the run stops at any other command and as soon as an automatic
        answer (a due CDT) is queued, so that it can go out at once.
        """
        events = self._events
        while not events:
            if self._sm.state is State.CLOSED or self._ended is not None:
                return None
            if self._sm.state is State.OPI and self._rx_decoder is not None:
                run = self._data_run()
                if run is not None:
                    return run
            if not self._pump_one():
                return None
        ev = events.popleft()
        if type(ev) is DataReceived and not events and (self._cdt_early or not self._out):
            return self._coalesce(ev)
        return ev

    def _data_run(self) -> DataReceived | None:
        """Listener fast path: the DATA buffers at the front, within the credit, decoded in one go.

        Same outcome as handling them one by one: the credit is counted, a CDT is queued when it
        reaches 0 (the run ends there), and a buffer that cannot be decoded ends the session after
        the octets decoded before it.  Anything unusual (an oversize buffer, no credit, another
        command) is left to the general path.
        """
        sm = self._sm
        neg = self.negotiated
        decoder = self._rx_decoder
        if sm.credit <= 0 or neg is None or decoder is None:
            return None
        taken = self._decoder.take_leading(0x44, sm.credit, neg.sdeb, _COALESCE_OCTETS)
        if taken is None:
            return None
        run, ends = taken
        data, recs, done, error = decoder.feed_run(run, ends)
        if done:
            sm.receive_data_buffers(done)
        self._rx_octets = decoder.unit_count
        self._rx_records = decoder.record_count
        self._cdt_if_due()
        if error is not None:
            self._protocol_error(error)
        return DataReceived(data, recs)

    def _pump_one(self) -> bool:
        """Decode and handle one exchange buffer; False when no complete buffer is available."""
        try:
            buf = self._decoder.next_buffer()
        except DecodeError as exc:
            self._protocol_error(exc)
            return True
        if buf is None:
            return False
        try:
            self._handle(buf)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
        except FieldError as exc:
            self._protocol_error(RemoteProtocolError(str(exc), EsidReason.COMMAND_CONTAINED_INVALID_DATA))
        return True

    def _coalesce(self, first: DataReceived) -> DataReceived:
        parts = [first.data]
        size = len(first.data)
        records = first.records
        decoder = self._decoder
        while size < _COALESCE_OCTETS and (self._cdt_early or not self._out) and self._ended is None:
            try:
                buf = decoder.next_buffer()
            except DecodeError as exc:
                self._protocol_error(exc)
                break
            if buf is None:
                break
            try:
                if buf[:1] == b"D":
                    data, recs = self._data(buf)
                    parts.append(data)
                    size += len(data)
                    records += recs
                    continue
                self._handle(buf)  # another command: its events follow this one
            except RemoteProtocolError as exc:
                self._protocol_error(exc)
            except FieldError as exc:
                self._protocol_error(RemoteProtocolError(str(exc), EsidReason.COMMAND_CONTAINED_INVALID_DATA))
            break
        if len(parts) == 1:
            return first
        return DataReceived(b"".join(parts), records)

    def events(self) -> list[Event]:
        """All events available now."""
        out: list[Event] = []
        while (ev := self.next_event()) is not None:
            out.append(ev)
        return out

    # ------------------------------------------------------------------------------------------------
    # internals
    def _finish(self, ended: SessionEnded) -> None:
        if self._ended is None:
            self._ended = ended
            self._events.append(ended)

    def _abort_local(self, reason: int, text: str, *, take: bool = True) -> bytes:
        self._rtr_at = None  # a receipt we could not handle is not acknowledged
        try:
            buf = framing.frame(codec.encode(ESID(int(reason), text[:200]), self._esid_level()))
        except FieldError:
            buf = framing.frame(codec.encode(ESID(int(reason)), self._esid_level()))
        self._sm.state = State.WF_NDISC
        self._out.append(buf)
        self._finish(SessionEnded(int(reason), text, by_peer=False))
        return self._take() if take else b""

    def _esid_level(self) -> ProtocolLevel:
        if self.negotiated is None and self._peer_ssid is not None:
            return min(self._peer_ssid.level, self.config.level)
        return self._level

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        reason = int(exc.reason)
        log.warning("%s: peer protocol error, ending with ESID %02d: %s", self.name, reason, exc)
        self._abort_local(reason, str(exc), take=False)

    def _handle(self, buf: bytes) -> None:
        if buf[:1] == b"D":
            self._events.append(DataReceived(*self._data(buf)))
            return
        cmd = codec.decode(buf, self._level)
        name = type(cmd).__name__
        state = self._sm.state
        if isinstance(cmd, ESID):
            self._sm.receive("ESID")
            if cmd.reason == 0 and state is not State.IDLELICD:
                log.info("%s: peer ended with ESID 00 in state %s (tolerated)", self.name, state.value)
            self._finish(SessionEnded(cmd.reason, cmd.text, by_peer=True))
            return
        if state is State.WF_NDISC:
            return  # we already ended; ignore what crosses our ESID
        if isinstance(cmd, EFPA):
            self._sm.receive(name, change_direction=cmd.change_direction)
        else:
            self._sm.receive(name)
        handler = getattr(self, "_on_" + name)
        handler(cmd, state)

    def _data(self, buf: bytes) -> tuple[bytes, int]:
        """A DATA buffer: credit, decoding, a due CDT; returns (file octets, records completed)."""
        neg = self.negotiated
        if neg is not None and len(buf) > neg.sdeb:
            if len(buf) > neg.sdeb + 1:
                raise RemoteProtocolError(
                    f"DATA buffer of {len(buf)} octets exceeds the negotiated {neg.sdeb}",
                    EsidReason.EXCHANGE_BUFFER_SIZE_ERROR,
                )
            self._sm.tolerated += 1
            log.info("%s: tolerating a DATA buffer of SDEB+1 (%d) octets", self.name, len(buf))
        sm = self._sm
        sm.receive("DATA")
        decoder = self._rx_decoder
        assert decoder is not None
        data, recs = decoder.feed(memoryview(buf)[1:])
        self._rx_octets = decoder.unit_count
        self._rx_records = decoder.record_count
        self._cdt_if_due()
        return data, recs

    def _cdt_if_due(self) -> None:
        """Listener: the credit reached 0 — send CDT (unless receive_data() queued it already)."""
        sm = self._sm
        if sm.listener_needs_cdt():
            sm.send("CDT")
            if self._cdt_early:
                self._cdt_early = False
            else:
                self._out.append(_CDT_FRAME)

    # -- per-command handlers (state already advanced) ---------------------------------------------
    def _on_SSRM(self, cmd: SSRM, prev: State) -> None:
        self._sm.send("SSID")
        self._queue(self._initiator_ssid())

    def _on_SSID(self, cmd: SSID, prev: State) -> None:
        self._peer_ssid = cmd
        if self.role is Role.RESPONDER:
            self._events.append(ConnectionRequested(cmd))
            return
        c = self.config
        fail = EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE
        if cmd.level > c.level:
            raise RemoteProtocolError(
                f"answered level {int(cmd.level)} is above our proposal {int(c.level)}", fail
            )
        if cmd.sdeb > c.sdeb:
            raise RemoteProtocolError(f"answered SDEB {cmd.sdeb} is above our proposal {c.sdeb}", fail)
        if cmd.credit > c.credit:
            raise RemoteProtocolError(f"answered credit {cmd.credit} is above our proposal {c.credit}", fail)
        can_send, can_recv = _can(c.send_receive, cmd.send_receive)
        if not (can_send or can_recv):
            raise RemoteProtocolError(
                f"send/receive modes incompatible: {c.send_receive.value}/{cmd.send_receive.value}", fail
            )
        ours = c.secure_auth and c.level >= ProtocolLevel.V2_0
        theirs = cmd.secure_auth if cmd.level >= ProtocolLevel.V2_0 else False
        if ours != theirs:
            raise RemoteProtocolError(
                f"SSIDAUTH mismatch: ours {'Y' if ours else 'N'}, answer {'Y' if theirs else 'N'}",
                EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE,
            )
        if self.partner is not None:
            if cmd.code.strip().upper() != self.partner.odette_id.strip().upper():
                raise RemoteProtocolError(
                    f"responder identified as {cmd.code!r}, expected {self.partner.odette_id!r}",
                    EsidReason.USER_CODE_NOT_KNOWN,
                )
            if not passwords_match(
                self.partner.password, cmd.password, case_sensitive=c.password_case_sensitive
            ):
                raise RemoteProtocolError("responder password does not match", EsidReason.INVALID_PASSWORD)
        self._level = cmd.level
        self._sm.window = cmd.credit
        self.negotiated = Negotiated(
            level=cmd.level,
            sdeb=cmd.sdeb,
            credit=cmd.credit,
            compression=c.compression and cmd.compression,
            restart=c.restart and cmd.restart,
            secure_auth=ours,
            can_send=can_send,
            can_receive=can_recv,
            partner_code=cmd.code,
            partner_password=cmd.password,
            partner_user_data=cmd.user_data,
        )
        self._sm.ssid_answer_accepted()
        if ours:
            self._sm.send("SECD")
            self._queue(SECD())
        else:
            self._events.append(SessionStarted(self.negotiated, speaker=True))

    def _on_SECD(self, cmd: SECD, prev: State) -> None:
        auth = self.config.authenticator
        if auth is None or self.negotiated is None:
            raise RemoteProtocolError(
                "secure authentication not configured", EsidReason.INVALID_CHALLENGE_RESPONSE
            )
        try:
            challenge, secret = auth.make_challenge(self.negotiated.partner_code)
        except Exception as exc:
            raise RemoteProtocolError(
                f"cannot build a challenge: {exc}", EsidReason.INVALID_CHALLENGE_RESPONSE
            ) from exc
        self._challenge_secret = secret
        self._sm.send("AUCH")
        self._queue(AUCH(challenge))

    def _on_AUCH(self, cmd: AUCH, prev: State) -> None:
        auth = self.config.authenticator
        if auth is None:
            raise RemoteProtocolError(
                "secure authentication not configured", EsidReason.INVALID_CHALLENGE_RESPONSE
            )
        try:
            answer = auth.answer_challenge(cmd.challenge)
        except Exception as exc:
            raise RemoteProtocolError(
                f"cannot decrypt the challenge: {exc}", EsidReason.INVALID_CHALLENGE_RESPONSE
            ) from exc
        if len(answer) != 20:
            raise RemoteProtocolError(
                "challenge did not contain 20 octets", EsidReason.INVALID_CHALLENGE_RESPONSE
            )
        self._sm.send("AURP")
        self._queue(AURP(answer))
        self._maybe_auth_done()

    def _on_AURP(self, cmd: AURP, prev: State) -> None:
        if not self._challenge_secret or not hmac.compare_digest(cmd.response, self._challenge_secret):
            raise RemoteProtocolError(
                "AURP does not match our challenge", EsidReason.INVALID_CHALLENGE_RESPONSE
            )
        self._challenge_secret = b""
        self._sm.auth_verified()
        if self._sm.state is State.WF_AURP:
            self._sm.send("SECD")
            self._queue(SECD())
        self._maybe_auth_done()

    def _maybe_auth_done(self) -> None:
        if self._sm.peer_verified and self._sm.challenge_answered and self.negotiated is not None:
            self._events.append(SessionStarted(self.negotiated, speaker=self._sm.is_speaker))

    def _on_SFID(self, cmd: SFID, prev: State) -> None:
        neg = self.negotiated
        assert neg is not None
        if cmd.restart and not neg.restart:
            raise RemoteProtocolError(
                "SFID restart position without negotiated restart", EsidReason.PROTOCOL_VIOLATION
            )
        if not neg.can_receive:
            raise RemoteProtocolError(
                "file offered but we do not receive in this session", EsidReason.PROTOCOL_VIOLATION
            )
        self._rx_sfid = cmd
        self._events.append(FileOffered(cmd))

    def _on_SFPA(self, cmd: SFPA, prev: State) -> None:
        sfid = self._tx_sfid
        assert sfid is not None and self.negotiated is not None
        if cmd.accepted_restart > sfid.restart:
            raise RemoteProtocolError(
                f"SFPA restart {cmd.accepted_restart} is beyond the offered {sfid.restart}",
                EsidReason.PROTOCOL_VIOLATION,
            )
        unit = restart_unit(sfid)
        if cmd.accepted_restart and not unit and not restarts_in_v_records(sfid):
            raise RemoteProtocolError(
                f"SFPA restart {cmd.accepted_restart} for a file without restart units",
                EsidReason.PROTOCOL_VIOLATION,
            )
        self._tx_restart_octets = cmd.accepted_restart * unit  # V: set_restart_octets() gives it
        self._tx_restart_unknown = bool(cmd.accepted_restart) and not unit
        self._tx_restart_records = (
            cmd.accepted_restart if sfid.format in (RecordFormat.FIXED, RecordFormat.VARIABLE) else 0
        )
        self._tx_octets = 0
        self._tx_records = 0
        self._tx_encoder = records.DataEncoder(self.negotiated.sdeb, compression=self.negotiated.compression)
        self._events.append(FileAccepted(sfid, cmd.accepted_restart, self._tx_restart_octets))

    def _on_SFNA(self, cmd: SFNA, prev: State) -> None:
        sfid = self._tx_sfid
        assert sfid is not None
        self._tx_sfid = None
        self._events.append(FileRefused(sfid, cmd.reason, cmd.retry, cmd.text))

    def _on_CDT(self, cmd: CDT, prev: State) -> None:
        if prev is State.CLOP:
            log.info("%s: ignoring a CDT after EFID", self.name)
            return
        if prev is State.OPO:
            log.info("%s: CDT while credit remained; treated as a credit reset", self.name)
        self._release_held()
        self._events.append(CreditReceived())

    def _on_EFID(self, cmd: EFID, prev: State) -> None:
        sfid = self._rx_sfid
        assert sfid is not None
        octets = self._rx_restart_octets + self._rx_octets
        recs = self._rx_restart_records + self._rx_records
        match = cmd.unit_count == octets
        if sfid.format in (RecordFormat.FIXED, RecordFormat.VARIABLE):
            match = match and cmd.record_count == recs
        self._rx_efid = cmd
        self._events.append(FileEnded(sfid, cmd, octets, recs, match))

    def _on_EFPA(self, cmd: EFPA, prev: State) -> None:
        sfid = self._tx_sfid
        assert sfid is not None
        self._tx_sfid = None
        if cmd.change_direction:
            self._sm.send("CD")
            self._queue(CD())
        self._events.append(FileConfirmed(sfid, cmd.change_direction))

    def _on_EFNA(self, cmd: EFNA, prev: State) -> None:
        sfid = self._tx_sfid
        assert sfid is not None
        self._tx_sfid = None
        self._events.append(FileRejected(sfid, cmd.reason, cmd.text))

    def _on_EERP(self, cmd: EERP, prev: State) -> None:
        self._sm.send("RTR")
        self._rtr_at = len(self._out)
        self._events.append(EERPReceived(cmd))

    def _on_NERP(self, cmd: NERP, prev: State) -> None:
        self._sm.send("RTR")
        self._rtr_at = len(self._out)
        self._events.append(NERPReceived(cmd))

    def _on_RTR(self, cmd: RTR, prev: State) -> None:
        self._events.append(ReceiptAcknowledged())

    def _on_CD(self, cmd: CD, prev: State) -> None:
        self._events.append(TurnReceived(solicited=prev is State.WF_CD))
