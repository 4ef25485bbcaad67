"""Two real gateways with a cutting proxy between them: every file delivered once, ledgers consistent.

Gateway B calls gateway A through :class:`~.harness.CuttingProxy`; both have files queued for the
other (A's go out after B's CD).  Calls are repeated, each connection cut at a random octet count
(FIN or RST) — always for the first calls — until every outbound transfer on both sides is ``delivered``
(its EERP came back).  Then each side must hold exactly one ``received`` row and one
``file.received`` event per file, with the right SHA-256 and content, no partial file and a sent
receipt.  The seed is in the test id (``OFTP2_CHAOS_SEED`` overrides it).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.gateway.events import Event
from oftp2_provider.ledger import Direction, ReceiptState, TransferStatus

from ..gateway.conftest import A_ID, B_ID, gateway_config
from .harness import Budget, CuttingProxy

SEED = int(os.environ.get("OFTP2_CHAOS_SEED", "20261124")) + 7
FILES_EACH_WAY = 5
MAX_SIZE = 400_000
MAX_CALLS = 40
#: Some cuts hide the EFPA (the re-send then gets SFNA 13); ``OFTP2_CHAOS_EFPA=0`` turns them off.
EFPA_CUTS = os.environ.get("OFTP2_CHAOS_EFPA", "1") != "0"
CUT_CALLS = 8  # the first calls are always cut; later ones with probability 3/4


def _received_events(bus_events: list[Event]) -> Counter[str]:
    return Counter(str(e.data.get("dsn")) for e in bus_events if e.name == "file.received")


def _read(path: str | None) -> bytes:
    assert path is not None
    return Path(path).read_bytes()


async def _all_delivered(gw: Gateway) -> bool:
    rows = await gw.ledger.list_transfers(direction=Direction.OUTBOUND)
    return all(r.status is TransferStatus.DELIVERED for r in rows)


async def _pair_through_proxy(
    tmp_path: Path, start_gateway: Callable[..., Any], rng: random.Random, b_port: int | None = None
) -> tuple[Gateway, Gateway, CuttingProxy]:
    """Gateway A listening, a cutting proxy in front of it, gateway B calling A through the proxy.

    With ``b_port``, B listens there and A can call B directly (no proxy on that way).
    """
    to_b: dict[str, Any] = {"odette_id": B_ID, "password": "BPW"}
    b_extra: dict[str, Any] = {}
    if b_port is not None:
        to_b |= {"address": f"127.0.0.1:{b_port}", "our_password": "OWNPW"}
        b_extra["listeners"] = [{"type": "tcp", "host": "127.0.0.1", "port": b_port}]
    a: Gateway = await start_gateway(gateway_config(tmp_path / "a", A_ID, partners={"b": to_b}))
    proxy = CuttingProxy(a.port(), rng)
    await proxy.start()
    b: Gateway = await start_gateway(
        gateway_config(
            tmp_path / "b",
            B_ID,
            password="BPW",
            partners={
                "a": {
                    "odette_id": A_ID,
                    "password": "OWNPW",
                    "our_password": "BPW",
                    "address": f"127.0.0.1:{proxy.port}",
                }
            },
            **b_extra,
        )
    )
    return a, b, proxy


async def test_efpa_lost_then_duplicate_still_ends_delivered(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    a, b, proxy = await _pair_through_proxy(tmp_path, start_gateway, random.Random(1))
    try:
        queued = await b.submit_file("a", dsn="EFPA.LOST", content=b"x" * 50_000)
        proxy.schedule = ["efpa"]
        first = await b.call_partner("a")
        assert not first.ok and proxy.cuts == [("efpa", proxy.cuts[0][1])]
        [inbound] = await a.ledger.list_transfers(direction=Direction.INBOUND)
        assert inbound.status is TransferStatus.RECEIVED  # A has the file; B never saw the EFPA
        for _ in range(3):
            await b.call_partner("a")
        out = await b.ledger.get(queued.id)
        assert out.status is TransferStatus.DELIVERED, out
    finally:
        await proxy.close()


async def test_efpa_lost_then_receipt_while_queued_ends_delivered(
    tmp_path: Path, start_gateway: Callable[..., Any], free_port: Callable[[], int]
) -> None:
    """As above, but the partner calls first: its EERP arrives while the file is queued again."""
    a, b, proxy = await _pair_through_proxy(tmp_path, start_gateway, random.Random(2), free_port())
    try:
        queued = await b.submit_file("a", dsn="EFPA.LOST2", content=b"y" * 30_000)
        proxy.schedule = ["efpa"]
        first = await b.call_partner("a")
        assert not first.ok and [c[0] for c in proxy.cuts] == ["efpa"]
        assert (await b.ledger.get(queued.id)).status is TransferStatus.QUEUED
        back = await a.call_partner("b")  # A has the EERP due for B's file
        assert back.ok, back
        out = await b.ledger.get(queued.id)
        assert out.status is TransferStatus.DELIVERED, out
        again = await b.call_partner("a")
        assert again.ok and again.files_sent == 0, again  # nothing is sent again
        [inbound] = await a.ledger.list_transfers(direction=Direction.INBOUND)
        assert inbound.status is TransferStatus.RECEIVED and inbound.receipt_state is ReceiptState.SENT
        assert "sent" not in [e.kind for e in await b.ledger.events(queued.id)]
    finally:
        await proxy.close()


@pytest.mark.parametrize("seed", [SEED], ids=lambda s: f"seed={s}")
async def test_gateways_with_cut_connections(
    seed: int, tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    rng = random.Random(seed)
    a, b, proxy = await _pair_through_proxy(tmp_path, start_gateway, rng)
    try:
        events: dict[str, list[Event]] = {"a": [], "b": []}
        a.bus.subscribe(events["a"].append)
        b.bus.subscribe(events["b"].append)
        sent: dict[str, dict[str, bytes]] = {"a": {}, "b": {}}  # sender → dsn → content
        for i in range(FILES_EACH_WAY):
            for name, gw, partner in (("a", a, "b"), ("b", b, "a")):
                content = rng.randbytes(rng.randint(0, MAX_SIZE))
                dsn = f"CHAOS.{name.upper()}{i}"
                await gw.submit_file(partner, dsn=dsn, content=content)
                sent[name][dsn] = content

        calls: list[tuple[list[Budget], bool, str]] = []
        for number in range(MAX_CALLS):
            if await _all_delivered(a) and await _all_delivered(b):
                break
            total = sum(len(c) for side in sent.values() for c in side.values())
            schedule: list[Budget] = []
            if number < CUT_CALLS or rng.random() < 0.75:
                if EFPA_CUTS and rng.random() < 0.2:
                    schedule.append("efpa")
                else:
                    schedule.append(rng.randint(0, total // 2 + 4_000))
            proxy.schedule = list(schedule)
            result = await b.call_partner("a")
            proxy.schedule = []
            calls.append((schedule, result.ok, result.text))
        where = f"seed {seed}: calls {calls}"
        if not (await _all_delivered(a) and await _all_delivered(b)):
            states = [
                f"{name} {r.direction.value} {r.key.dsn} {r.status.value} receipt={r.receipt_state.value} "
                f"attempts={r.attempts} error={r.last_error!r}"
                for name, gw in (("a", a), ("b", b))
                for r in await gw.ledger.list_transfers()
            ]
            raise AssertionError(f"not everything delivered: {states}; {where}")
        assert proxy.cuts, f"no call was cut: the test proved nothing; {where}"

        for receiver, sender, base in (("a", "b", tmp_path / "a"), ("b", "a", tmp_path / "b")):
            gw = a if receiver == "a" else b
            rows = await gw.ledger.list_transfers(direction=Direction.INBOUND)
            by_dsn = Counter(r.key.dsn for r in rows)
            assert by_dsn == Counter(list(sent[sender])), f"{receiver}: inbound rows {by_dsn}; {where}"
            assert _received_events(events[receiver]) == Counter(list(sent[sender])), where
            for row in rows:
                content = sent[sender][row.key.dsn]
                assert row.status is TransferStatus.RECEIVED, f"{row}; {where}"
                assert row.receipt_state is ReceiptState.SENT, f"{row}; {where}"
                assert row.sha256 == hashlib.sha256(content).hexdigest(), f"{row}; {where}"
                assert _read(row.local_path) == content, where
            inbox = base / "inbox" / sender
            visible = sorted(p.name for p in inbox.iterdir() if p.is_file())
            assert len(visible) == len(sent[sender]), f"{receiver}: inbox {visible}; {where}"
            partial = inbox / ".partial"
            left = sorted(p.name for p in partial.iterdir()) if partial.exists() else []
            assert left == [], f"{receiver}: partial files left: {left}; {where}"
        print(
            f"\ngateway chaos seed {seed}: {len(calls)} calls, {len(proxy.cuts)} cuts "
            f"{[m for _, m in proxy.cuts]}, ok calls {sum(1 for c in calls if c[1])}"
        )
    finally:
        await proxy.close()
