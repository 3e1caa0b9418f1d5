"""JSON Schema export in upstream's layout and format (`codex-limits schema --out DIR [--check]`).

Files are draft-07, keys sorted, 2-space indent, no trailing newline, nested types under
`definitions` without titles: the same shape as the files the Codex repository vendors, so a
binding generator sees one family of schemas. Descriptions come from docstrings and `Field`s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from . import ext, jsonrpc, methods, v1, v2

__all__ = [
    "ANY_JSON",
    "BUNDLE_NAME",
    "BUNDLE_TITLE",
    "DRAFT_07",
    "ERROR_DATA",
    "Schema",
    "check",
    "generate",
    "model_schema",
    "nullable_schema",
    "render",
    "write",
]

DRAFT_07: Final = "http://json-schema.org/draft-07/schema#"
BUNDLE_NAME: Final = "codex_app_server_protocol.schemas.json"
BUNDLE_TITLE: Final = "CodexLimitsAppServerProtocol"

Schema = dict[str, Any]


class _Draft07(GenerateJsonSchema):
    schema_dialect = DRAFT_07


def _generate(tp: Any) -> Schema:
    schema = TypeAdapter(tp).json_schema(ref_template="#/definitions/{model}", schema_generator=_Draft07)
    return schema


def _clean(node: Any) -> Any:
    """Turn pydantic's output into upstream's idiom, recursively over schema positions only."""
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "default" and value is None:
            continue
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            out["definitions" if key == "$defs" else key] = {k: _clean(v) for k, v in value.items()}
        elif key == "required":
            out[key] = sorted(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_clean(v) for v in value]
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _clean(value)
        else:
            out[key] = value
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
        other = next(s for s in any_of if s != {"type": "null"})
        typed_values = isinstance(other.get("additionalProperties"), dict)
        if "$ref" not in other and isinstance(other.get("type"), str) and not typed_values:
            del out["anyOf"]
            merged = dict(other)
            merged["type"] = [other["type"], "null"]
            out = {**merged, **out}
    if "$ref" in out and len(out) > 1:
        out = {k: v for k, v in out.items() if k != "$ref"} | {"allOf": [{"$ref": out["$ref"]}]}
    if out.get("additionalProperties") == {}:
        out["additionalProperties"] = True
    return out


ANY_JSON: Final = ["array", "boolean", "null", "number", "object", "string"]


def _any_value(properties: Schema) -> None:
    """`{}` becomes `true` (upstream's spelling); a described any-value lists every JSON type, because
    json-schema-to-typescript reads a type-less schema with keywords as an object."""
    for name, prop in list(properties.items()):
        if prop == {}:
            properties[name] = True
        elif isinstance(prop, dict) and set(prop) == {"description"}:
            properties[name] = {**prop, "type": ANY_JSON}


def _finish(schema: Schema, title: str) -> Schema:
    cleaned: Schema = _clean(schema)
    _any_value(cleaned.get("properties", {}))
    for definition in cleaned.get("definitions", {}).values():
        _any_value(definition.get("properties", {}))
    return {"$schema": DRAFT_07, **cleaned, "title": title}


def model_schema(model: type[BaseModel]) -> Schema:
    return _finish(_generate(model), model.__name__)


def nullable_schema(model: type[BaseModel], title: str) -> Schema:
    return _finish(_generate(model | None), title)


def _envelope_files() -> Iterator[tuple[str, Schema]]:
    request_id = _finish(_generate(jsonrpc.RequestId), "RequestId")
    yield "RequestId.json", request_id
    for model in (
        jsonrpc.JSONRPCRequest,
        jsonrpc.JSONRPCNotification,
        jsonrpc.JSONRPCResponse,
        jsonrpc.JSONRPCError,
        jsonrpc.JSONRPCErrorError,
    ):
        yield f"{model.__name__}.json", model_schema(model)
    message = _finish(
        _generate(
            jsonrpc.JSONRPCRequest | jsonrpc.JSONRPCNotification | jsonrpc.JSONRPCResponse | jsonrpc.JSONRPCError
        ),
        "JSONRPCMessage",
    )
    yield "JSONRPCMessage.json", message
    yield "ClientNotification.json", _client_notification()


def _client_notification() -> Schema:
    return {
        "$schema": DRAFT_07,
        "oneOf": [
            {
                "properties": {
                    "method": {"enum": [name], "title": f"{name.capitalize()}NotificationMethod", "type": "string"}
                },
                "required": ["method"],
                "title": f"{name.capitalize()}Notification",
                "type": "object",
            }
            for name in sorted(methods.CLIENT_NOTIFICATIONS)
        ],
        "title": "ClientNotification",
    }


ERROR_DATA: Final = (ext.ApplyRefusedData,)
"""Models that travel as `error.data` rather than as a method's params or result."""

_FOLDERS: Final = {v1.__name__: "v1", v2.__name__: "v2", ext.__name__: "ext"}


def _method_files() -> Iterator[tuple[str, Schema]]:
    """One file per params, result and notification model of the method table, plus `ERROR_DATA`.

    Upstream exports optional params of its own methods as `Nullable<Name>` (the params may be null)."""
    seen: set[type[BaseModel]] = set()

    def one(model: type[BaseModel], *, nullable: bool = False) -> Iterator[tuple[str, Schema]]:
        if model in seen:
            return
        seen.add(model)
        folder = _FOLDERS[model.__module__]
        if nullable:
            yield f"{folder}/Nullable{model.__name__}.json", nullable_schema(model, f"Nullable_{model.__name__}")
        else:
            yield f"{folder}/{model.__name__}.json", model_schema(model)

    for method in methods.METHODS.values():
        yield from one(method.params, nullable=not method.params_required and not method.extension)
        yield from one(method.result)
    for notification in methods.SERVER_NOTIFICATIONS.values():
        yield from one(notification.params)
    for model in ERROR_DATA:
        yield from one(model)


def _bundle(files: dict[str, Schema]) -> Schema:
    """Every type under one flat `definitions`, plus ClientRequest / ServerNotification unions."""
    definitions: Schema = {}
    for schema in files.values():
        body = {k: v for k, v in schema.items() if k not in ("$schema", "definitions", "title")}
        definitions.update(schema.get("definitions", {}))
        definitions[schema["title"]] = body
    definitions["ClientRequest"] = {
        "description": "Request from the client to the server.",
        "oneOf": [
            {
                "properties": {
                    "id": {"$ref": "#/definitions/RequestId"},
                    "method": {"const": m.name, "title": _union_title(m.name, "RequestMethod"), "type": "string"},
                    "params": (
                        {"$ref": f"#/definitions/{m.params.__name__}"}
                        if m.params_required
                        else {"anyOf": [{"$ref": f"#/definitions/{m.params.__name__}"}, {"type": "null"}]}
                    ),
                },
                "required": ["id", "method", "params"] if m.params_required else ["id", "method"],
                "title": _union_title(m.name, "Request"),
                "type": "object",
            }
            for m in methods.METHODS.values()
        ],
    }
    definitions["ServerNotification"] = {
        "description": "Notification sent from the server to the client.",
        "oneOf": [
            {
                "properties": {
                    "emittedAtMs": {
                        "description": "Unix time in milliseconds when the server emitted the notification.",
                        "format": "int64",
                        "type": "integer",
                    },
                    "method": {
                        "const": n.name,
                        "title": _union_title(n.name, "ServerNotificationMethod"),
                        "type": "string",
                    },
                    "params": {"$ref": f"#/definitions/{n.params.__name__}"},
                },
                "required": ["emittedAtMs", "method", "params"],
                "title": _union_title(n.name, "ServerNotification"),
                "type": "object",
            }
            for n in methods.SERVER_NOTIFICATIONS.values()
        ],
    }
    return {"$schema": DRAFT_07, "definitions": definitions, "title": BUNDLE_TITLE, "type": "object"}


def _union_title(method: str, suffix: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in method.split("/")) + suffix


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)


def generate() -> dict[str, str]:
    """Relative path -> file text for every exported schema."""
    files = dict(_envelope_files())
    files.update(_method_files())
    bundle = _bundle({p: s for p, s in files.items() if p not in ("JSONRPCMessage.json", "ClientNotification.json")})
    out = {path: render(schema) for path, schema in files.items()}
    out[BUNDLE_NAME] = render(bundle)
    return out


def write(out_dir: Path) -> list[Path]:
    written = []
    for rel, text in sorted(generate().items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check(out_dir: Path) -> list[str]:
    """Paths (relative) whose committed text differs from what the models generate, or that are extra."""
    expected = generate()
    drift = [rel for rel, text in sorted(expected.items()) if _read(out_dir / rel) != text]
    if out_dir.is_dir():
        actual = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.json")}
        drift += sorted(actual - expected.keys())
    return drift


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
