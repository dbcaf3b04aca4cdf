"""Lenient parsing of a model's output into JSON: models wrap JSON in code fences and prose.

Parsing is lenient so that a well-formed answer is not lost to its wrapping; validation (validate.py) is strict."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from gateway_core.contracts.validate import is_valid

NO_JSON = "no JSON object found in the output"
MAX_ATTEMPTS = 256  # decode attempts in prose: bounds the work on long, brace-heavy text that holds no JSON
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_OPENER = re.compile(r"[\[{]")
_DECODER = json.JSONDecoder()


def parse_lenient(text: str, schema: dict[str, Any] | None = None) -> Any:
    """The JSON value in a model's output.

    In order: the whole text as JSON; else the fenced code blocks (```json ... ```, any tag or none) that parse;
    else the JSON objects and arrays that follow leading prose (from each '{' or '[' where a JSON value decodes).
    Among the candidates of the first kind that has any, the first that is valid under `schema` wins when a schema
    is given, else the first JSON object, else the first array: prose like "see [1]" before the real answer does
    not win over it. Raises ValueError('no JSON object found in the output') when nothing parses."""
    stripped = text.strip().lstrip("\ufeff")
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        pass
    for candidates in (_fenced(text), _embedded(text)):
        found = _choose(candidates, schema)
        if found is not _NOTHING:
            return found
    raise ValueError(NO_JSON)


_NOTHING = object()


def _choose(candidates: Iterator[Any], schema: dict[str, Any] | None) -> Any:
    first: Any = _NOTHING
    first_object: Any = _NOTHING
    for value in candidates:
        if schema is not None and is_valid(schema, value):
            return value
        if first is _NOTHING:
            first = value
        if isinstance(value, dict) and first_object is _NOTHING:
            first_object = value
            if schema is None:
                return value
    return first_object if first_object is not _NOTHING else first


def _fenced(text: str) -> Iterator[Any]:
    for match in _FENCE.finditer(text):
        try:
            yield json.loads(match.group(1))
        except (ValueError, RecursionError):
            continue


def _embedded(text: str) -> Iterator[Any]:
    """Top-level JSON objects/arrays inside prose, left to right (never one nested inside an earlier one)."""
    position, attempts = 0, 0
    while attempts < MAX_ATTEMPTS and (opener := _OPENER.search(text, position)) is not None:
        attempts += 1
        try:
            value, end = _DECODER.raw_decode(text, opener.start())
        except (ValueError, RecursionError):
            position = opener.start() + 1
            continue
        yield value
        position = end
