"""Engine bugs the chaos runs found, each as a small deterministic test.

Each test failed before its fix; a new finding that is not fixed yet gets ``xfail(strict=True)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oftp2_provider.protocol.api import (
    EndFileDecision,
    FileDecision,
    OutboundFile,
    PartnerConfig,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
)
from oftp2_provider.protocol.commands import EFID, SFID, ProtocolLevel
from oftp2_provider.protocol.errors import EfnaReason, SfnaReason
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer

from .harness import CLIENT, CLIENT_PW, SERVER, SERVER_PW, TIMEOUTS


class _RefuseWithText(SessionHandlerBase):
    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        return FileDecision.refuse(SfnaReason.DUPLICATE_FILE, retry=False, text="already received")


class _RefuseAtEndWithText(SessionHandlerBase):
    async def end_file(self, sfid: SFID, efid: EFID, partial: Path, ctx: SessionContext) -> EndFileDecision:
        return EndFileDecision.refuse(EfnaReason.ACCESS_METHOD_FAILURE, text="not wanted")


@pytest.mark.parametrize("level", [ProtocolLevel.V1_2, ProtocolLevel.V1_3, ProtocolLevel.V1_4])
@pytest.mark.parametrize("at", ["SFNA", "EFNA"])
async def test_refusal_with_text_below_level_5_is_answered_without_text(
    tmp_path: Path, level: ProtocolLevel, at: str
) -> None:
    """Chaos seed 1 (level 1.4): the handler's reason text made the responder end with ESID 99."""
    server = OFTPServer(
        SessionConfig(SERVER, SERVER_PW, timeouts=TIMEOUTS),
        lambda ctx: (
            _RefuseWithText(tmp_path / "in") if at == "SFNA" else _RefuseAtEndWithText(tmp_path / "in")
        ),
        partners={CLIENT: PartnerConfig(CLIENT, CLIENT_PW)},
    )
    await server.start("127.0.0.1", 0)
    try:
        src = tmp_path / "f.bin"
        src.write_bytes(b"x" * 5000)
        config = SessionConfig(CLIENT, CLIENT_PW, level=level, timeouts=TIMEOUTS)
        async with OFTPClient(config, "127.0.0.1", server.port) as client:
            result = await client.send_file(
                OutboundFile(dsn="DUP", originator=CLIENT, destination=SERVER, path=src)
            )
        if at == "SFNA":
            assert result.refused_at == "SFNA" and result.reason == SfnaReason.DUPLICATE_FILE
        else:
            assert result.refused_at == "EFNA" and result.reason == EfnaReason.ACCESS_METHOD_FAILURE
        assert result.text == ""  # no reason text field below level 5
    finally:
        await server.close()
