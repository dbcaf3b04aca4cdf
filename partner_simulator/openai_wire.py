"""OpenAI chat completions as the partner speaks it: bearer auth, `response_format`, its error shape."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from partner_simulator.answers import (
    TEXT_OUTPUT,
    Completion,
    OutputRequest,
    ParsedRequest,
    ToolSpec,
    content_text,
    estimate_tokens,
    json_text,
    load_json_object,
    new_id,
    read_messages,
)
from partner_simulator.behaviour import PartnerKind, retry_after_millis, retry_after_seconds
from partner_simulator.wire import OrjsonResponse, WireFormat


def _openai_error_type(status: int) -> str:
    if status in (401, 403):
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


_OPENAI_ERROR_CODES = {"authentication_error": "invalid_api_key", "rate_limit_error": "rate_limit_exceeded"}


class OpenAIWire(WireFormat):
    kind: PartnerKind = "openai"

    def auth_problem(self, request: Request) -> tuple[int, str] | None:
        headers = request.headers
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "You didn't provide an API key. Provide it in the Authorization header as a Bearer token."
        return None

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        payload = load_json_object(body)
        if payload is None:
            return "We could not parse the JSON body of your request."
        messages = read_messages(payload.get("messages"))
        if isinstance(messages, str):
            return messages
        output = self._requested_output(payload.get("response_format"))
        if isinstance(output, str):
            return output
        model = payload.get("model")
        stream_options = payload.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        last = payload["messages"][-1]
        stop = payload.get("stop")
        limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
        return ParsedRequest(
            model if isinstance(model, str) and model else default_model, *messages, output,
            tools=_tools(payload.get("tools")), tool_choice=_tool_choice(payload.get("tool_choice")),
            tool_result=content_text(last.get("content")) if last.get("role") == "tool" else None,
            stop=(stop,) if isinstance(stop, str) else tuple(s for s in stop or [] if isinstance(s, str)),
            max_tokens=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            stream=payload.get("stream") is True, include_usage=include_usage,
        )

    @staticmethod
    def _requested_output(response_format: Any) -> OutputRequest | str:
        if response_format is None:
            return TEXT_OUTPUT
        format_type = response_format.get("type") if isinstance(response_format, dict) else None
        if format_type == "text":
            return TEXT_OUTPUT
        if format_type == "json_object":
            return OutputRequest("json_object")
        if format_type == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                return "Missing required parameter: 'response_format.json_schema.schema'."
            return OutputRequest("json_schema", spec["schema"])
        return "Invalid value for 'response_format.type'."

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        error_type = _openai_error_type(status)
        body = {
            "error": {
                "message": message,
                "type": error_type,
                "param": None,
                "code": _OPENAI_ERROR_CODES.get(error_type),
            }
        }
        return OrjsonResponse(body, status_code=status, headers=headers)

    def rate_limited(self, wait_s: float) -> Response:
        headers = {"retry-after": str(retry_after_seconds(wait_s)), "retry-after-ms": str(retry_after_millis(wait_s))}
        return self.error(429, "Rate limit reached for requests per minute.", headers)

    def reply(self, parsed: ParsedRequest, completion: Completion) -> Response:
        return OrjsonResponse(self.completion_body(parsed, completion))

    @staticmethod
    def completion_body(parsed: ParsedRequest, completion: Completion) -> dict[str, Any]:
        prompt_tokens = estimate_tokens(parsed.prompt_chars)
        completion_tokens = estimate_tokens(len(completion.text))
        message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None}
        if completion.finish == "tool_calls" and completion.tool_name is not None:
            message["content"] = None
            message["tool_calls"] = [{"id": f"call_{new_id()}", "type": "function", "function": {
                "name": completion.tool_name, "arguments": json_text(completion.tool_input)}}]
        return {
            "id": f"chatcmpl-{new_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": completion.finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_sim",
        }

    def models(self, model: str) -> Response:
        entry = {"id": model, "object": "model", "created": 0, "owned_by": "fedgate-sim"}
        return OrjsonResponse({"object": "list", "data": [entry]})


def _tools(tools: Any) -> tuple[ToolSpec, ...]:
    found = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found.append(ToolSpec(function["name"], function.get("parameters")))
    return tuple(found)


def _tool_choice(choice: Any) -> str:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name", "auto"))
    return "auto"
