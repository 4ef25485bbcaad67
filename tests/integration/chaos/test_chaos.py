"""Connections cut at random points: every file arrives exactly once, intact (bounded run for make test).

Each test runs 10 transfers of up to 300 kB through :class:`~.harness.CuttingProxy` with a fixed
seed (in the test id; ``OFTP2_CHAOS_SEED`` overrides it to reproduce or explore).  The full
100-transfer soak is ``tests/benchmarks/test_chaos_soak.py``.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from .harness import run_chaos

SEED = int(os.environ.get("OFTP2_CHAOS_SEED", "20261124"))
COUNT = 10
MAX_SIZE = 300_000


@pytest.mark.parametrize("seed", [SEED], ids=lambda s: f"seed={s}")
async def test_cut_connections_plain(seed: int, tmp_path: Path) -> None:
    report = await run_chaos(seed, COUNT, tmp_path, max_size=MAX_SIZE)
    print(report.table())
    report.check()
    assert report.proxy_cuts, "the schedule made no cut: the test would prove nothing"


@pytest.mark.parametrize("seed", [SEED + 1], ids=lambda s: f"seed={s}")
async def test_cut_connections_tls(
    seed: int, tmp_path: Path, chaos_tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    report = await run_chaos(seed, COUNT, tmp_path, max_size=MAX_SIZE, tls=chaos_tls)
    print(report.table())
    report.check()
    assert report.proxy_cuts, "the schedule made no cut: the test would prove nothing"
