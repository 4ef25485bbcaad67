"""OFTP2Hook against a real OFTP partner on loopback, with a real SQLite ledger."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.hooks.errors import OFTP2AuthenticationError, OFTP2ConnectionFailed
from oftp2_provider.hooks.oftp2 import OFTP2Hook, OutboundSpec
from oftp2_provider.ledger import Direction, TransferStatus, VirtualFileKey
from oftp2_provider.protocol.api import OutboundFile
from oftp2_provider.protocol.errors import SfnaReason

from .conftest import OURS, PARTNER, LoopbackPartner


def _spec(tmp_path: Path, dsn: str, data: bytes, key: VirtualFileKey | None = None) -> OutboundSpec:
    path = tmp_path / f"{dsn}.dat"
    path.write_bytes(data)
    return OutboundSpec(path=path, dsn=dsn, size=len(data), sha256=hashlib.sha256(data).hexdigest(), key=key)


def test_test_connection(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], free_port: Callable[[], int]
) -> None:
    ok, message = OFTP2Hook(oftp2_conn()).test_connection()
    assert ok, message
    assert "level 5" in message
    ok, message = OFTP2Hook(oftp2_conn("oftp2_badpw", password="WRONG")).test_connection()
    assert not ok and "ESID 04" in message
    ok, message = OFTP2Hook(oftp2_conn("oftp2_nobody", port=free_port())).test_connection()
    assert not ok and "cannot connect" in message


def test_wrong_password_is_fail_fast(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    hook = OFTP2Hook(oftp2_conn("oftp2_badpw", password="WRONG"))
    with pytest.raises(OFTP2AuthenticationError) as info:
        hook.send([_spec(tmp_path, "X", b"x")])
    assert info.value.retryable is False and info.value.reason == 4


def test_unreachable_partner_is_retryable(
    oftp2_conn: Callable[..., str], free_port: Callable[[], int], tmp_path: Path
) -> None:
    hook = OFTP2Hook(oftp2_conn("oftp2_nobody", port=free_port()))
    with pytest.raises(OFTP2ConnectionFailed) as info:
        hook.send([_spec(tmp_path, "X", b"x")])
    assert info.value.retryable is True
    # The file stays queued in the ledger for the next attempt.
    (row,) = hook.get_ledger().list_transfers(direction=Direction.OUTBOUND)
    assert row.status is TransferStatus.QUEUED


def test_send_records_delivery_and_is_idempotent(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    hook = OFTP2Hook(oftp2_conn())
    data = b"UNB+UNOC:3+SENDER+RECEIVER'\n" * 500
    key = VirtualFileKey("INVOIC01", "20260101", "1200000001", OURS, PARTNER)
    (outcome,) = hook.send([_spec(tmp_path, "INVOIC01", data, key)])
    assert outcome.status == "delivered", outcome  # the EERP came back in the same session
    assert outcome.sha256 == hashlib.sha256(data).hexdigest() and not outcome.skipped
    (got,) = partner.received
    assert got.path.read_bytes() == data and got.sfid.dsn == "INVOIC01"
    ledger = hook.get_ledger()
    transfer = ledger.get(outcome.transfer_id)
    assert transfer.status is TransferStatus.DELIVERED
    assert [r.kind.value for r in ledger.receipts(transfer.id)] == ["EERP"]
    # A retry with the same key sends nothing.
    (again,) = hook.send([_spec(tmp_path, "INVOIC01", data, key)])
    assert again.skipped and again.transfer_id == outcome.transfer_id
    assert len(partner.received) == 1
    # force=True sends it again under a new timestamp.
    (forced,) = hook.send([_spec(tmp_path, "INVOIC01", data, key)], force=True)
    assert not forced.skipped and forced.transfer_id != outcome.transfer_id and forced.time != key.time
    assert len(partner.received) == 2


def test_refusal_is_recorded(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    partner.behaviour.refuse["BADFILE"] = (int(SfnaReason.INVALID_FILENAME), False)
    partner.behaviour.refuse["LATER"] = (int(SfnaReason.ACCESS_METHOD_FAILURE), True)
    hook = OFTP2Hook(oftp2_conn())
    bad, later = hook.send([_spec(tmp_path, "BADFILE", b"a"), _spec(tmp_path, "LATER", b"b")])
    assert bad.status == "refused" and bad.refused_at == "SFNA" and bad.reason == 1
    assert later.status == "failed" and later.partner_retry


def test_poll_receives_files_and_sends_receipts(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    data = b"DESADV payload\n" * 100
    src = tmp_path / "desadv.txt"
    src.write_bytes(data)
    partner.behaviour.deliver.append(
        OutboundFile(dsn="DESADV7", originator=PARTNER, destination=OURS, path=src)
    )
    hook = OFTP2Hook(oftp2_conn())
    result = hook.poll()
    (received,) = result.received
    ledger = hook.get_ledger()
    transfer = ledger.get(received["transfer_id"])
    assert transfer.status is TransferStatus.RECEIVED and transfer.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(transfer.local_path or "").read_bytes() == data
    assert [t.id for t in ledger.undispatched_inbound(10)] == [transfer.id]
    # The EERP was due at once: the next session delivers it to the partner.
    hook.poll()
    assert [e.dsn for e in partner.eerps] == ["DESADV7"]


def test_poll_with_held_receipt_sends_it_after_release(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    src = tmp_path / "orders.txt"
    src.write_bytes(b"ORDERS\n")
    partner.behaviour.deliver.append(
        OutboundFile(dsn="ORDERS1", originator=PARTNER, destination=OURS, path=src)
    )
    hook = OFTP2Hook(oftp2_conn())
    (received,) = hook.poll(hold_receipts=True).received
    hook.poll()
    assert partner.eerps == []
    hook.release_receipt(received["transfer_id"], nerp_code=34, text="mapping failed")
    hook.poll()
    assert partner.eerps == []
    nerps = [n for h in partner.handlers for n in h.nerps]
    assert [(n.dsn, n.reason) for n in nerps] == [("ORDERS1", 34)]


def test_signed_eerp_is_verified(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path, test_pki: Any
) -> None:
    """A signed EERP from the partner is checked against its certificate and our file's hash."""
    from oftp2_provider.protocol.commands import EERP
    from oftp2_provider.protocol.receipts import file_hash, sign_receipt

    partner.behaviour.auto_eerp = False
    hook = OFTP2Hook(oftp2_conn(partner_cert=f"file:{test_pki.partner.cert_path}"))
    data = b"signed please\n" * 10
    good = replace(_spec(tmp_path, "GOOD", data), signed_eerp=True, cipher_suite=4)
    bad = replace(_spec(tmp_path, "FORGED", b"other"), signed_eerp=True, cipher_suite=4)
    outcomes = hook.send([good, bad])
    assert [o.status for o in outcomes] == ["sent", "sent"]
    ledger = hook.get_ledger()
    for outcome, signer in zip(outcomes, (test_pki.partner, test_pki.untrusted), strict=True):
        t = ledger.get(outcome.transfer_id)
        eerp = EERP(t.key.dsn, t.key.date, t.key.time, destination=t.key.originator, originator=PARTNER)
        signed = sign_receipt(
            eerp, suite=4, key=signer.key, cert=signer.cert, file_hash=file_hash(t.local_path or "", 4)
        )
        partner.behaviour.deliver.append(signed)
    hook.poll()
    verdicts = {
        ledger.get(o.transfer_id).key.dsn: ledger.receipts(o.transfer_id)[-1].verification for o in outcomes
    }
    assert verdicts == {"GOOD": "VERIFIED", "FORGED": "UNKNOWN_CERTIFICATE"}


def test_signed_encrypted_compressed_file_reaches_the_partner(
    partner: LoopbackPartner, oftp2_conn: Callable[..., str], tmp_path: Path, test_pki: Any
) -> None:
    """CMS protection on the way out: the partner can decrypt, decompress and verify our signature."""
    from oftp2_provider.protocol.cms import unprotect_file

    conn = oftp2_conn(
        signing_cert=f"file:{test_pki.client.cert_path}",
        signing_key=f"file:{test_pki.client.key_path}",
        partner_cert=f"file:{test_pki.partner.cert_path}",
        cipher_suite=4,
    )
    hook = OFTP2Hook(conn)
    data = b"CONFIDENTIAL DELFOR\n" * 2000
    plain = _spec(tmp_path, "DELFOR", data)
    secured = hook.protect(plain, tmp_path / "cms" / "delfor.p7", sign=True, encrypt=True, compress=True)
    assert secured.security == 3 and secured.compression == 1 and secured.sha256 == plain.sha256
    (outcome,) = hook.send([secured])
    assert outcome.status == "delivered"
    (got,) = partner.received
    sfid = got.sfid
    assert (int(sfid.security), sfid.cipher_suite, sfid.compression, sfid.envelope) == (3, 4, 1, 1)
    assert got.path.read_bytes() != data
    result = unprotect_file(
        got.path,
        tmp_path / "opened",
        security_level=int(sfid.security),
        compressed=sfid.compression,
        suite=sfid.cipher_suite,
        decrypt_key=test_pki.partner.key,
        decrypt_cert=test_pki.partner.cert,
        verify_certs=[test_pki.client.cert],
    )
    assert (tmp_path / "opened").read_bytes() == data
    assert result.verified_signer == test_pki.client.cert


def test_file_security_without_certificates_names_the_field(
    oftp2_conn: Callable[..., str], tmp_path: Path
) -> None:
    from oftp2_provider.hooks.errors import OFTP2ConfigError

    hook = OFTP2Hook(oftp2_conn())
    with pytest.raises(OFTP2ConfigError, match=r"extra\.signing_cert and extra\.signing_key"):
        hook.protect(_spec(tmp_path, "X", b"x"), tmp_path / "x.p7", sign=True, encrypt=False, compress=False)
    with pytest.raises(OFTP2ConfigError, match=r"extra\.partner_cert"):
        hook.protect(_spec(tmp_path, "X", b"x"), tmp_path / "x.p7", sign=False, encrypt=True, compress=False)


def test_tls_session(
    tmp_path: Path, test_pki: Any, monkeypatch: pytest.MonkeyPatch, oftp2_conn: Callable[..., str]
) -> None:
    """Implicit TLS (RFC 5024 port 6619 style): the CA from the connection is trusted, others are not."""
    from oftp2_provider.protocol.certs import make_server_ssl_context

    from .conftest import LoopbackPartner as Partner

    ctx = make_server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path)
    tls_partner = Partner(tmp_path / "tls-inbox", ssl=ctx)
    try:
        good = oftp2_conn(
            "oftp2_tls", port=tls_partner.port, tls=True, tls_ca=f"file:{test_pki.ca.cert_path}"
        )
        ok, message = OFTP2Hook(good).test_connection()
        assert ok, message
        (outcome,) = OFTP2Hook(good).send([_spec(tmp_path, "OVERTLS", b"secret")])
        assert outcome.status == "delivered"
        other = oftp2_conn(
            "oftp2_tls_other", port=tls_partner.port, tls=True, tls_ca=f"file:{test_pki.other_ca.cert_path}"
        )
        ok, message = OFTP2Hook(other).test_connection()
        assert not ok and "TLS" in message, message
    finally:
        tls_partner.close()
