"""``make demo``: run what exists of the end-to-end path and print a summary.

Grows with the project; for now it generates the demo PKI and checks the Airflow registration.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    from oftp2_provider.get_provider_info import get_provider_info
    from oftp2_provider.pki import generate_test_pki

    console = Console()
    table = Table(title="airflow-provider-oftp2 demo")
    table.add_column("step")
    table.add_column("result")
    ok = True
    workdir = Path(tempfile.mkdtemp(prefix="oftp2-demo-"))
    pki = generate_test_pki(workdir / "pki")
    table.add_row("demo certificates", f"CA and identities in {pki.directory}")
    info = get_provider_info()
    table.add_row("provider registration", f"{info['package-name']} {info['versions'][0]}")
    console.print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
