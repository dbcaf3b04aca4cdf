"""Anthropic's messages format for conversations with images and tools, and its answers, read as OpenAI's.

- Images: `image` blocks, a base64 source for data: URLs and a url source otherwise.
- An assistant's tool calls are `tool_use` blocks; tool results are `tool_result` blocks in a user turn, and
  consecutive tool results share one user turn (Anthropic wants every result of a turn's calls together).
- `tools` take `input_schema`; `tool_choice` auto / any / tool / none.
- `stop_reason` end_turn and stop_sequence → stop, max_tokens → length, tool_use → tool_calls.
"""

from __future__ import annotations

import json
from typing import Any

from gateway_core.jobs.chat_options import (
    FunctionCall,
    ImagePart,
    NamedToolChoice,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    data_url,
)
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters.base import Ending

OUTPUT_TOOL = "emit_output"  # the tool that carries structured output (an output contract), never a tool call
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "pause_turn": "stop", "model_context_window_exceeded": "length"}
NO_PARAMETERS = {"type": "object", "properties": {}}


def messages(conversation: list[Message]) -> list[dict[str, Any]]:
    """The non-system turns, as Anthropic takes them; plain text turns stay plain strings."""
    turns: list[dict[str, Any]] = []
    for m in conversation:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text()}
            previous = turns[-1] if turns else None
            if previous is not None and previous["role"] == "user" and _all_tool_results(previous["content"]):
                previous["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
            continue
        turns.append({"role": m.role, "content": _content(m)})
    return turns


def _all_tool_results(content: Any) -> bool:
    return isinstance(content, list) and all(block.get("type") == "tool_result" for block in content)


def _content(m: Message) -> str | list[dict[str, Any]]:
    if isinstance(m.content, str) and not m.tool_calls:
        return m.content
    blocks: list[dict[str, Any]] = []
    for part in [m.content] if isinstance(m.content, str) else m.content:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
        elif isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(image(part))
    for call in m.tool_calls or []:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name,
                       "input": arguments(call.function.arguments)})
    return blocks


def image(part: ImagePart) -> dict[str, Any]:
    inline = data_url(part.image_url.url)
    if inline is not None:
        media_type, data = inline
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.image_url.url}}


def arguments(text: str) -> dict[str, Any]:
    """Tool call arguments as the JSON object Anthropic and Gemini take (OpenAI carries them as text)."""
    value = json.loads(text) if text.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("tool call arguments are not a JSON object")
    return value


def tools(definitions: list[ToolDefinition]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in definitions:
        function = tool.function
        if function.name == OUTPUT_TOOL:
            raise ValueError(f"a tool may not be named {OUTPUT_TOOL!r} on this partner")
        entry: dict[str, Any] = {"name": function.name, "input_schema": function.parameters or NO_PARAMETERS}
        if function.description:
            entry["description"] = function.description
        out.append(entry)
    return out


def tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"type": "tool", "name": choice.function.name}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}


def tool_calls(body: dict[str, Any]) -> list[ToolCall]:
    return [
        ToolCall(id=str(block["id"]), function=FunctionCall(name=block["name"],
                                                            arguments=json.dumps(block.get("input", {}))))
        for block in body["content"]
        if block.get("type") == "tool_use" and block.get("name") != OUTPUT_TOOL
    ]


def ending(body: dict[str, Any]) -> Ending:
    calls = tool_calls(body)
    reason = body.get("stop_reason")
    finish = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else None
    if finish == "tool_calls" and not calls:
        finish = "stop"  # the output contract's tool: the answer itself, not a call
    return Ending(finish, calls or None)
