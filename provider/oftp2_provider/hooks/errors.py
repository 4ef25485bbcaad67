"""Failure classes of the Airflow layer, each saying whether a retry can help.

Operators map ``retryable=False`` to ``AirflowFailException`` (no retry) and everything else to a
plain ``AirflowException`` (Airflow retries as configured).
"""

from __future__ import annotations

from oftp2_provider.protocol.errors import EsidReason, SfnaReason

#: ESID reasons a retry cannot fix: the configuration on one side must change first.
FATAL_ESID = frozenset(
    {
        EsidReason.USER_CODE_NOT_KNOWN,
        EsidReason.INVALID_PASSWORD,
        EsidReason.MODE_OR_CAPABILITIES_INCOMPATIBLE,
        EsidReason.INVALID_CHALLENGE_RESPONSE,
        EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE,
        EsidReason.EXCHANGE_BUFFER_SIZE_ERROR,
    }
)

#: SFNA/EFNA reasons a retry can fix (the partner said "later"), unless the partner set retry=Y.
RETRYABLE_REFUSAL = frozenset({SfnaReason.ACCESS_METHOD_FAILURE, SfnaReason.UNSPECIFIED})


class OFTP2Error(Exception):
    """Base class; ``retryable`` tells the operator whether Airflow should retry."""

    retryable: bool = True
    kind: str = "error"

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class OFTP2ConfigError(OFTP2Error):
    """The connection or an operator argument is invalid (fix the configuration)."""

    retryable = False
    kind = "configuration"


class OFTP2ConnectionFailed(OFTP2Error):
    """TCP/TLS connect failed or the session broke: the partner is not available right now."""

    kind = "connection"


class OFTP2AuthenticationError(OFTP2Error):
    """The partner refused our identity (ESID 03 unknown user, 04 bad password, 11/12 secure auth)."""

    retryable = False
    kind = "authentication"

    def __init__(self, reason: int, text: str = "") -> None:
        self.reason = reason
        self.text = text
        super().__init__(f"partner refused the session: ESID {reason:02d} {text}".rstrip())


class OFTP2SessionRefused(OFTP2Error):
    """The partner ended the session with another ESID reason (e.g. 08 resources not available)."""

    kind = "session"

    def __init__(self, reason: int, text: str = "") -> None:
        self.reason = reason
        self.text = text
        super().__init__(
            f"partner ended the session: ESID {reason:02d} {text}".rstrip(),
            retryable=reason not in FATAL_ESID,
        )


class OFTP2FileRefused(OFTP2Error):
    """The partner refused a file (SFNA at start or EFNA at end) with ``reason``."""

    kind = "refused"

    def __init__(self, dsn: str, at: str, reason: int, text: str = "", partner_retry: bool = False) -> None:
        self.dsn = dsn
        self.at = at
        self.reason = reason
        self.text = text
        self.partner_retry = partner_retry
        super().__init__(
            f"partner refused {dsn!r} with {at} {reason:02d} {text}".rstrip()
            + (" (partner says: retry later)" if partner_retry else ""),
            retryable=partner_retry or reason in RETRYABLE_REFUSAL,
        )


class OFTP2Timeout(OFTP2Error):
    """The partner did not answer in time, or no receipt came before the deadline."""

    kind = "timeout"


def classify_esid(reason: int, text: str = "") -> OFTP2Error:
    """The failure class of a non-zero ESID received from the partner."""
    if reason in (
        EsidReason.USER_CODE_NOT_KNOWN,
        EsidReason.INVALID_PASSWORD,
        EsidReason.INVALID_CHALLENGE_RESPONSE,
        EsidReason.SECURE_AUTHENTICATION_REQUIREMENTS_INCOMPATIBLE,
    ):
        return OFTP2AuthenticationError(reason, text)
    if reason == EsidReason.TIME_OUT:
        return OFTP2Timeout(f"partner ended the session: ESID 09 time-out {text}".rstrip())
    return OFTP2SessionRefused(reason, text)
