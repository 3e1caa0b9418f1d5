"""Reduce a JSON Schema to what a client can observe: member names, required, JSON types, nullability, enums.

Descriptions, titles, defaults and formats are left out; `$ref`s are followed by name.
"""

from __future__ import annotations

from typing import Any

Shape = Any


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    ref = schema.get("$ref")
    if ref is None and "allOf" in schema and len(schema["allOf"]) == 1:
        ref = schema["allOf"][0].get("$ref")
    if ref is None:
        return None, schema
    name = ref.rsplit("/", 1)[-1]
    return name, root["definitions"][name]


ANY_JSON = frozenset({"array", "boolean", "null", "number", "object", "string"})


def shape(schema: Any, root: dict[str, Any], seen: frozenset[str] = frozenset()) -> Shape:
    """Nullability is one wrapper, however it is spelled: `type: [T, "null"]` or `anyOf: [T, null]`."""
    if schema is True or schema == {} or (isinstance(schema, dict) and set(schema) <= {"description"}):
        return "any"
    if isinstance(schema, dict) and isinstance(schema.get("type"), list) and set(schema["type"]) >= ANY_JSON:
        return "any"
    assert isinstance(schema, dict), schema
    name, target = _resolve(schema, root)
    if name is not None:
        if name in seen:
            return ("ref", name)
        return shape(target, root, seen | {name})
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [shape(s, root, seen) for s in schema[key]]
            nullable = "null" in branches
            others = [b for b in branches if b != "null"]
            if len(others) == 1:
                return ("nullable", others[0]) if nullable else others[0]
            enums = [b for b in others if isinstance(b, tuple) and b[0] == "enum"]
            if enums and len(enums) == len(others):
                values = frozenset(v for e in enums for v in e[1])
                others = [("enum", values)]
            return ("union", nullable, tuple(sorted(map(repr, others))))
    types = schema.get("type")
    type_set = frozenset(types if isinstance(types, list) else [types] if types else [])
    if type_set == {"null"}:
        return "null"
    if "null" in type_set:
        return ("nullable", shape({**schema, "type": sorted(type_set - {"null"})}, root, seen))
    nullable = False
    if "enum" in schema:
        return ("enum", frozenset(schema["enum"]), nullable)
    if "properties" in schema or type_set & {"object"}:
        props = {k: shape(v, root, seen) for k, v in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties")
        extra_shape = shape(extra, root, seen) if isinstance(extra, dict) else extra
        return (
            "object",
            nullable,
            tuple(sorted(props.items(), key=lambda kv: kv[0])),
            frozenset(schema.get("required", [])),
            repr(extra_shape),
        )
    if "array" in type_set:
        return ("array", nullable, shape(schema.get("items", True), root, seen))
    return ("scalar", type_set)
