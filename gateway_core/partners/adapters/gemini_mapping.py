"""Gemini's generateContent format for conversations with images and tools, and its answers, read as OpenAI's.

- Images: `inlineData` for data: URLs, `fileData` (a URI) otherwise.
- An assistant's tool calls are `functionCall` parts of a `model` turn; a tool result is a `functionResponse`
  part naming the function (Gemini matches results by name: the name is found from the call's id), and
  consecutive results share one `user` turn.
- `tools: [{functionDeclarations}]` with each function's JSON Schema as `parametersJsonSchema` (as
  responseJsonSchema: JSON Schema as it is), `toolConfig.functionCallingConfig` mode AUTO / ANY / NONE.
- Gemini's calls have no ids (or optional ones): fedgate makes one per call.
"""

from __future__ import annotations

import json
import secrets
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
from gateway_core.partners.adapters.anthropic_mapping import arguments
from gateway_core.partners.adapters.base import CallRequest, Ending
from gateway_core.partners.adapters.stream_tools import ToolCallAssembler

# google-genai's FinishReason values that mean the answer was withheld.
FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"})
OPTIONS = {"top_p": "topP", "stop": "stopSequences", "seed": "seed", "presence_penalty": "presencePenalty",
           "frequency_penalty": "frequencyPenalty"}


def contents(conversation: list[Message]) -> list[dict[str, Any]]:
    names = {call.id: call.function.name for m in conversation for call in m.tool_calls or []}
    turns: list[dict[str, Any]] = []
    for m in conversation:
        if m.role == "system":
            continue
        if m.role == "tool":
            assert m.tool_call_id is not None
            name = names.get(m.tool_call_id)
            if name is None:
                raise ValueError("a tool message answers a call that is not in the conversation")
            part = {"functionResponse": {"name": name, "response": _response(m.text())}}
            previous = turns[-1] if turns else None
            if previous is not None and previous["role"] == "user" and all(
                    "functionResponse" in p for p in previous["parts"]):
                previous["parts"].append(part)
            else:
                turns.append({"role": "user", "parts": [part]})
            continue
        turns.append({"role": "model" if m.role == "assistant" else "user", "parts": _parts(m)})
    return turns


def _response(text: str) -> dict[str, Any]:
    """A tool's result as the object functionResponse.response must be: its JSON object, or {"result": ...}."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _parts(m: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in [m.content] if isinstance(m.content, str) else m.content:
        if isinstance(part, str):
            if part or not m.tool_calls:
                parts.append({"text": part})
        elif isinstance(part, TextPart):
            parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(image(part))
    for call in m.tool_calls or []:
        parts.append({"functionCall": {"name": call.function.name, "args": arguments(call.function.arguments)}})
    return parts


def image(part: ImagePart) -> dict[str, Any]:
    inline = data_url(part.image_url.url)
    if inline is not None:
        media_type, data = inline
        return {"inlineData": {"mimeType": media_type, "data": data}}
    return {"fileData": {"fileUri": part.image_url.url}}


def tools(definitions: list[ToolDefinition]) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for tool in definitions:
        function = tool.function
        entry: dict[str, Any] = {"name": function.name}
        if function.description:
            entry["description"] = function.description
        if function.parameters is not None:
            entry["parametersJsonSchema"] = function.parameters
        declarations.append(entry)
    return [{"functionDeclarations": declarations}]


def tool_config(choice: ToolChoice) -> dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}}
    return {"functionCallingConfig": {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]}}


def apply_options(body: dict[str, Any], generation: dict[str, Any], request: CallRequest) -> None:
    options = request.options
    if options is None:
        return
    for name, wire_name in OPTIONS.items():
        value = getattr(options, name)
        if value is not None:
            generation[wire_name] = value
    if options.tools:
        body["tools"] = tools(options.tools)
        if options.tool_choice is not None:
            body["toolConfig"] = tool_config(options.tool_choice)


def ending(body: dict[str, Any]) -> Ending:
    candidate = body["candidates"][0]
    calls = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        call = part.get("functionCall")
        if isinstance(call, dict):
            call_id = new_call_id(call)
            calls.append(ToolCall(id=str(call_id), function=FunctionCall(name=call["name"],
                                                                         arguments=json.dumps(call.get("args", {})))))
    reason = candidate.get("finishReason")
    if reason == "MAX_TOKENS":
        finish = "length"
    elif reason in FILTERED:
        finish = "content_filter"
    else:
        finish = "tool_calls" if calls else "stop"
    return Ending(finish, calls or None)


def new_call_id(call: dict[str, Any]) -> str:
    """The call's own id when Gemini gave one, else one made up (as OpenAI's ids look)."""
    return str(call.get("id") or "call_" + secrets.token_hex(12))


def gather_function_calls(parts: list[dict[str, Any]], calls: ToolCallAssembler) -> None:
    """A streamed chunk's `functionCall` parts: each is a whole call."""
    for part in parts:
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.start(len(calls), new_call_id(call), str(call.get("name") or ""), json.dumps(call.get("args", {})))
