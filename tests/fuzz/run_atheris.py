"""libFuzzer/atheris entry point for one target of :mod:`tests.fuzz.targets`.

Usage: ``python -m tests.fuzz.run_atheris TARGET [libFuzzer options] [corpus dirs]``, e.g.
``python -m tests.fuzz.run_atheris commands -runs=100000 -rss_limit_mb=1024 corpus/``.
The project's modules are imported with coverage instrumentation; an exception that the target
does not allow ends the run with a crash file (``-artifact_prefix``) and a non-zero exit status.
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports(include=["oftp2_provider"]):
    from tests.fuzz import targets


def main() -> None:
    """Run libFuzzer on the target named by the first argument."""
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        raise SystemExit(f"usage: run_atheris TARGET [libFuzzer args]; targets: {', '.join(targets.TARGETS)}")
    target = targets.TARGETS[sys.argv[1]]
    logging.disable(logging.WARNING)  # refusals are logged at WARNING; catch-all tracebacks stay visible
    if target.name in ("cms", "auth", "session"):
        targets.context()  # keys and sample files before the first input
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
