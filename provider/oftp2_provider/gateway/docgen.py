"""Generate the configuration reference of ``docs/gateway.md`` from the pydantic models.

:func:`render_reference` turns :meth:`GatewayConfig.model_json_schema` into Markdown tables, one
per configuration table, in the order a reader meets them.  ``docs/gateway.md`` embeds the output
between two marker comments; a test fails when the committed page and the models drift apart.
Regenerate with ``python -m oftp2_provider.gateway.docgen docs/gateway.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import config as config_module
from .config import GatewayConfig

__all__ = ["BEGIN", "END", "render_reference", "update_page"]

BEGIN = "<!-- BEGIN GENERATED CONFIGURATION REFERENCE (python -m oftp2_provider.gateway.docgen) -->"
END = "<!-- END GENERATED CONFIGURATION REFERENCE -->"


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return str(ref).rsplit("/", 1)[-1] if ref else None


def _type(schema: dict[str, Any]) -> str:
    name = _ref_name(schema)
    if name:
        return f"table ({name})"
    if "anyOf" in schema or "oneOf" in schema:
        parts = [_type(s) for s in schema.get("anyOf", schema.get("oneOf", []))]
        return " or ".join(dict.fromkeys(p for p in parts if p != "null")) + (
            " (optional)" if "null" in parts else ""
        )
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"table of name → {_type(extra)}"
        return "table"
    if kind == "null":
        return "null"
    words = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
    text = words.get(str(kind), str(kind or "any"))
    if schema.get("format") == "path":
        text = "path"
    if schema.get("format") == "password" or schema.get("writeOnly"):
        text = "secret string"
    bounds = []
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            bounds.append(f"{sign} {schema[key]}")
    if "minLength" in schema:
        bounds.append(f"length ≥ {schema['minLength']}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _children(schema: dict[str, Any]) -> list[str]:
    """Model names referenced by a property schema."""
    found: list[str] = []
    name = _ref_name(schema)
    if name:
        found.append(name)
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            found += _children(sub)
    if "items" in schema:
        found += _children(schema["items"])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        found += _children(extra)
    return found


def _default(model: type[BaseModel], field: str) -> str:
    info = model.model_fields[field]
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see table)"
    if value is None:
        return "—"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "`" + json.dumps([v.model_dump(mode="json") for v in value]) + "`"
    return f"`{json.dumps(value, default=str)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_reference() -> str:
    """The Markdown configuration reference (deterministic; ends with a newline)."""
    schema = GatewayConfig.model_json_schema()
    defs: dict[str, dict[str, Any]] = schema.get("$defs", {})
    models: dict[str, type[BaseModel]] = {
        name: obj
        for name in dir(config_module)
        if isinstance(obj := getattr(config_module, name), type) and issubclass(obj, BaseModel)
    }
    order: list[tuple[str, str, dict[str, Any]]] = [("GatewayConfig", "", schema)]
    seen = {"GatewayConfig"}
    index = 0
    while index < len(order):
        _name, path, node = order[index]
        index += 1
        for prop, sub in node.get("properties", {}).items():
            kind = sub.get("type") or ""
            for child in _children(sub):
                if child in seen or child not in defs:
                    continue
                seen.add(child)
                if child == "PartnerConfig":
                    child_path = f"{path}{prop}.<name>"
                elif kind == "array" or ("items" in sub):
                    child_path = f"{path}{prop}[]"
                else:
                    child_path = f"{path}{prop}"
                if child.endswith("Listener"):
                    const = defs[child]["properties"]["type"].get("const", "")
                    child_path = f'{path}{prop}[] (type = "{const}")'
                order.append((child, child_path + ".", defs[child]))
    lines: list[str] = []
    for name, path, node in order:
        title = "Top level" if not path else f"`{path.rstrip('.')}`"
        lines.append(f"### {title}")
        lines.append("")
        description = node.get("description", "")
        if description:
            lines.append(_cell(description.replace("``", "`")))
            lines.append("")
        lines.append("| Key | Type | Default | Description |")
        lines.append("|---|---|---|---|")
        model = models.get(name)
        for prop, sub in node.get("properties", {}).items():
            default = _default(model, prop) if model is not None else "—"
            lines.append(
                f"| `{prop}` | {_cell(_type(sub))} | {_cell(default)} | {_cell(sub.get('description', ''))} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def update_page(path: str | Path) -> bool:
    """Replace the generated section of ``path``; returns True when the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: markers {BEGIN!r} … {END!r} not found")
    new = text[: start + len(BEGIN)] + "\n\n" + render_reference() + "\n" + text[end:]
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def embedded_reference(path: str | Path) -> str:
    """The generated section currently in ``path`` (for the drift test)."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: markers not found")
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "docs/gateway.md"
    print(f"{target}: {'updated' if update_page(target) else 'up to date'}")
