"""Engine bugs the chaos runs found, each as a small deterministic test.

A test marked ``xfail(strict=True)`` documents a bug that is not fixed yet: it fails today (so the
mark holds) and turns the suite red as soon as the engine is fixed, so that the mark gets removed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oftp2_provider.protocol.api import (
    FileDecision,
    OutboundFile,
    PartnerConfig,
    SessionConfig,
    SessionContext,
    SessionHandlerBase,
)
from oftp2_provider.protocol.commands import SFID, ProtocolLevel
from oftp2_provider.protocol.errors import SfnaReason
from oftp2_provider.protocol.transport import OFTPClient, OFTPServer

from .harness import CLIENT, CLIENT_PW, SERVER, SERVER_PW, TIMEOUTS


class _RefuseWithText(SessionHandlerBase):
    async def accept_file(self, sfid: SFID, ctx: SessionContext) -> FileDecision:
        return FileDecision.refuse(SfnaReason.DUPLICATE_FILE, retry=False, text="already received")


@pytest.mark.xfail(
    strict=True,
    reason="engine bug (chaos seed 1, level 1.4): SFNA/EFNA reason text is level-5-only, but "
    "Session.refuse_file/answer_end_file pass it to the codec at level 4 (LocalProtocolError, "
    "the responder ends the session with ESID 99 instead of answering SFNA)",
)
async def test_refusal_with_text_at_level_1_4_is_an_sfna(tmp_path: Path) -> None:
    server = OFTPServer(
        SessionConfig(SERVER, SERVER_PW, timeouts=TIMEOUTS),
        lambda ctx: _RefuseWithText(),
        partners={CLIENT: PartnerConfig(CLIENT, CLIENT_PW)},
    )
    await server.start("127.0.0.1", 0)
    try:
        src = tmp_path / "f.bin"
        src.write_bytes(b"x" * 5000)
        config = SessionConfig(CLIENT, CLIENT_PW, level=ProtocolLevel.V1_4, timeouts=TIMEOUTS)
        async with OFTPClient(config, "127.0.0.1", server.port) as client:
            result = await client.send_file(
                OutboundFile(dsn="DUP", originator=CLIENT, destination=SERVER, path=src)
            )
        assert result.refused_at == "SFNA" and result.reason == SfnaReason.DUPLICATE_FILE
    finally:
        await server.close()
