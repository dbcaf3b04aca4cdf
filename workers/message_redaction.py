"""Redaction and restoring for whole chat turns: text parts, tool call arguments and tool results are redacted per
the partner's policy (images pass as they are: they are not redacted); placeholders come back in the answer's
text and in the arguments of the tool calls it asks for.

Tool call arguments are JSON: their string values are redacted and restored one by one, so a placeholder never
breaks the JSON and an original with quotes in it comes back escaped."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway_core.jobs.chat_options import FunctionCall, TextPart, ToolCall
from gateway_core.jobs.models import Message
from gateway_core.redaction import PlaceholderMap, RedactionError

if TYPE_CHECKING:
    from gateway_core.redaction import Redactor


def redact_message(redactor: Redactor, message: Message, placeholders: PlaceholderMap, salt: str,
                   counts: Counter[str]) -> Message:
    if message.images() and not redactor.policy.allow_images:
        raise RedactionError("this partner's policy refuses images")

    def redact(text: str) -> str:
        result = redactor.redact(text, placeholders, salt=salt)
        counts.update(result.counts)
        return result.text

    content: Any
    if isinstance(message.content, str):
        content = redact(message.content)
    else:
        content = [TextPart(type="text", text=redact(p.text)) if isinstance(p, TextPart) else p
                   for p in message.content]
    calls = None
    if message.tool_calls is not None:
        calls = [_with_arguments(call, _in_json(call.function.arguments, redact)) for call in message.tool_calls]
    return message.model_copy(update={"content": content, "tool_calls": calls})


def restore_tool_calls(calls: list[ToolCall] | None, restore: Callable[[str], str]) -> list[ToolCall] | None:
    if calls is None:
        return None
    return [_with_arguments(call, _in_json(call.function.arguments, restore)) for call in calls]


def _with_arguments(call: ToolCall, arguments: str) -> ToolCall:
    return call.model_copy(update={"function": FunctionCall(name=call.function.name, arguments=arguments)})


def _in_json(text: str, change: Callable[[str], str]) -> str:
    """`change` applied to every string value inside the JSON `text`; to the whole text if it is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return change(text)
    return json.dumps(_inside(value, change), ensure_ascii=False)


def _inside(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_inside(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _inside(v, change) for k, v in value.items()}
    return value
