"""The README's DAG example builds a real DAG with the real operator (docs match the code)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_dag_example_builds() -> None:
    from airflow.sdk import DAG

    from oftp2_provider.operators.oftp2 import OFTP2SendOperator

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    dag = namespace["dag"]
    assert isinstance(dag, DAG) and dag.dag_id == "send_invoices"
    (task,) = dag.tasks
    assert isinstance(task, OFTP2SendOperator)
    assert task.task_id == "send" and task.wait_for_eerp
