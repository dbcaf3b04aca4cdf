"""What a simulated partner answers, independent of any wire format: the parsed request and the completion.

A well-behaved answer echoes the last user message, or is the smallest instance of the JSON schema asked for.
With tools offered (and a tool choice other than none) it is a call to one of them whose string arguments echo the
last user message; after a tool result it is text echoing that result. A text answer honours the stop sequences
and the token limit (with the finish reason a partner gives for each).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

OFFCONTRACT_TEXT = "I cannot produce JSON right now."
_MAX_SCHEMA_DEPTH = 32

OutputMode = Literal["text", "json_object", "json_schema", "tool"]


@dataclass(slots=True, frozen=True)
class OutputRequest:
    """The output shape the caller asked for."""

    mode: OutputMode = "text"
    schema: Any = None
    tool_name: str = ""


TEXT_OUTPUT = OutputRequest()


@dataclass(slots=True, frozen=True)
class ToolSpec:
    name: str
    schema: Any = None


@dataclass(slots=True, frozen=True)
class ParsedRequest:
    model: str
    last_user_text: str
    prompt_chars: int
    output: OutputRequest
    stream: bool = False  # answer as server-sent events (partner_simulator.streaming)
    include_usage: bool = False  # OpenAI's stream_options.include_usage
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"  # "auto", "none", "required", or the one tool's name
    tool_result: str | None = None  # the conversation ends with a tool's result: its text
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None


Finish = Literal["stop", "length", "tool_calls"]


@dataclass(slots=True, frozen=True)
class Completion:
    """Wire-agnostic answer; `text` is the JSON document itself when the answer is structured."""

    text: str
    tool_name: str | None = None
    tool_input: Any = None
    finish: Finish = "stop"
    stop_sequence: str | None = None  # the stop sequence that ended the text


def estimate_tokens(chars: int) -> int:
    return max(1, chars // 4)


def new_id() -> str:
    return os.urandom(12).hex()


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def load_json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def content_text(content: Any) -> str:
    """Text of a message content given as a string or as a list of typed parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def read_messages(messages: Any) -> tuple[str, int] | str:
    """Return (last user text, total content chars), or an error message."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array."
    last_user_text = ""
    total_chars = 0
    for message in messages:
        if not isinstance(message, dict):
            return "Each entry of 'messages' must be an object."
        text = content_text(message.get("content"))
        total_chars += len(text)
        if message.get("role") == "user":
            last_user_text = text
    return last_user_text, total_chars


# --- minimal JSON-schema instances ---------------------------------------------------------------


def minimal_instance(schema: Any) -> Any:
    """Smallest plausible value satisfying `schema`: required properties only, first enum value."""
    return _instance_of(schema, schema if isinstance(schema, dict) else {}, 0)


def _instance_of(schema: Any, root: Mapping[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("$ref"), str):
        return _instance_of(_resolve_ref(schema["$ref"], root), root, depth + 1)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _instance_of(_prefer_non_null(options), root, depth + 1)
    return _instance_of_type(schema, _schema_type(schema), root, depth)


def _instance_of_type(schema: dict[str, Any], type_name: str, root: Mapping[str, Any], depth: int) -> Any:
    if type_name == "object":
        properties = schema.get("properties") or {}
        return {
            name: _instance_of(properties.get(name), root, depth + 1) if name in properties else "sim"
            for name in schema.get("required") or []
        }
    if type_name == "array":
        min_items = schema.get("minItems", 0)
        return [_instance_of(schema.get("items"), root, depth + 1) for _ in range(min_items)]
    scalars: dict[str, Any] = {"string": "sim", "integer": 1, "number": 1.0, "boolean": True, "null": None}
    return scalars.get(type_name, "sim")


def _schema_type(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    # Lower-cased: OpenAPI-style schemas (Gemini's responseSchema) spell types "OBJECT", "STRING", ...
    if isinstance(declared, list):
        non_null = [str(name).lower() for name in declared if str(name).lower() != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(declared, str):
        return declared.lower()
    if "properties" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _prefer_non_null(options: list[Any]) -> Any:
    for option in options:
        if not (isinstance(option, dict) and option.get("type") == "null"):
            return option
    return options[0]


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for segment in filter(None, ref[1:].split("/")):
        key = segment.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def tool_arguments(schema: Any, text: str) -> Any:
    """A minimal instance of a tool's parameters whose strings are `text` (at least one property filled)."""
    value = minimal_instance(schema) if isinstance(schema, dict) else {}
    if value == {} and isinstance(schema, dict) and isinstance(schema.get("properties"), dict) and schema["properties"]:
        first = next(iter(schema["properties"]))
        value = {first: _instance_of(schema["properties"][first], schema, 1)}
    return _echoing(value, text) if value != {} else {"input": text}


def _echoing(value: Any, text: str) -> Any:
    if value == "sim":
        return text
    if isinstance(value, list):
        return [_echoing(v, text) for v in value]
    if isinstance(value, dict):
        return {k: _echoing(v, text) for k, v in value.items()}
    return value


def _tool_call(parsed: ParsedRequest) -> Completion | None:
    if not parsed.tools or parsed.tool_choice == "none" or parsed.tool_result is not None:
        return None
    tool = next((t for t in parsed.tools if t.name == parsed.tool_choice), parsed.tools[0])
    arguments = tool_arguments(tool.schema, parsed.last_user_text)
    return Completion(json_text(arguments), tool_name=tool.name, tool_input=arguments, finish="tool_calls")


def _limited(text: str, parsed: ParsedRequest) -> Completion:
    """The text cut at the first stop sequence, or at the token limit."""
    for stop in parsed.stop:
        if stop and stop in text:
            return Completion(text[: text.index(stop)], stop_sequence=stop)
    if parsed.max_tokens is not None and estimate_tokens(len(text)) > parsed.max_tokens:
        return Completion(text[: parsed.max_tokens * 4], finish="length")
    return Completion(text)


def answer_for(partner_name: str, parsed: ParsedRequest) -> Completion:
    """The well-behaved answer: an echo of the prompt, or a minimal instance of the requested schema."""
    reply = f"Simulated reply from {partner_name}: {parsed.last_user_text}"
    if parsed.tool_result is not None:
        reply = f"Simulated reply from {partner_name}: the tool said {parsed.tool_result}"
    output = parsed.output
    if output.mode == "json_object":
        return Completion(json_text({"reply": reply}))
    if output.mode == "json_schema":
        return Completion(json_text(minimal_instance(output.schema)))
    if output.mode == "tool":
        tool_input = minimal_instance(output.schema)
        return Completion(json_text(tool_input), tool_name=output.tool_name, tool_input=tool_input,
                          finish="tool_calls")
    return _tool_call(parsed) or _limited(reply, parsed)
