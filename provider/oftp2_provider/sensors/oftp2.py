"""Sensors on the transfer ledger: EERP/NERP for sent files, and newly received files."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from oftp2_provider.hooks.ledger import open_ledger
from oftp2_provider.ledger import Direction, TransferNotFound, TransferStatus
from oftp2_provider.triggers.oftp2 import OFTP2EERPTrigger, transfer_summary

if TYPE_CHECKING:
    from airflow.sdk import Context


def _ids(value: Any) -> list[int]:
    """Accept an int, a list of ints, or the XCom result of ``OFTP2SendOperator``."""
    if isinstance(value, dict):
        value = value.get("transfer_ids", [])
    if isinstance(value, (int, str)):
        value = [value]
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise AirflowFailException(f"transfer_ids must be integers, got {value!r}") from None


def _ledger_settings(
    conn_id: str | None, ledger_conn_id: str | None, ledger_path: str | None
) -> tuple[str | None, str | None]:
    """Ledger settings: explicit arguments win, else those of the ``oftp2`` connection."""
    if ledger_conn_id or ledger_path or not conn_id:
        return ledger_conn_id, ledger_path
    from oftp2_provider.hooks.oftp2 import OFTP2Hook

    config = OFTP2Hook(oftp2_conn_id=conn_id).config
    return config.extras.ledger_conn_id, None if config.extras.ledger_conn_id else str(config.ledger_path)


def evaluate_receipts(event: dict[str, Any], *, fail_on_nerp: bool) -> dict[str, Any]:
    """Turn an :class:`OFTP2EERPTrigger` event into the task result, raising on timeout/NERP/error."""
    status = event.get("status")
    if status == "error":
        raise AirflowFailException(str(event.get("message")))
    if status == "timeout":
        raise AirflowException(f"no EERP/NERP before the deadline for transfers {event.get('pending')}")
    transfers = event.get("transfers", [])
    refused = [t for t in transfers if t["status"] == TransferStatus.REFUSED.value]
    bad_sig = [
        t
        for t in transfers
        if t.get("receipt_verification") in ("BAD_SIGNATURE", "HASH_MISMATCH", "UNKNOWN_CERTIFICATE")
    ]
    if bad_sig:
        detail = ", ".join(f"{t['transfer_id']}: {t['receipt_verification']}" for t in bad_sig)
        raise AirflowFailException(f"receipt verification failed ({detail})")
    if refused and fail_on_nerp:
        detail = ", ".join(
            f"{t['transfer_id']} {t['dsn']}: NERP {t.get('nerp_code')} {t.get('nerp_text') or ''}".rstrip()
            for t in refused
        )
        raise AirflowFailException(f"partner refused delivery ({detail})")
    return {"transfers": transfers, "delivered": [t["transfer_id"] for t in transfers if t not in refused]}


class OFTP2EERPSensor(BaseSensorOperator):
    """Wait until the given outbound transfers are delivered (EERP) or refused (NERP).

    :param transfer_ids: ledger ids (templated); the ``OFTP2SendOperator`` XCom dict is accepted too.
    :param oftp2_conn_id: connection whose ledger settings are used (when no ledger_* is given).
    :param ledger_conn_id: / ``ledger_path``: ledger location overriding the connection's.
    :param fail_on_nerp: fail (no retry) when a transfer was refused; else return it in the result.
    :param deferrable: wait in the triggerer (default) instead of poking from a worker.
    """

    template_fields: Sequence[str] = ("transfer_ids",)

    def __init__(
        self,
        *,
        transfer_ids: Any,
        oftp2_conn_id: str | None = "oftp2_default",
        ledger_conn_id: str | None = None,
        ledger_path: str | None = None,
        fail_on_nerp: bool = True,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.transfer_ids = transfer_ids
        self.oftp2_conn_id = oftp2_conn_id
        self.ledger_conn_id = ledger_conn_id
        self.ledger_path = ledger_path
        self.fail_on_nerp = fail_on_nerp
        self.deferrable = deferrable

    def _settings(self) -> tuple[str | None, str | None]:
        return _ledger_settings(self.oftp2_conn_id, self.ledger_conn_id, self.ledger_path)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Read the ledger once; done when every transfer is final."""
        ledger = open_ledger(*self._settings())
        transfers = []
        for transfer_id in _ids(self.transfer_ids):
            try:
                found = ledger.get(transfer_id)
            except TransferNotFound:
                found = None
            if found is None or found.direction is not Direction.OUTBOUND:
                raise AirflowFailException(f"no outbound transfer with id {transfer_id}")
            transfers.append(found)
        if any(t.status not in (TransferStatus.DELIVERED, TransferStatus.REFUSED) for t in transfers):
            return False
        summaries = []
        for t in transfers:
            receipts = ledger.receipts(t.id)
            summaries.append(transfer_summary(t, receipts[-1].verification if receipts else None))
        result = evaluate_receipts({"status": "done", "transfers": summaries}, fail_on_nerp=self.fail_on_nerp)
        return PokeReturnValue(is_done=True, xcom_value=result)

    def execute(self, context: Context) -> Any:
        """Poke (classic) or defer to :class:`OFTP2EERPTrigger` (deferrable)."""
        if not self.deferrable:
            return super().execute(context)
        ids = _ids(self.transfer_ids)
        ledger_conn_id, ledger_path = self._settings()
        timeout = float(self.timeout) if self.timeout else None
        self.defer(
            trigger=OFTP2EERPTrigger(
                transfer_ids=ids,
                ledger_conn_id=ledger_conn_id,
                ledger_path=ledger_path,
                poll_interval=float(self.poke_interval),
                deadline=time.time() + timeout if timeout else None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + 60) if timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired."""
        return evaluate_receipts(event, fail_on_nerp=self.fail_on_nerp)


class OFTP2InboundFileSensor(BaseSensorOperator):
    """Classic-DAG sensor: succeed when received files are waiting; claim them and return them.

    The files (their :func:`~oftp2_provider.triggers.oftp2.transfer_summary`) are the XCom value and
    are marked dispatched, so the next run does not see them again.  For event-driven DAGs use
    ``OFTP2InboundFileTrigger`` in an ``AssetWatcher`` instead.

    :param partner: only files from this partner Odette ID.
    :param dsn_pattern: only files whose DSN matches this ``fnmatch`` pattern (templated).
    """

    template_fields: Sequence[str] = ("partner", "dsn_pattern")

    def __init__(
        self,
        *,
        partner: str | None = None,
        dsn_pattern: str | None = None,
        oftp2_conn_id: str | None = "oftp2_default",
        ledger_conn_id: str | None = None,
        ledger_path: str | None = None,
        max_files: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partner = partner
        self.dsn_pattern = dsn_pattern
        self.oftp2_conn_id = oftp2_conn_id
        self.ledger_conn_id = ledger_conn_id
        self.ledger_path = ledger_path
        self.max_files = max_files

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Look for undispatched received files matching the filters."""
        ledger = open_ledger(*_ledger_settings(self.oftp2_conn_id, self.ledger_conn_id, self.ledger_path))
        found = [
            t
            for t in ledger.undispatched_inbound(1000, partner=self.partner)
            if (self.dsn_pattern is None or fnmatch.fnmatchcase(t.key.dsn, self.dsn_pattern))
        ][: self.max_files]
        if not found:
            return False
        ledger.mark_dispatched([t.id for t in found])
        return PokeReturnValue(is_done=True, xcom_value=[transfer_summary(t) for t in found])
