"""docs/gateway.md embeds the configuration reference generated from the models: they must agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from oftp2_provider.gateway.config import GatewayConfig
from oftp2_provider.gateway.docgen import embedded_reference, render_reference, update_page

PAGE = Path(__file__).resolve().parents[3] / "docs" / "gateway.md"


def test_committed_page_matches_the_models() -> None:
    assert embedded_reference(PAGE) == render_reference(), (
        "docs/gateway.md is out of date: run `python -m oftp2_provider.gateway.docgen docs/gateway.md`"
    )


def test_every_field_of_every_table_is_documented() -> None:
    text = render_reference()
    schema = GatewayConfig.model_json_schema()
    for name, model in schema["$defs"].items():
        for field in model["properties"]:
            assert f"| `{field}` |" in text, (name, field)
    assert "| `partners` |" in text and "### `partners.<name>.security`" in text


def test_update_page_detects_drift(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE.read_text().replace("| `max_sessions` |", "| `max_sesions` |"))
    assert embedded_reference(page) != render_reference()
    assert update_page(page) is True
    assert embedded_reference(page) == render_reference()
    assert update_page(page) is False
    page.write_text("no markers here")
    with pytest.raises(ValueError, match="markers"):
        update_page(page)
