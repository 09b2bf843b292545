from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from polymodal.backends._schema import inline_refs, is_object_schema, schema_instruction, to_openai_strict
from polymodal.errors import ConfigError


class Address(BaseModel):
    """Where."""

    street: str
    city: str | None = None


class Customer(BaseModel):
    name: str = Field(description="Full name", min_length=1)
    kind: Literal["person", "company"] = "person"
    address: Address = Field(description="Billing address")
    tags: list[str] = Field(default_factory=list, max_length=5)
    shipping: Address | None = None


class Node(BaseModel):
    value: int
    children: list[Node] = []


def test_openai_strict_form() -> None:
    source = Customer.model_json_schema()
    snapshot = repr(source)
    strict = to_openai_strict(source)
    assert repr(source) == snapshot, "input must not be modified"

    assert strict["additionalProperties"] is False
    assert strict["required"] == ["name", "kind", "address", "tags", "shipping"]
    props = strict["properties"]
    assert props["name"] == {
        "description": "Full name",
        "title": "Name",
        "type": "string",
    }  # minLength dropped
    assert props["kind"]["anyOf"][-1] == {"type": "null"} and "default" not in props["kind"]
    assert props["address"] == {"$ref": "#/$defs/Address"}  # sibling description dropped, ref kept
    assert props["tags"]["type"] == ["array", "null"] and props["tags"]["maxItems"] == 5
    assert props["shipping"]["anyOf"] == [{"$ref": "#/$defs/Address"}, {"type": "null"}]
    address = strict["$defs"]["Address"]
    assert address["required"] == ["street", "city"] and address["additionalProperties"] is False
    assert address["properties"]["city"]["anyOf"] == [{"type": "string"}, {"type": "null"}]


def test_all_of_and_one_of_rewritten() -> None:
    schema = {
        "type": "object",
        "properties": {
            "x": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
            "y": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["x", "y"],
    }
    strict = to_openai_strict(schema)
    assert strict["properties"]["x"] == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert strict["properties"]["y"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}


def test_recursive_schema_keeps_refs_for_openai() -> None:
    strict = to_openai_strict(Node.model_json_schema())  # root is {"$ref": "#/$defs/Node", "$defs": ...}
    assert strict["type"] == "object" and strict["required"] == ["value", "children"]
    assert strict["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert strict["$defs"]["Node"]["properties"]["children"]["type"] == ["array", "null"]
    assert is_object_schema(Node.model_json_schema())


def test_inline_refs() -> None:
    inlined = inline_refs(Customer.model_json_schema())
    assert "$defs" not in inlined
    assert inlined["properties"]["address"]["properties"]["street"] == {"title": "Street", "type": "string"}
    assert inlined["properties"]["address"]["description"] == "Billing address"  # the sibling wins


def test_inline_refs_refuses_recursion() -> None:
    with pytest.raises(ConfigError):
        inline_refs(Node.model_json_schema())


def test_object_detection_and_instruction() -> None:
    assert is_object_schema(Customer.model_json_schema())
    assert not is_object_schema({"type": "array", "items": {"type": "string"}})
    text = schema_instruction("Customer", {"type": "object"})
    assert "JSON" in text and '{"type":"object"}' in text
