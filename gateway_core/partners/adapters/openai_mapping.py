"""OpenAI chat completions' wire format for messages, tools and options, both ways (also Azure's).

fedgate's own types are OpenAI's shapes, so the request side is mostly a dump; the answer side reads
`finish_reason`, `message.tool_calls` and `logprobs`."""

from __future__ import annotations

from typing import Any

from gateway_core.jobs.chat_options import FunctionCall, ToolCall
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters.base import CallRequest, Ending, OutputSchema
from gateway_core.partners.adapters.stream_tools import ToolCallAssembler

# Options passed as they are: fedgate's names are OpenAI's.
PASSED_AS_IS = ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user", "logprobs", "top_logprobs")
FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
                  "content_filter": "content_filter"}


def message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = m.stored()
    if m.tool_calls and out.get("content") == "":
        out["content"] = None  # OpenAI's assistant turn that only calls tools
    return out


def apply_options(body: dict[str, Any], request: CallRequest) -> None:
    options = request.options
    if options is None:
        return
    for name in PASSED_AS_IS:
        value = getattr(options, name)
        if value is not None:
            body[name] = value
    if options.tools is not None:
        body["tools"] = [tool.model_dump(exclude_none=True) for tool in options.tools]
    if options.tool_choice is not None:
        choice = options.tool_choice
        body["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()


def response_format(output: OutputSchema, name: str) -> dict[str, Any]:
    if output.json_object:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": name, "schema": output.schema}
    if output.strict is not None:
        spec["strict"] = output.strict
    return {"type": "json_schema", "json_schema": spec}


def ending(body: dict[str, Any]) -> Ending:
    choice = body["choices"][0]
    calls = [
        ToolCall(id=str(call["id"]), function=FunctionCall(name=call["function"]["name"],
                                                           arguments=call["function"].get("arguments") or "{}"))
        for call in choice["message"].get("tool_calls") or []
        if call.get("type", "function") == "function"
    ]
    reason = choice.get("finish_reason")
    logprobs = choice.get("logprobs")
    return Ending(FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else None, calls or None,
                  logprobs if isinstance(logprobs, dict) else None)


def gather_tool_calls(fragments: Any, calls: ToolCallAssembler) -> None:
    """A stream's `delta.tool_calls`: the first fragment of a call has its index, id and name, the next ones the same
    index and more of the arguments."""
    for fragment in fragments if isinstance(fragments, list) else []:
        if fragment.get("type", "function") != "function":
            continue
        index = int(fragment.get("index", 0))
        function = fragment.get("function") or {}
        call_id, name = str(fragment.get("id") or ""), str(function.get("name") or "")
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):
            raise ValueError("tool call arguments are not text")
        if calls.holds(index):
            calls.append(index, arguments, call_id, name)
        else:
            calls.start(index, call_id, name, arguments)
