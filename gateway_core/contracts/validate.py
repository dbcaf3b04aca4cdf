"""Strict JSON Schema (draft 2020-12): checking a contract's schema, and validating an output against it.

Validation messages name the JSON path and the rule that failed, never the output's values: model outputs are
customer data, and these messages end up in job records, logs and dead letters."""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from gateway_core.contracts.models import InvalidSchema

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_SCHEMA_BYTES = 256 * 1024
JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

# Keywords whose value is a schema, a list of schemas, or a map of name -> schema (draft 2020-12 applicators).
SCHEMA_KEYWORDS = ("additionalProperties", "items", "contains", "not", "if", "then", "else", "propertyNames",
                   "unevaluatedItems", "unevaluatedProperties")
SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_schema(schema: Any) -> None:
    """Refuse anything but a JSON Schema draft 2020-12 object whose $refs all point inside it. Raises InvalidSchema."""
    if not isinstance(schema, dict):
        raise InvalidSchema("$", f"a contract's schema must be a JSON object, not {_json_type(schema)}")
    if len(canonical(schema).encode()) > MAX_SCHEMA_BYTES:
        raise InvalidSchema("$", f"the schema is larger than {MAX_SCHEMA_BYTES // 1024} KiB")
    declared = schema.get("$schema")
    if declared is not None and str(declared).rstrip("#") != DRAFT_2020_12:
        raise InvalidSchema("$.$schema", f"contracts use JSON Schema draft 2020-12: remove '$schema' or set it to "
                                            f"{DRAFT_2020_12!r}")
    try:
        Draft202012Validator.check_schema(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    except SchemaError as exc:
        raise InvalidSchema(exc.json_path, _schema_problem(exc)) from None
    for path, ref in _refs(schema, "$"):
        if not isinstance(ref, str) or not ref.startswith("#") or (len(ref) > 1 and not ref.startswith("#/")):
            raise InvalidSchema(path, f"unsupported reference {ref!r}: contracts only use references inside the "
                                      "schema, as JSON pointers like '#/$defs/Item'")
        if resolve_pointer(schema, ref) is None:
            raise InvalidSchema(path, f"reference {ref!r} points at nothing in this schema")


def _schema_problem(exc: SchemaError) -> str:
    if exc.json_path.endswith(".type") and exc.validator == "anyOf":
        return f"unknown type {exc.instance!r}: use one of {', '.join(JSON_TYPES)}"
    return exc.message


def _refs(schema: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every $ref in schema positions (not inside enum, const, default or examples values), with its JSON path."""
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        yield f"{path}.$ref", schema["$ref"]
    for key in SCHEMA_KEYWORDS:
        if key in schema:
            yield from _refs(schema[key], f"{path}.{key}")
    for key in SCHEMA_LIST_KEYWORDS:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield from _refs(sub, f"{path}.{key}[{i}]")
    for key in SCHEMA_MAP_KEYWORDS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield from _refs(sub, f"{path}.{key}.{name}")


def resolve_pointer(root: Any, ref: str) -> Any:
    """The value a local reference ('#' or '#/a/b') points at, or None."""
    if ref == "#":
        return root
    node = root
    for raw in ref[2:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


@functools.lru_cache(maxsize=256)
def _compiled(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), format_checker=Draft202012Validator.FORMAT_CHECKER)


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for the schema, compiled once per distinct schema (formats checked: validation is strict)."""
    return _compiled(canonical(schema))


def validation_errors(schema: dict[str, Any], value: Any, limit: int = 10) -> list[str]:
    """Why `value` does not conform to `schema` ([] when it does): at most `limit` lines "path: what failed".

    No line quotes the value: '$.total: expected type number', never "'abc' is not of type 'number'"."""
    errors = itertools.islice(validator_for(schema).iter_errors(value), max(limit, 0))
    return [f"{error.json_path}: {describe(error)}" for error in errors]


def is_valid(schema: dict[str, Any], value: Any) -> bool:
    return bool(validator_for(schema).is_valid(value))


def describe(error: ValidationError) -> str:
    """What failed, from the schema's side only (the keyword and its schema value, never the instance)."""
    keyword, expected = error.validator, error.validator_value
    simple = {
        "minLength": f"shorter than {expected} characters",
        "maxLength": f"longer than {expected} characters",
        "minimum": f"less than the minimum {expected}",
        "maximum": f"greater than the maximum {expected}",
        "exclusiveMinimum": f"not greater than {expected}",
        "exclusiveMaximum": f"not less than {expected}",
        "multipleOf": f"not a multiple of {expected}",
        "pattern": f"does not match the pattern {_short(expected)}",
        "format": f"is not a valid {expected!r}",
        "minItems": f"has fewer than {expected} items",
        "maxItems": f"has more than {expected} items",
        "uniqueItems": "has duplicate items",
        "items": "has more items than the schema allows",
        "minProperties": f"has fewer than {expected} properties",
        "maxProperties": f"has more than {expected} properties",
        "contains": "has no item matching 'contains'",
        "minContains": f"has fewer than {expected} items matching 'contains'",
        "maxContains": f"has more than {expected} items matching 'contains'",
        "not": "matches a schema it must not match",
        "dependentRequired": "lacks a property that another present property requires",
        "propertyNames": "has a property name the schema does not allow",
        "unevaluatedProperties": "has properties the schema does not allow",
        "unevaluatedItems": "has items the schema does not allow",
        "const": f"is not the required constant {_short(expected)}",
        "enum": f"is not one of the allowed values {_short(expected)}",
    }
    if keyword in simple:
        return simple[keyword]
    if keyword == "type":
        return f"expected type {_types(expected)}"
    if keyword == "required":
        found = re.match(r"^(.*) is a required property$", error.message)
        return f"missing required property {found.group(1) if found else ''}".rstrip()
    if keyword == "additionalProperties":
        extra = _extra_properties(error)
        return f"{extra} unexpected propert{'y' if extra == 1 else 'ies'} (additional properties are not allowed)"
    if keyword in ("anyOf", "oneOf"):
        return _alternatives(error)
    if keyword is None or error.schema is False:
        return "no value is allowed here"
    return f"fails the {keyword!r} rule"


def _alternatives(error: ValidationError) -> str:
    if not error.context:
        return "matches more than one of the alternatives (exactly one must match)"
    direct = [e for e in error.context if not e.relative_path]
    if direct and all(e.validator == "type" for e in direct) and len(direct) == len(error.context):
        types = sorted({t for e in direct for t in _as_list(e.validator_value)})
        return f"expected type {_types(types)}"
    closest = best_match(error.context)
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in closest.relative_path)
    return f"matches none of the alternatives (closest: {where.lstrip('.') + ': ' if where else ''}{describe(closest)})"


def _extra_properties(error: ValidationError) -> int:
    if not isinstance(error.instance, dict) or not isinstance(error.schema, dict):
        return 0
    known = error.schema.get("properties", {})
    patterns = list(error.schema.get("patternProperties", {}))
    return sum(1 for key in error.instance if key not in known and not any(re.search(p, key) for p in patterns))


def _types(expected: Any) -> str:
    names = _as_list(expected)
    return " or ".join(str(n) for n in names)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _short(value: Any, width: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
