"""The OFTP session state machine (RFC 5024 §9), as tables.

Everything that decides whether a command is allowed lives in this file:

* :data:`SEND` — ``(state, command) → next state`` for commands *we* send;
* :data:`RECEIVE` — ``(state, command) → next state`` for commands the *peer* sends;
* :class:`StateMachine` — the current state plus the few counters the tables cannot express
  (credit window, the offered restart position, whose challenge has been answered), with guards
  for the rules that depend on them.

The machine is role-agnostic once the session has started: the Initiator and the Responder obey
the same Speaker/Listener rules, so both ends of a test are held to one table.  Only the start-up
states (``I_*`` for the Initiator, ``A_*`` for the Responder) depend on the role.

A few states have no RFC name because the RFC folds the local decision into the transition:
``OPIWFA`` (Listener: SFID received, waiting for the local accept/refuse decision) and ``CLIWFA``
(Listener: EFID received, waiting for the local EFPA/EFNA decision).
"""

from __future__ import annotations

import enum

from .errors import EsidReason, LocalProtocolError, RemoteProtocolError


class State(str, enum.Enum):
    """Session states (RFC 5024 §9 names, plus ``OPIWFA``/``CLIWFA`` and ``CLOSED``)."""

    I_WF_RM = "I_WF_RM"  # Initiator: connected, waiting for SSRM
    I_WF_SSID = "I_WF_SSID"  # Initiator: SSID sent, waiting for the Responder's SSID
    A_NC_ONLY = "A_NC_ONLY"  # Responder: SSRM sent, waiting for SSID
    A_WF_CONRS = "A_WF_CONRS"  # Responder: SSID received, local decision pending
    WF_SECD = "WF_SECD"  # secure authentication: waiting for SECD
    WF_AUCH = "WF_AUCH"  # secure authentication: SECD sent, waiting for AUCH
    WF_AURP = "WF_AURP"  # secure authentication: AUCH sent, waiting for AURP
    IDLESP = "IDLESP"  # idle Speaker
    IDLESPCD = "IDLESPCD"  # idle Speaker after an unsolicited CD (may end the session, may not CD)
    OPOP = "OPOP"  # Speaker: SFID sent, waiting for SFPA/SFNA
    OPO = "OPO"  # Speaker: sending DATA with credit
    OPOWFC = "OPOWFC"  # Speaker: credit exhausted, waiting for CDT
    CLOP = "CLOP"  # Speaker: EFID sent, waiting for EFPA/EFNA
    WF_RTR = "WF_RTR"  # Speaker: EERP/NERP sent, waiting for RTR
    WF_CD = "WF_CD"  # Listener: EFPA(Y) sent, waiting for the solicited CD
    IDLELI = "IDLELI"  # idle Listener
    IDLELICD = "IDLELICD"  # idle Listener that handed over the turn with CD (peer may end)
    OPIWFA = "OPIWFA"  # Listener: SFID received, local decision pending
    OPI = "OPI"  # Listener: receiving DATA
    CLIWFA = "CLIWFA"  # Listener: EFID received, local decision pending
    WF_NDISC = "WF_NDISC"  # ESID sent, waiting for the peer to disconnect
    CLOSED = "CLOSED"  # ESID received or connection gone


#: States in which we are the Speaker (or about to be).
SPEAKER_STATES = frozenset(
    {State.IDLESP, State.IDLESPCD, State.OPOP, State.OPO, State.OPOWFC, State.CLOP, State.WF_RTR}
)
#: States in which we are the Listener.
LISTENER_STATES = frozenset(
    {State.WF_CD, State.IDLELI, State.IDLELICD, State.OPIWFA, State.OPI, State.CLIWFA}
)
#: States of the start-up phase (SSRM/SSID/secure authentication).
STARTUP_STATES = frozenset(
    {
        State.I_WF_RM,
        State.I_WF_SSID,
        State.A_NC_ONLY,
        State.A_WF_CONRS,
        State.WF_SECD,
        State.WF_AUCH,
        State.WF_AURP,
    }
)
#: States after which nothing more may be exchanged.
FINAL_STATES = frozenset({State.WF_NDISC, State.CLOSED})

# Special targets resolved by StateMachine with the counters it keeps.
_AUTH_NEXT = "auth-next"  # next secure-authentication step or session start
_CREDIT = "credit"  # OPO or OPOWFC depending on the remaining credit

#: Commands we may send: (state, command name) → next state.
SEND: dict[tuple[State, str], State | str] = {
    # start-up
    (State.I_WF_RM, "SSID"): State.I_WF_SSID,
    (State.A_WF_CONRS, "SSID"): _AUTH_NEXT,
    (State.I_WF_SSID, "SECD"): State.WF_AUCH,  # Initiator opens secure authentication
    (State.WF_SECD, "AUCH"): State.WF_AURP,  # after receiving SECD we challenge
    (State.WF_AURP, "SECD"): State.WF_AUCH,  # our challenge was answered; now we ask for theirs
    (State.WF_AUCH, "AURP"): _AUTH_NEXT,  # answered their challenge
    # Speaker
    (State.IDLESP, "SFID"): State.OPOP,
    (State.IDLESPCD, "SFID"): State.OPOP,
    (State.IDLESP, "EERP"): State.WF_RTR,
    (State.IDLESPCD, "EERP"): State.WF_RTR,
    (State.IDLESP, "NERP"): State.WF_RTR,
    (State.IDLESPCD, "NERP"): State.WF_RTR,
    (State.IDLESP, "CD"): State.IDLELICD,  # IDLESPCD may not send CD (loop rule)
    (State.OPO, "DATA"): _CREDIT,
    (State.OPO, "EFID"): State.CLOP,  # never from OPOWFC
    (State.CLOP, "CD"): State.IDLELI,  # the CD solicited by EFPA(Y)
    # Listener
    (State.OPIWFA, "SFPA"): State.OPI,
    (State.OPIWFA, "SFNA"): State.IDLELI,
    (State.OPI, "CDT"): State.OPI,
    (State.CLIWFA, "EFPA"): State.IDLELI,  # EFPA(Y) → WF_CD, resolved by StateMachine
    (State.CLIWFA, "EFNA"): State.IDLELI,
    (State.IDLELI, "RTR"): State.IDLELI,
    (State.IDLELICD, "RTR"): State.IDLELI,
}

#: Commands the peer may send: (state, command name) → next state.
RECEIVE: dict[tuple[State, str], State | str] = {
    # start-up
    (State.I_WF_RM, "SSRM"): State.I_WF_RM,  # we answer with our SSID (SEND table)
    (State.A_NC_ONLY, "SSID"): State.A_WF_CONRS,
    (State.I_WF_SSID, "SSID"): State.I_WF_SSID,  # validated, then SECD or IDLESP
    (State.WF_SECD, "SECD"): State.WF_SECD,  # we answer with AUCH (SEND table)
    (State.WF_AUCH, "AUCH"): State.WF_AUCH,  # we answer with AURP (SEND table)
    (State.WF_AURP, "AURP"): State.WF_AURP,  # verified, then SECD or session start
    # Speaker receiving answers
    (State.OPOP, "SFPA"): State.OPO,
    (State.OPOP, "SFNA"): State.IDLESP,
    (State.OPO, "CDT"): State.OPO,  # tolerated: treated as a credit reset
    (State.OPOWFC, "CDT"): State.OPO,
    (State.CLOP, "CDT"): State.CLOP,  # tolerated: a late CDT for the last DATA
    (State.CLOP, "EFPA"): State.IDLESP,  # EFPA(Y): we must send CD next (CLOP stays until then)
    (State.CLOP, "EFNA"): State.IDLESP,
    (State.WF_RTR, "RTR"): State.IDLESP,
    # Listener receiving
    (State.IDLELI, "SFID"): State.OPIWFA,
    (State.IDLELICD, "SFID"): State.OPIWFA,
    (State.IDLELI, "EERP"): State.IDLELI,
    (State.IDLELICD, "EERP"): State.IDLELI,
    (State.IDLELI, "NERP"): State.IDLELI,
    (State.IDLELICD, "NERP"): State.IDLELI,
    (State.IDLELI, "CD"): State.IDLESPCD,  # unsolicited CD
    (State.WF_CD, "CD"): State.IDLESP,  # solicited CD: we may hand the turn straight back
    (State.OPI, "DATA"): State.OPI,
    (State.OPI, "EFID"): State.CLIWFA,
}


class StateMachine:
    """The current state plus credit and authentication bookkeeping.

    :meth:`send` and :meth:`receive` apply one command; they raise
    :class:`~oftp2_provider.protocol.errors.LocalProtocolError` (we may not send that now) or
    :class:`~oftp2_provider.protocol.errors.RemoteProtocolError` (the peer may not send that now,
    ``reason`` = the ESID code to answer with).  Nothing changes when they raise.
    """

    def __init__(self, initial: State) -> None:
        self.state = initial
        #: Negotiated credit window (set after the SSID exchange).
        self.window = 0
        #: Remaining credit: the Speaker's DATA allowance, or the Listener's expected DATA count.
        self.credit = 0
        #: Secure authentication: we verified the peer's answer / we answered the peer's challenge.
        self.peer_verified = False
        self.challenge_answered = False
        self.secure_auth = False
        #: After EFPA(Y) the Speaker owes a CD.
        self.owes_cd = False
        #: Counts of tolerated irregularities (a CDT in OPO or CLOP, an SDEB+1 DATA).
        self.tolerated = 0

    # -- helpers -------------------------------------------------------------------------------------
    @property
    def is_speaker(self) -> bool:
        """True when we hold the turn."""
        return self.state in SPEAKER_STATES

    @property
    def is_listener(self) -> bool:
        """True when the peer holds the turn."""
        return self.state in LISTENER_STATES

    @property
    def started(self) -> bool:
        """True once the start-up phase is over."""
        return self.state not in STARTUP_STATES

    def _auth_next(self) -> State:
        if self.secure_auth and not (self.peer_verified and self.challenge_answered):
            return State.WF_SECD  # the peer still has to ask for (or answer) a challenge
        return State.IDLESP if self._initiator else State.IDLELI

    _initiator = True

    def set_role(self, initiator: bool) -> None:
        """Record which end we are (decides who becomes Speaker first)."""
        self._initiator = initiator

    def ssid_answer_accepted(self) -> State:
        """Initiator: the Responder's SSID passed validation.

        Without secure authentication the session starts (IDLESP); with it we stay in I_WF_SSID
        and send SECD next.
        """
        if self.state is not State.I_WF_SSID:
            raise LocalProtocolError(f"no SSID answer to accept in state {self.state.value}")
        if not self.secure_auth:
            self.state = State.IDLESP
        return self.state

    def auth_verified(self) -> State:
        """The peer's AURP matched our challenge.

        If we already answered the peer's challenge the session starts; otherwise we stay in
        WF_AURP and must send SECD to ask for the peer's challenge.
        """
        if self.state is not State.WF_AURP:
            raise LocalProtocolError(f"no AURP to verify in state {self.state.value}")
        self.peer_verified = True
        if self.challenge_answered:
            self.state = self._auth_next()
        return self.state

    # -- transitions ------------------------------------------------------------------------------------
    def send(self, name: str, *, change_direction: bool = False, reason: int = 0) -> State:
        """Apply a command we are about to send; returns the new state."""
        if name == "ESID":
            if self.state in FINAL_STATES:
                raise LocalProtocolError(f"cannot send ESID in state {self.state.value}: session is over")
            if reason == EsidReason.NORMAL and self.state is not State.IDLESPCD:
                raise LocalProtocolError(
                    f"ESID 00 (normal end) is only allowed right after an unsolicited CD, not in {self.state.value}"
                )
            self.state = State.WF_NDISC
            return self.state
        if self.owes_cd and name != "CD":
            raise LocalProtocolError(f"the partner asked for the turn (EFPA Y): send CD before {name}")
        target = SEND.get((self.state, name))
        if target is None:
            if name == "CD" and self.state is State.IDLESPCD:
                raise LocalProtocolError(
                    "CD right after an unsolicited CD is forbidden: send something or end"
                )
            if name == "EFID" and self.state is State.OPOWFC:
                raise LocalProtocolError("EFID must wait for the CDT that follows the last credit")
            if name == "DATA" and self.state is State.OPOWFC:
                raise LocalProtocolError("no credit left: wait for CDT before sending more DATA")
            raise LocalProtocolError(f"cannot send {name} in state {self.state.value}")
        if name == "CD" and self.state is State.CLOP and not self.owes_cd:
            raise LocalProtocolError("cannot send CD while waiting for EFPA/EFNA")
        new = self._resolve(target)
        if name == "DATA":
            self.credit -= 1
            new = State.OPOWFC if self.credit <= 0 else State.OPO
        elif name == "EFID":
            self.credit = 0
        elif name == "SFPA":
            self.credit = self.window
        elif name == "CDT":
            self.credit = self.window
        elif name == "EFPA" and change_direction:
            new = State.WF_CD
        elif name == "AURP":
            self.challenge_answered = True
            new = self._auth_next()
        elif name == "CD" and self.owes_cd:
            self.owes_cd = False
        self.state = new
        return new

    def receive(self, name: str, *, change_direction: bool = False, reason: int = 0) -> State:
        """Apply a command the peer sent; returns the new state."""
        if name == "DATA" and self.state is State.OPI and self.credit > 0:  # the hot path
            self.credit -= 1
            return State.OPI
        if name == "ESID":
            self.state = State.CLOSED
            return self.state
        if self.state in FINAL_STATES:
            return self.state  # ignore whatever trickles in after the end
        target = RECEIVE.get((self.state, name))
        if target is None:
            if name == "CD" and self.state is State.IDLELICD:
                raise RemoteProtocolError("CD answered with CD (loop rule)", EsidReason.PROTOCOL_VIOLATION)
            if name == "DATA" and self.state is State.OPI and self.credit <= 0:
                raise RemoteProtocolError("DATA without credit", EsidReason.PROTOCOL_VIOLATION)
            raise RemoteProtocolError(
                f"{name} not allowed in state {self.state.value}", EsidReason.PROTOCOL_VIOLATION
            )
        new = self._resolve(target)
        if name == "DATA":
            if self.credit <= 0:
                raise RemoteProtocolError("DATA without credit", EsidReason.PROTOCOL_VIOLATION)
            self.credit -= 1
        elif name == "CDT":
            if self.state is not State.OPOWFC:
                self.tolerated += 1
            if self.state is not State.CLOP:
                self.credit = self.window
        elif name == "SFPA":
            self.credit = self.window
        elif name == "EFPA" and change_direction:
            self.owes_cd = True
            new = State.CLOP
        self.state = new
        return new

    def send_data_buffers(self, count: int) -> int:
        """Speaker fast path: account for up to ``count`` DATA buffers at once; returns how many fit.

        Same rule as ``count`` calls of ``send("DATA")``: only in OPO, one credit each, OPOWFC at 0.
        """
        if self.state is not State.OPO or self.owes_cd:
            return 0
        n = min(count, self.credit)
        self.credit -= n
        if self.credit <= 0:
            self.state = State.OPOWFC
        return n

    def receive_data_buffers(self, count: int) -> None:
        """Listener fast path: ``count`` DATA buffers in OPI, all within the credit (checked by the caller)."""
        if self.state is not State.OPI or count > self.credit:
            raise RemoteProtocolError("DATA without credit", EsidReason.PROTOCOL_VIOLATION)
        self.credit -= count

    def listener_needs_cdt(self) -> bool:
        """Listener: the credit counter reached 0, a CDT is due now."""
        return self.state is State.OPI and self.credit <= 0

    def close(self) -> None:
        """The connection is gone."""
        self.state = State.CLOSED

    def _resolve(self, target: State | str) -> State:
        if target == _AUTH_NEXT:
            return self._auth_next()
        if target == _CREDIT:
            return State.OPO
        assert isinstance(target, State)
        return target
