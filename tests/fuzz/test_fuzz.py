"""``make fuzz``: run every atheris target in a subprocess and fail on any finding.

Environment knobs: ``OFTP2_FUZZ_RUNS`` (total inputs over all targets, default 1 000 000, split by
each target's weight), ``OFTP2_FUZZ_TARGETS`` (comma-separated subset), ``OFTP2_FUZZ_JOBS``
(parallel targets, default 2), ``OFTP2_FUZZ_RSS_MB`` (libFuzzer's RSS limit per target, default
1024; a run that reaches it is a finding), ``OFTP2_FUZZ_ARTIFACTS`` (where crash inputs go).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, seeds

ROOT = Path(__file__).resolve().parents[2]
TOTAL_RUNS = int(os.environ.get("OFTP2_FUZZ_RUNS", "1000000"))
SELECTED = [t for t in os.environ.get("OFTP2_FUZZ_TARGETS", ",".join(TARGETS)).split(",") if t]
JOBS = int(os.environ.get("OFTP2_FUZZ_JOBS", "2"))
RSS_MB = int(os.environ.get("OFTP2_FUZZ_RSS_MB", "1024"))
#: RSS growth from the first status line to the last that counts as a leak (MB).
RSS_GROWTH_MB = int(os.environ.get("OFTP2_FUZZ_RSS_GROWTH_MB", "256"))


@dataclass
class FuzzRun:
    """What one target's libFuzzer run reported."""

    target: str
    budget: int
    returncode: int
    runs: int
    seconds: float
    rss_first_mb: int
    rss_last_mb: int
    tail: str


def budgets() -> dict[str, int]:
    """Inputs per selected target: ``TOTAL_RUNS`` split by weight, at least 1000 each."""
    weight = sum(TARGETS[t].weight for t in SELECTED)
    return {t: max(1000, round(TOTAL_RUNS * TARGETS[t].weight / weight)) for t in SELECTED}


def _run(target: str, budget: int, work: Path, artifacts: Path) -> FuzzRun:
    corpus = work / target
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds(target):
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    cmd = [
        sys.executable, "-m", "tests.fuzz.run_atheris", target,
        f"-runs={budget}", f"-rss_limit_mb={RSS_MB}", f"-malloc_limit_mb={RSS_MB}", "-timeout=10",
        "-max_len=4096", "-print_final_stats=1", f"-artifact_prefix={artifacts}/{target}-", str(corpus),
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, errors="replace", check=False)
    seconds = time.monotonic() - started
    out = proc.stderr + proc.stdout
    done = re.search(r"Done (\d+) runs", out)
    rss = [int(m) for m in re.findall(r"rss: (\d+)Mb", out)]
    return FuzzRun(
        target=target,
        budget=budget,
        returncode=proc.returncode,
        runs=int(done.group(1)) if done else 0,
        seconds=round(seconds, 1),
        rss_first_mb=rss[0] if rss else 0,
        rss_last_mb=rss[-1] if rss else 0,
        tail="\n".join(line for line in out.splitlines() if not line.startswith("#"))[-3000:],
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FuzzRun]:
    """Run all selected targets (``JOBS`` at a time) once for the module."""
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is not installed: pip install -r .ci/fuzz-requirements.txt")
    work = tmp_path_factory.mktemp("fuzz-corpus")
    artifacts = Path(os.environ.get("OFTP2_FUZZ_ARTIFACTS", str(tmp_path_factory.mktemp("fuzz-artifacts"))))
    artifacts.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(JOBS) as pool:
        futures = {t: pool.submit(_run, t, n, work, artifacts) for t, n in budgets().items()}
        out = {t: f.result() for t, f in futures.items()}
    summary = {t: {k: v for k, v in asdict(r).items() if k != "tail"} for t, r in out.items()}
    total = sum(r.runs for r in out.values())
    print(f"\nfuzz summary ({total} inputs): {json.dumps(summary, indent=1)}")
    (artifacts / "summary.json").write_text(json.dumps(summary, indent=1))
    return out


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("target", SELECTED)
def test_target_has_no_findings(results: dict[str, FuzzRun], target: str) -> None:
    """The target ran its whole budget, raised nothing unexpected and kept its memory bounded."""
    run = results[target]
    assert run.returncode == 0, f"{target}: finding (exit {run.returncode}):\n{run.tail}"
    assert run.runs >= run.budget, f"{target}: only {run.runs} of {run.budget} inputs ran:\n{run.tail}"
    growth = run.rss_last_mb - run.rss_first_mb
    assert growth <= RSS_GROWTH_MB, f"{target}: RSS grew by {growth} MB over {run.runs} inputs"


def test_total_budget(results: dict[str, FuzzRun]) -> None:
    """The selected targets together ran at least the configured number of inputs."""
    assert sum(r.runs for r in results.values()) >= min(TOTAL_RUNS, 1000 * len(SELECTED))
