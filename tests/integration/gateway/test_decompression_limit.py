"""A compressed file may not unpack to more than its SFIDOSIZ announced (decompression bomb → EFNA 23)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oftp2_provider.gateway.daemon import Gateway
from oftp2_provider.ledger import Direction, TransferStatus
from oftp2_provider.protocol.api import OutboundFile, SessionConfig
from oftp2_provider.protocol.cms import protect_file
from oftp2_provider.protocol.transport import OFTPClient

from .conftest import A_ID, B_ID, gateway_config

PLAIN = 4 << 20  # 4 MiB of zeros compress to a few KiB


async def _send(gw: Gateway, envelope: Path, dsn: str, original_size: int) -> Any:
    item = OutboundFile(
        dsn=dsn,
        originator=B_ID,
        destination=A_ID,
        path=envelope,
        cipher_suite=4,
        file_compression=1,
        envelope=1,
        original_size=original_size,
    )
    client = OFTPClient(SessionConfig(B_ID, "BPW"), "127.0.0.1", gw.port())
    await client.connect()
    try:
        return await client.send_file(item)
    finally:
        await client.close()


async def test_compressed_file_larger_than_announced_is_refused(
    tmp_path: Path, start_gateway: Callable[..., Any]
) -> None:
    plain = tmp_path / "zeros.bin"
    plain.write_bytes(bytes(PLAIN))
    envelope = tmp_path / "zeros.cms"
    result = protect_file(plain, envelope, suite=4, compress=True)
    assert result.transmitted_size < 64 * 1024
    gw: Gateway = await start_gateway(
        gateway_config(tmp_path / "a", A_ID, partners={"b": {"odette_id": B_ID, "password": "BPW"}})
    )

    lied = await _send(gw, envelope, "BOMB", original_size=100 * 1024)  # announces 100 KiB
    assert not lied.ok and lied.refused_at == "EFNA" and lied.reason == 23, lied
    honest = await _send(gw, envelope, "HONEST", original_size=PLAIN)
    assert honest.ok, honest

    rows = {r.key.dsn: r for r in await gw.ledger.list_transfers(direction=Direction.INBOUND)}
    assert rows["BOMB"].status is TransferStatus.FAILED
    assert rows["HONEST"].status is TransferStatus.RECEIVED
    assert _inbox(tmp_path / "a" / "inbox" / "b") == ["HONEST"]  # nothing of the bomb is visible
    assert _size(rows["HONEST"].local_path) == PLAIN


def _inbox(directory: Path) -> list[str]:
    return sorted(p.name.split("_")[0] for p in directory.iterdir() if p.is_file())


def _size(path: str | None) -> int:
    assert path is not None
    return Path(path).stat().st_size
