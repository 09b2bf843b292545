"""JSON-schema transforms for providers' structured-output modes.

Pydantic emits standard JSON Schema (``$defs``/``$ref``, optional fields with defaults, ``allOf`` wrappers);
each provider accepts a different subset. The functions here are pure: they never change their input.

- :func:`to_openai_strict`: OpenAI strict ``json_schema`` mode (every property required, optional ->
  nullable, ``additionalProperties: false``, unsupported keywords dropped, ``$defs`` kept with their refs).
- :func:`inline_refs`: resolve local ``$ref``s for providers without reference support (Gemini, Ollama).
- :func:`schema_instruction`: the prompt text used when a provider can only be asked for "some JSON".
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from polymodal.errors import ConfigError

JsonSchema = dict[str, Any]

#: Keywords OpenAI strict mode understands; everything else (default, examples, patternProperties,
#: minProperties, if/then/else, ...) is dropped.
_OPENAI_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "description",
        "title",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
_OPENAI_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _merge_all_of(node: JsonSchema) -> JsonSchema:
    """Fold ``allOf`` into its parent (pydantic wraps a described ``$ref`` in a one-item ``allOf``)."""
    parts = node.get("allOf")
    if not isinstance(parts, list):
        return node
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(merged.get("properties"), dict):
                merged["properties"] = {**merged["properties"], **value}
            elif key == "required" and isinstance(merged.get("required"), list):
                merged["required"] = list(dict.fromkeys([*merged["required"], *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _is_nullable(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    options = node.get("anyOf")
    return isinstance(options, list) and any(_is_nullable(o) for o in options if isinstance(o, Mapping))


def _make_nullable(node: JsonSchema) -> JsonSchema:
    if _is_nullable(node):
        return node
    kind = node.get("type")
    if isinstance(kind, str) and "$ref" not in node and "anyOf" not in node and "enum" not in node:
        return {**node, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**node, "type": [*kind, "null"]}
    if isinstance(node.get("anyOf"), list):
        return {**node, "anyOf": [*node["anyOf"], {"type": "null"}]}
    description = node.get("description")
    wrapped: JsonSchema = {"anyOf": [node, {"type": "null"}]}
    if description is not None:
        wrapped["description"] = description
    return wrapped


def _strict_node(node: Any, *, root: bool = False) -> Any:
    if not isinstance(node, Mapping):
        return node
    current: JsonSchema = _merge_all_of(dict(node))
    if "oneOf" in current and "anyOf" not in current:
        current["anyOf"] = current.pop("oneOf")
    if "$ref" in current and not root and len(current) > 1:
        # OpenAI does not allow keywords beside $ref: keep only the reference (and its description).
        current = {"$ref": current["$ref"]}
    out: JsonSchema = {}
    for key, value in current.items():
        if key not in _OPENAI_KEYWORDS and not (root and key == "definitions"):
            continue
        if key == "format" and value not in _OPENAI_FORMATS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out["$defs" if key == "definitions" else key] = {k: _strict_node(v) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strict_node(v) for v in value]
        elif key == "items":
            out[key] = _strict_node(value)
        elif key == "additionalProperties":
            continue
        else:
            out[key] = copy.deepcopy(value)
    is_object = out.get("type") == "object" or "properties" in out
    if is_object:
        properties: dict[str, Any] = out.get("properties", {})
        required = set(current.get("required", []))
        out["properties"] = {
            name: (prop if name in required else _make_nullable(prop)) for name, prop in properties.items()
        }
        out["required"] = list(properties)
        out["additionalProperties"] = False
        out.setdefault("type", "object")
    return out


def deref_root(schema: Mapping[str, Any]) -> JsonSchema:
    """Replace a root that is only a ``$ref`` (pydantic's form for self-referencing models) by its target,
    keeping ``$defs`` so inner references still resolve. Other schemas are returned as a shallow copy."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return dict(schema)
    target = _resolve_pointer(schema, ref)
    rest = {k: v for k, v in schema.items() if k != "$ref"}
    return {**target, **rest} if isinstance(target, Mapping) else dict(schema)


def to_openai_strict(schema: Mapping[str, Any]) -> JsonSchema:
    """Convert a JSON schema to OpenAI's strict structured-output subset.

    Every object lists all its properties as required and forbids extra ones; a property that was optional
    becomes nullable (the model answers ``null`` where the value is absent); ``oneOf`` becomes ``anyOf``;
    ``allOf`` is merged; keywords OpenAI rejects (``default``, ``examples``...) are dropped; ``$defs`` and
    local ``$ref``s are kept (OpenAI resolves them, recursion included).
    """
    return dict(_strict_node(deref_root(schema), root=True))


def is_object_schema(schema: Mapping[str, Any]) -> bool:
    """True when the schema's root describes a JSON object (what strict modes and tool inputs require)."""
    root = deref_root(schema)
    return root.get("type") == "object" or ("properties" in root and "type" not in root)


def _resolve_pointer(root: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ConfigError(f"schema reference {ref!r} is not local", hint="use $defs inside the schema")
    node: Any = root
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or token not in node:
            raise ConfigError(f"schema reference {ref!r} points nowhere")
        node = node[token]
    return node


def inline_refs(schema: Mapping[str, Any]) -> JsonSchema:
    """Replace every local ``$ref`` with a copy of its target and drop ``$defs``/``definitions``.

    A recursive schema cannot be inlined: that raises :class:`~polymodal.errors.ConfigError`.
    """

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in seen:
                raise ConfigError(
                    f"schema is recursive through {ref!r}; this provider cannot take references",
                    hint="flatten the model or pick a provider with $ref support (openai, anthropic)",
                )
            target = walk(_resolve_pointer(schema, ref), (*seen, ref))
            siblings = {k: walk(v, seen) for k, v in node.items() if k != "$ref"}
            return {**target, **siblings} if isinstance(target, dict) else target
        return {k: walk(v, seen) for k, v in node.items() if k not in ("$defs", "definitions")}

    result = walk(schema, ())
    return dict(result)


def schema_instruction(schema_name: str, schema: Mapping[str, Any]) -> str:
    """Prompt text asking for one JSON object that satisfies ``schema`` (for JSON-mode-only providers)."""
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return (
        f"Answer with one JSON object only (no prose, no code fences) that satisfies the JSON schema "
        f"{schema_name!r} below. Use null where a value is absent.\n{text}"
    )


def walk_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside ``node`` (itself included), depth first: the nodes of a JSON schema."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_objects(item)


__all__ = [
    "JsonSchema",
    "deref_root",
    "inline_refs",
    "is_object_schema",
    "schema_instruction",
    "to_openai_strict",
    "walk_objects",
]
