"""Chaos soak (run by ``make bench``): 100 transfers per transport with connections cut at random points.

The same harness as ``tests/integration/chaos`` (a cutting TCP proxy on loopback, random sizes,
formats, levels, buffer sizes and credits, both directions, FIN and RST cuts, cuts just before
EFPA), at full length.  Environment: ``OFTP2_CHAOS_COUNT`` (default 100 transfers per transport),
``OFTP2_CHAOS_SEED`` (default 4242; printed in the test id and in the report line),
``OFTP2_CHAOS_MAX_SIZE`` (largest file, octets; default 2 000 000).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from tests.integration.chaos.harness import run_chaos

from oftp2_provider.pki import PKIBundle
from oftp2_provider.protocol.transport import client_ssl_context, server_ssl_context

COUNT = int(os.environ.get("OFTP2_CHAOS_COUNT", "100"))
SEED = int(os.environ.get("OFTP2_CHAOS_SEED", "4242"))
MAX_SIZE = int(os.environ.get("OFTP2_CHAOS_MAX_SIZE", "2000000"))


@pytest.fixture
def tls_pair(test_pki: PKIBundle) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return (
        server_ssl_context(test_pki.server.cert_path, test_pki.server.key_path),
        client_ssl_context(test_pki.ca.cert_path),
    )


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("seed", [SEED], ids=lambda s: f"seed={s}")
@pytest.mark.timeout(1800)
async def test_chaos_soak(
    seed: int, tls: bool, tmp_path: Path, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    report = await run_chaos(seed, COUNT, tmp_path, max_size=MAX_SIZE, tls=tls_pair if tls else None)
    print()
    print(report.table())
    report.check()
    assert len(report.proxy_cuts) >= COUNT // 2, "too few cuts for a soak"
    assert report.restarts > 0, "no transfer resumed from a partial file"
