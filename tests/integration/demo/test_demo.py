"""``make demo`` for real: ``python -m oftp2_provider.demo`` in a subprocess must succeed on every step.

Starts the relay emulator, three gateways, ``relay-forward -L`` and four Airflow processes (about
1.5 minutes on 2 cores), so it is marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oftp2_provider.demo.runner import STEPS

pytestmark = pytest.mark.slow


def _row(output: str, name: str) -> str:
    """The result column of the table row that starts with ``name``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)]
        if len(cells) > 3 and cells[1] == name:
            return cells[2]
    raise AssertionError(f"no table row {name!r} in:\n{output}")


def test_make_demo_runs_every_step(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW", "OFTP2_")) and k != "PYTHONPATH"
    }
    work = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "oftp2_provider.demo", "--workdir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    rows = {name: _row(output, name) for name in ("certificates", "services", *STEPS)}
    assert rows == dict.fromkeys(rows, "OK"), output
    assert proc.returncode == 0, output
    # the same in the machine-readable summary; the transfers' lives come from the ledgers
    summary = {s["step"]: s for s in json.loads((work / "summary.json").read_text())}
    assert [s["status"] for s in summary.values()] == ["OK"] * (2 + len(STEPS))
    assert "sent → delivered; EERP signature verified" in summary[STEPS[0]]["detail"]
    assert "receipt_released" in summary[STEPS[1]]["detail"]
    assert "delivered; EERP signature verified" in summary[STEPS[1]]["detail"]
    assert "delivered; EERP signature verified" in summary[STEPS[3]]["detail"]
    # every process the demo started is gone (the gateways were started with paths in the work dir)
    leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], leftovers
