"""Operators: send files (and wait for the EERP), poll a partner, release a held receipt."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from oftp2_provider.connection import default_home
from oftp2_provider.hooks.errors import OFTP2Error
from oftp2_provider.hooks.oftp2 import OFTP2Hook, OutboundSpec, SendOutcome
from oftp2_provider.ledger import (
    InvalidTransition,
    KeyConflict,
    TransferNotFound,
    TransferStatus,
    VirtualFileKey,
)
from oftp2_provider.operators.files import (
    DsnError,
    EncodingConversionError,
    SourceError,
    expand_sources,
    prepare_files,
)
from oftp2_provider.sensors.oftp2 import evaluate_receipts
from oftp2_provider.triggers.oftp2 import OFTP2EERPTrigger, transfer_summary

if TYPE_CHECKING:
    from airflow.sdk import Context

_FORMATS = ("U", "T", "F", "V")


def raise_for(exc: OFTP2Error) -> NoReturn:
    """Re-raise an :class:`OFTP2Error` as a retryable ``AirflowException`` or a fail-fast one."""
    message = f"[{exc.kind}] {exc}"
    if exc.retryable:
        raise AirflowException(message) from exc
    raise AirflowFailException(message) from exc


def _seconds(value: timedelta | float | int | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _task_identity(context: Context) -> tuple[str, datetime]:
    """A string naming this task instance (retries share it) and the run's reference time."""
    ti = context["ti"]
    run_id = getattr(ti, "run_id", "") or str(context.get("run_id", ""))
    ident = f"{ti.dag_id}|{run_id}|{ti.task_id}|{getattr(ti, 'map_index', -1)}"
    dag_run = context.get("dag_run")
    when = None
    for attr in ("run_after", "logical_date", "start_date"):
        when = getattr(dag_run, attr, None) if dag_run is not None else None
        if when is not None:
            break
    if when is None:
        when = datetime.now(timezone.utc)
    return ident, when.astimezone(timezone.utc)


def stable_keys(
    ident: str, when: datetime, dsns: Sequence[str], originator: str, destination: str
) -> list[VirtualFileKey]:
    """Virtual-file keys that stay the same across retries of one task instance.

    SFIDDATE/SFIDTIME come from the run's reference time; the 4-digit counter of SFIDTIME is derived
    from the task-instance identity plus the file's position, so a retry finds the ledger row of its
    earlier attempt and two files of one task never share a key.
    """
    base = int.from_bytes(hashlib.sha256(ident.encode()).digest()[:4], "big")
    date = when.strftime("%Y%m%d")
    hms = when.strftime("%H%M%S")
    return [
        VirtualFileKey(dsn, date, f"{hms}{(base + i) % 10000:04d}", originator, destination)
        for i, dsn in enumerate(dsns)
    ]


class OFTP2SendOperator(BaseOperator):
    """Send files to an OFTP2 partner and (by default) wait for the end-to-end receipt.

    :param source: path, glob, ``ObjectStoragePath`` or a list of them (templated).
    :param dsn: virtual file name, or a pattern with ``{name}``, ``{stem}``, ``{suffix}``, ``{index}``
        (templated; default: the upper-cased file name). Checked against SFIDDSN rules.
    :param description: SFIDDESC (templated). :param user_data: SFIDUSER (templated).
    :param record_format: ``U`` (default), ``T``, ``F`` or ``V``; ``lrecl`` for ``F``/``V``.
    :param source_encoding: / ``target_encoding``: re-encode text before sending (e.g. ``utf-8`` →
        ``iso-8859-1``); the first character that does not fit fails the task, naming line and column.
    :param signed_eerp: ask for a signed EERP (default: the connection's ``signed_eerp``).
    :param sign_files: / ``encrypt_files`` / ``compress_files``: CMS file security (default: the
        connection's settings; signing needs ``signing_cert``/``signing_key``, encryption ``partner_cert``).
    :param wait_for_eerp: wait until every file is delivered (EERP) or refused (NERP).
    :param eerp_timeout: how long to wait for receipts (seconds or timedelta).
    :param deferrable: wait in the triggerer (default) so no worker slot is held.
    :param force: send again even when the ledger records the file as already sent/delivered.
    :param fail_on_nerp: a NERP fails the task (no retry) — else it is reported in the result.

    Returns (XCom) ``{"transfer_ids": [...], "files": [...], "receipts": {...} | None}``.
    """

    template_fields: Sequence[str] = ("source", "dsn", "description", "user_data")
    ui_color = "#d7ecfb"

    def __init__(
        self,
        *,
        source: Any,
        oftp2_conn_id: str = OFTP2Hook.default_conn_name,
        dsn: str | None = None,
        description: str = "",
        user_data: str = "",
        record_format: str = "U",
        lrecl: int = 0,
        source_encoding: str | None = None,
        target_encoding: str | None = None,
        signed_eerp: bool | None = None,
        sign_files: bool | None = None,
        encrypt_files: bool | None = None,
        compress_files: bool | None = None,
        wait_for_eerp: bool = True,
        eerp_timeout: timedelta | float = timedelta(hours=4),
        poll_interval: float = 30.0,
        deferrable: bool = True,
        force: bool = False,
        fail_on_nerp: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if record_format not in _FORMATS:
            raise ValueError(f"record_format must be one of {', '.join(_FORMATS)}, got {record_format!r}")
        if record_format == "F" and lrecl <= 0:
            raise ValueError("record_format 'F' needs lrecl > 0")
        self.source = source
        self.oftp2_conn_id = oftp2_conn_id
        self.dsn = dsn
        self.description = description
        self.user_data = user_data
        self.record_format = record_format
        self.lrecl = lrecl
        self.source_encoding = source_encoding
        self.target_encoding = target_encoding
        self.signed_eerp = signed_eerp
        self.sign_files = sign_files
        self.encrypt_files = encrypt_files
        self.compress_files = compress_files
        self.wait_for_eerp = wait_for_eerp
        self.eerp_timeout = eerp_timeout
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.force = force
        self.fail_on_nerp = fail_on_nerp

    def _staging(self, ident: str) -> Path:
        digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
        return default_home() / "oftp2" / "outbox" / digest

    def execute(self, context: Context) -> Any:
        """Prepare, record and send the files; then wait for receipts (deferring by default)."""
        hook = OFTP2Hook(oftp2_conn_id=self.oftp2_conn_id)
        try:
            config = hook.config
        except OFTP2Error as exc:
            raise_for(exc)
        ident, when = _task_identity(context)
        staging = self._staging(ident)
        try:
            paths = expand_sources(self.source, staging / "src")
            prepared = prepare_files(
                paths,
                self.dsn,
                staging,
                source_encoding=self.source_encoding,
                target_encoding=self.target_encoding,
            )
        except (SourceError, DsnError, EncodingConversionError) as exc:
            raise AirflowFailException(str(exc)) from None
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        keys = stable_keys(ident, when, [p.dsn for p in prepared], config.odette_id, config.extras.partner_id)
        signed = config.extras.signed_eerp if self.signed_eerp is None else self.signed_eerp
        specs = [
            OutboundSpec(
                path=p.path,
                dsn=p.dsn,
                size=p.size,
                sha256=p.sha256,
                key=key,
                format=self.record_format,
                lrecl=self.lrecl,
                description=self.description,
                user_data=self.user_data,
                signed_eerp=signed,
                cipher_suite=config.extras.cipher_suite if signed else 0,
            )
            for p, key in zip(prepared, keys, strict=True)
        ]
        e = config.extras
        sign = e.sign_files if self.sign_files is None else self.sign_files
        encrypt = e.encrypt_files if self.encrypt_files is None else self.encrypt_files
        compress = e.compress_files if self.compress_files is None else self.compress_files
        try:
            specs = [
                hook.protect(
                    spec, staging / "cms" / f"{i:04d}.p7", sign=sign, encrypt=encrypt, compress=compress
                )
                for i, spec in enumerate(specs)
            ]
        except OFTP2Error as exc:
            raise_for(exc)
        try:
            outcomes = hook.send(specs, force=self.force)
        except KeyConflict as exc:
            raise AirflowFailException(
                f"{exc} (the source changed between retries; use force=True to send it anew)"
            ) from None
        except OFTP2Error as exc:
            raise_for(exc)
        result = self._result(outcomes)
        self._check_outcomes(outcomes)
        pending = [o.transfer_id for o in outcomes if o.status == TransferStatus.SENT.value]
        if not self.wait_for_eerp or not pending:
            if self.wait_for_eerp:
                result["receipts"] = self._receipts_now(hook, [o.transfer_id for o in outcomes])
            return result
        timeout = _seconds(self.eerp_timeout) or 0.0
        ledger_conn_id = config.extras.ledger_conn_id
        ledger_path = None if ledger_conn_id else str(config.ledger_path)
        trigger = OFTP2EERPTrigger(
            transfer_ids=[o.transfer_id for o in outcomes],
            ledger_conn_id=ledger_conn_id,
            ledger_path=ledger_path,
            poll_interval=self.poll_interval,
            deadline=time.time() + timeout if timeout else None,
        )
        if self.deferrable:
            context["ti"].xcom_push(key="send_result", value=result)
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                kwargs={"result": result},
                timeout=timedelta(seconds=timeout + 300) if timeout else None,
            )
        # Classic mode: poll the ledger from the worker.
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            receipts = self._receipts_now(hook, trigger.transfer_ids, final_only=True)
            if receipts is not None:
                result["receipts"] = receipts
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise AirflowException(f"no EERP/NERP within {timeout:.0f} s for transfers {pending}")
            time.sleep(self.poll_interval)

    def _receipts_now(
        self, hook: OFTP2Hook, ids: list[int], final_only: bool = False
    ) -> dict[str, Any] | None:
        ledger = hook.get_ledger()
        summaries = []
        for tid in ids:
            t = ledger.get(tid)
            if final_only and t.status not in (TransferStatus.DELIVERED, TransferStatus.REFUSED):
                return None
            receipts = ledger.receipts(tid)
            summaries.append(transfer_summary(t, receipts[-1].verification if receipts else None))
        return evaluate_receipts({"status": "done", "transfers": summaries}, fail_on_nerp=self.fail_on_nerp)

    def execute_complete(
        self, context: Context, event: dict[str, Any], result: dict[str, Any] | None = None
    ) -> Any:
        """Resume after :class:`OFTP2EERPTrigger` fired: check receipts, return the full result."""
        if not result:  # kwargs of the deferral may not come back on every Airflow version
            result = context["ti"].xcom_pull(task_ids=self.task_id, key="send_result")
        out = dict(result or {})
        out["receipts"] = evaluate_receipts(event, fail_on_nerp=self.fail_on_nerp)
        return out

    @staticmethod
    def _result(outcomes: list[SendOutcome]) -> dict[str, Any]:
        return {
            "transfer_ids": [o.transfer_id for o in outcomes],
            "files": [o.as_dict() for o in outcomes],
            "receipts": None,
        }

    @staticmethod
    def _check_outcomes(outcomes: list[SendOutcome]) -> None:
        refused = [o for o in outcomes if o.status == TransferStatus.REFUSED.value and not o.skipped]
        if refused:
            detail = "; ".join(
                f"{o.dsn}: {o.refused_at or 'NERP'} {o.reason:02d} {o.text}".rstrip() for o in refused
            )
            raise AirflowFailException(f"partner refused: {detail}")
        retry = [
            o for o in outcomes if o.status in (TransferStatus.FAILED.value, TransferStatus.QUEUED.value)
        ]
        if retry:
            detail = "; ".join(f"{o.dsn}: {o.refused_at} {o.reason:02d} {o.text}".rstrip() for o in retry)
            raise AirflowException(f"not sent yet (will retry): {detail}")


class OFTP2PollOperator(BaseOperator):
    """Call a partner, send what is queued for it, and receive its files and receipts.

    Received files land in the connection's inbox and the ledger (where the inbound-file trigger and
    sensor find them).  Returns the poll summary (received files, duplicates, receipts).

    :param hold_receipts: hold the EERP of received files until ``OFTP2ReleaseReceiptOperator``
        releases it (default: send it at the next session).
    """

    template_fields: Sequence[str] = ("oftp2_conn_id",)

    def __init__(
        self, *, oftp2_conn_id: str = OFTP2Hook.default_conn_name, hold_receipts: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.oftp2_conn_id = oftp2_conn_id
        self.hold_receipts = hold_receipts

    def execute(self, context: Context) -> dict[str, Any]:
        """Run one poll session."""
        hook = OFTP2Hook(oftp2_conn_id=self.oftp2_conn_id)
        try:
            return hook.poll(hold_receipts=self.hold_receipts).as_dict()
        except OFTP2Error as exc:
            raise_for(exc)


class OFTP2ReleaseReceiptOperator(BaseOperator):
    """Release the held EERP of an inbound file, or decide a NERP with a reason code.

    Goes through the gateway control API when the connection has ``gateway_api_url``, else writes
    the ledger directly (the gateway or the next poll sends the receipt).

    :param transfer_id: inbound transfer id (templated); a trigger-event payload dict works too.
    :param nerp_code: send a NERP with this reason (e.g. 34 processing failed) instead of the EERP.
    :param text: NERP text.
    """

    template_fields: Sequence[str] = ("transfer_id", "nerp_code", "text")

    def __init__(
        self,
        *,
        transfer_id: Any,
        oftp2_conn_id: str = OFTP2Hook.default_conn_name,
        nerp_code: int | None = None,
        text: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.transfer_id = transfer_id
        self.oftp2_conn_id = oftp2_conn_id
        self.nerp_code = nerp_code
        self.text = text

    def execute(self, context: Context) -> dict[str, Any]:
        """Release (or refuse) the receipt."""
        value = self.transfer_id
        if isinstance(value, dict):
            value = value.get("transfer_id")
        try:
            transfer_id = int(value)
            raw_code: Any = self.nerp_code
            code = None if raw_code in (None, "", "None") else int(raw_code)
        except (TypeError, ValueError):
            raise AirflowFailException(
                f"transfer_id/nerp_code must be integers, got {value!r}/{self.nerp_code!r}"
            ) from None
        hook = OFTP2Hook(oftp2_conn_id=self.oftp2_conn_id)
        try:
            return hook.release_receipt(transfer_id, nerp_code=code, text=self.text or None)
        except (InvalidTransition, TransferNotFound, ValueError) as exc:
            raise AirflowFailException(
                f"cannot release the receipt of transfer {transfer_id}: {exc}"
            ) from None
        except OFTP2Error as exc:
            raise_for(exc)
