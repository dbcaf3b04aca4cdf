"""Output contracts: compatibility rules, lenient parsing, strict validation. The registry, which keeps contracts
in Redis, is tested in tests/integration/test_contracts.py."""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from gateway_core.contracts import (
    InvalidSchema,
    check_compatibility,
    check_schema,
    parse_lenient,
    parse_reference,
    validation_errors,
)

INVOICE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "string"},
        "total": {"type": ["number", "string"]},
        "status": {"enum": ["draft", "sent", "paid"]},
        "customer": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "email": {"type": "string", "maxLength": 200}},
            "required": ["id"],
        },
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["customer_id", "total"],
}


def changed(**edits: Any) -> dict[str, Any]:
    """A deep copy of INVOICE with `edits` applied: keys are paths joined by '__', a value of None deletes."""
    schema = copy.deepcopy(INVOICE)
    for dotted, value in edits.items():
        *parents, last = dotted.split("__")
        node = schema
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return schema


def verdict_for(**edits: Any) -> list[str]:
    verdict = check_compatibility(INVOICE, changed(**edits))
    assert verdict.compatible is (not verdict.problems)
    return verdict.problems


# --- compatibility ----------------------------------------------------------------------------------------------------


def test_the_same_schema_and_annotation_changes_are_compatible() -> None:
    assert check_compatibility(INVOICE, INVOICE).compatible
    assert verdict_for(title="Invoice", properties__total={"type": ["string", "number"], "description": "sum"}) == []


def test_removing_a_required_field_is_refused_naming_it() -> None:
    assert verdict_for(required=["total"]) == ["required field 'customer_id' removed"]
    problems = verdict_for(required=["total"], properties__customer_id=None)
    assert problems == ["required field 'customer_id' removed"]


def test_narrowing_a_type_is_refused_with_the_path() -> None:
    assert verdict_for(properties__total={"type": "number"}) == [
        "properties.total: type narrowed from ['number','string'] to 'number'"
    ]
    assert verdict_for(properties__customer_id={"type": "integer"}) == [
        "properties.customer_id: type changed from 'string' to 'integer'"
    ]


def test_widening_a_type_is_refused_too() -> None:
    problems = verdict_for(properties__customer_id={"type": ["string", "null"]})
    assert problems == ["properties.customer_id: type widened from 'string' to ['null','string']"]
    number = {"type": "object", "properties": {"n": {"type": "integer"}}}
    wider = {"type": "object", "properties": {"n": {"type": "number"}}}
    assert check_compatibility(number, wider).problems == ["properties.n: type widened from 'integer' to 'number'"]
    assert check_compatibility(wider, number).problems == ["properties.n: type narrowed from 'number' to 'integer'"]


def test_enum_values_may_be_neither_removed_nor_added() -> None:
    assert verdict_for(properties__status={"enum": ["draft", "sent"]}) == [
        "properties.status: enum value 'paid' removed"
    ]
    assert verdict_for(properties__status={"enum": ["draft", "sent", "paid", "void"]}) == [
        "properties.status: enum value 'void' added"
    ]
    assert verdict_for(properties__status={"type": "string", "enum": ["paid", "draft", "sent"]}) == []


def test_adding_properties_is_allowed_optional_or_required() -> None:
    assert verdict_for(properties__currency={"type": "string"}) == []
    assert verdict_for(properties__currency={"type": "string"}, required=["customer_id", "total", "currency"]) == []
    assert verdict_for(required=["customer_id", "total", "status"]) == []  # an optional field becomes required


def test_removing_an_optional_property_is_refused() -> None:
    assert verdict_for(properties__status=None) == [
        "optional property 'status' removed: the new version no longer says what it holds"
    ]


def test_nested_objects_are_checked() -> None:
    problems = verdict_for(properties__customer__required=[])
    assert problems == ["properties.customer: required field 'id' removed"]
    problems = verdict_for(properties__customer__properties__email={"type": "string", "maxLength": 100})
    assert problems == ["properties.customer.properties.email: maxLength tightened from 200 to 100"]


def test_array_items_are_checked() -> None:
    problems = verdict_for(properties__lines__items__required=["sku"])
    assert problems == ["properties.lines.items: required field 'qty' removed"]
    problems = verdict_for(properties__lines__items__properties__sku={"type": "integer"})
    assert problems == ["properties.lines.items.properties.sku: type changed from 'string' to 'integer'"]
    assert verdict_for(properties__lines__items={"type": "string"}) == [
        "properties.lines.items: type changed from 'object' to 'string'"
    ]


def test_tightened_and_loosened_constraints_are_refused() -> None:
    assert verdict_for(properties__lines__items__properties__qty={"type": "integer", "minimum": 2}) == [
        "properties.lines.items.properties.qty: minimum tightened from 1 to 2"
    ]
    assert verdict_for(properties__lines__items__properties__qty={"type": "integer", "exclusiveMinimum": 1}) == [
        "properties.lines.items.properties.qty: lower bound tightened from minimum 1 to exclusiveMinimum 1"
    ]
    assert verdict_for(properties__lines__items__properties__qty={"type": "integer"}) == [
        "properties.lines.items.properties.qty: minimum 1 removed"
    ]
    assert verdict_for(properties__customer_id={"type": "string", "pattern": "^C[0-9]+$"}) == [
        "properties.customer_id: pattern '^C[0-9]+$' added"
    ]
    assert verdict_for(properties__lines__maxItems=50) == ["properties.lines: maxItems 50 added"]


def test_additional_properties_may_open_but_not_close() -> None:
    closed = {**INVOICE, "additionalProperties": False}
    assert check_compatibility(closed, INVOICE).compatible
    assert check_compatibility(INVOICE, closed).problems == [
        "additionalProperties closed: outputs with properties beyond those listed are now refused"
    ]
    ints = {"type": "object", "additionalProperties": {"type": "integer"}}
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    assert check_compatibility(ints, strings).problems == [
        "additionalProperties: type changed from 'integer' to 'string'"
    ]
    # a new property must still fit what callers expect of every extra property
    assert check_compatibility(ints, {**ints, "properties": {"note": {"type": "string"}}}).problems == [
        "properties.note: type changed from 'integer' to 'string'"
    ]


def test_keywords_the_check_cannot_reason_about_are_reported_not_assumed_safe() -> None:
    old = {"type": "object", "allOf": [{"required": ["a"]}, {"required": ["b"]}]}
    new = {"type": "object", "allOf": [{"required": ["a"]}]}
    assert check_compatibility(old, new).problems == [
        "'allOf' changed: this check cannot tell whether callers are affected"
    ]


class Address(BaseModel):
    city: str
    postcode: str | None = None


class Node(BaseModel):
    label: str
    children: list[Node] = []


class OrderV1(BaseModel):
    id: int
    total: float = Field(ge=0)
    kind: Literal["sale", "refund"]
    ship_to: Address
    tree: Node
    note: str | None = None


class AddressV2(BaseModel):
    city: str
    postcode: str | None = None
    country: str = "NL"


class NodeV2(BaseModel):
    label: str
    weight: int = 0
    children: list[NodeV2] = []


class OrderV2(BaseModel):
    id: int | None
    total: float = Field(ge=0)
    kind: Literal["sale"]
    ship_to: AddressV2
    tree: NodeV2
    note: str | None = None
    created: str


def test_pydantic_schemas_refs_optionals_and_recursion() -> None:
    v1, v2 = OrderV1.model_json_schema(), OrderV2.model_json_schema()
    assert check_compatibility(v1, v1).compatible
    assert check_compatibility(v1, v2).problems == [
        "properties.id: type widened from 'integer' to ['integer','null']",
        "properties.kind: enum value 'refund' removed",
    ]

    class NodeV3(BaseModel):
        label: int
        children: list[NodeV3] = []

    class OrderV3(OrderV1):
        tree: NodeV3  # type: ignore[assignment]

    problems = check_compatibility(v1, OrderV3.model_json_schema()).problems
    assert problems == ["properties.tree.properties.label: type changed from 'string' to 'integer'"]


# --- lenient parsing --------------------------------------------------------------------------------------------------


def test_parse_lenient_plain_and_fenced_json() -> None:
    assert parse_lenient('  {"a": 1}\n') == {"a": 1}
    assert parse_lenient("[1, 2]") == [1, 2]
    assert parse_lenient('Here you go:\n```json\n{"total": 12.5}\n```\nAnything else?') == {"total": 12.5}
    text = 'First:\n```python\nprint("hi")\n```\nThen:\n```\n{"ok": true}\n```\n```json\n{"later": 1}\n```'
    assert parse_lenient(text) == {"ok": True}  # the first fenced block that parses


def test_parse_lenient_after_leading_prose_with_braces_inside_strings() -> None:
    text = 'Sure! I use {curly} words and [refs] freely.\n{"msg": "keep {these} and [those]", "n": [1, {"x": "}"}]}'
    assert parse_lenient(text) == {"msg": "keep {these} and [those]", "n": [1, {"x": "}"}]}
    assert parse_lenient('As shown in [1], the answer is {"a": 2}. Hope it helps') == {"a": 2}
    assert parse_lenient("The list: [1, 2, 3] is all.") == [1, 2, 3]


def test_parse_lenient_prefers_a_candidate_valid_under_the_schema() -> None:
    schema = {"type": "object", "required": ["b"]}
    assert parse_lenient('Ignore {"a": 1}; the answer is {"b": 2}', schema) == {"b": 2}
    assert parse_lenient('only {"a": 1} here', schema) == {"a": 1}  # validation then says what is wrong


def test_parse_lenient_without_json_raises_value_error() -> None:
    for text in ("", "No JSON here.", "almost {json: yes}", '```json\n{"broken": \n```'):
        with pytest.raises(ValueError, match=r"^no JSON object found in the output$"):
            parse_lenient(text)


def test_parse_lenient_is_bounded_on_hostile_text() -> None:
    started = time.monotonic()
    with pytest.raises(ValueError):
        parse_lenient("[" * 200_000)
    with pytest.raises(ValueError):
        parse_lenient('{"a": "' + "{" * 100_000)
    assert time.monotonic() - started < 5


# --- strict validation ------------------------------------------------------------------------------------------------


def test_validation_errors_name_the_path_and_never_echo_output_values() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "total": {"type": "number"},
            "id": {"type": "string"},
            "email": {"type": "string", "format": "email"},
            "status": {"enum": ["draft", "paid"]},
            "note": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
            "when": {"type": "string", "minLength": 40},
            "lines": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["total", "id"],
    }
    value = {"total": "SECRET-1", "email": "SECRET-2", "status": "SECRET-3", "note": "SECRET-4",
             "when": "SECRET-5", "lines": [1, "SECRET-6"], "SECRET-7-extra": 1}
    errors = validation_errors(schema, value, limit=50)
    assert not any("SECRET" in e for e in errors), errors
    assert "$.total: expected type number" in errors
    assert "$: missing required property 'id'" in errors
    assert "$.email: is not a valid 'email'" in errors
    assert '$.status: is not one of the allowed values ["draft", "paid"]' in errors
    assert "$.when: shorter than 40 characters" in errors
    assert "$.lines[1]: expected type integer" in errors
    assert "$: 1 unexpected property (additional properties are not allowed)" in errors
    assert any(e.startswith("$.note: matches none of the alternatives") for e in errors)
    assert len(validation_errors(schema, value, limit=2)) == 2
    assert validation_errors(schema, {"total": 1, "id": "x"}) == []
    assert validation_errors({"type": "object", "properties": {"o": {"anyOf": [{"type": "integer"},
                                                                              {"type": "null"}]}}},
                             {"o": "SECRET"}) == ["$.o: expected type integer or null"]


def test_invalid_schema_names_the_path() -> None:
    with pytest.raises(InvalidSchema) as caught:
        check_schema({"type": "object", "properties": {"a": {"type": "strnig"}}})
    assert caught.value.path == "$.properties.a.type"
    assert "$.properties.a.type" in str(caught.value) and "strnig" in str(caught.value)
    with pytest.raises(InvalidSchema) as caught:
        check_schema({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}})
    assert caught.value.path == "$.properties.a.pattern"
    with pytest.raises(InvalidSchema) as caught:
        check_schema({"type": "array", "items": {"$ref": "#/$defs/Missing"}})
    assert caught.value.path == "$.items.$ref"
    with pytest.raises(InvalidSchema, match="JSON object"):
        check_schema(["not", "an", "object"])
    check_schema(OrderV1.model_json_schema())


def test_parse_reference() -> None:
    assert parse_reference("invoice") == ("invoice", None)
    assert parse_reference("invoice@3") == ("invoice", 3)
    assert parse_reference("a.b-c_d@latest") == ("a.b-c_d", None)
    for bad in ("", "Invoice", "invoice@", "invoice@0", "invoice@x", "invoice@1@2", "@3", "in voice", "a" * 65):
        with pytest.raises(ValueError):
            parse_reference(bad)
