"""Anthropic messages as the partner speaks it: x-api-key (or bearer) + anthropic-version, a forced tool, errors."""

from __future__ import annotations

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
    load_json_object,
    new_id,
    read_messages,
)
from partner_simulator.behaviour import PartnerKind
from partner_simulator.wire import OrjsonResponse, WireFormat

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _anthropic_error_type(status: int) -> str:
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    return _ANTHROPIC_ERROR_TYPES.get(status, fallback)


class AnthropicWire(WireFormat):
    kind: PartnerKind = "anthropic"

    def auth_problem(self, request: Request) -> tuple[int, str] | None:
        headers = request.headers
        # The API takes a key as x-api-key or, as the anthropic SDK sends it since 2.0, as a bearer token.
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not headers.get("x-api-key", "").strip() and not (scheme.lower() == "bearer" and token.strip()):
            return 401, "x-api-key header is required"
        if not headers.get("anthropic-version", "").strip():
            return 400, "anthropic-version: header is required"
        return None

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        payload = load_json_object(body)
        if payload is None:
            return "There was an issue with your request body: invalid JSON."
        max_tokens = payload.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return "max_tokens: Field required"
        messages = read_messages(payload.get("messages"))
        if isinstance(messages, str):
            return messages
        output = self._requested_output(payload.get("tools"), payload.get("tool_choice"))
        if isinstance(output, str):
            return output
        last_user_text, message_chars = messages
        system_chars = len(content_text(payload.get("system")))
        model = payload.get("model")
        model_name = model if isinstance(model, str) and model else default_model
        tools = payload.get("tools")
        choice = payload.get("tool_choice")
        choice_type = choice.get("type") if isinstance(choice, dict) else "auto"
        stop = payload.get("stop_sequences")
        return ParsedRequest(
            model_name, last_user_text, message_chars + system_chars, output,
            tools=tuple(ToolSpec(t["name"], t.get("input_schema")) for t in tools if isinstance(t, dict)
                        and isinstance(t.get("name"), str)) if isinstance(tools, list) else (),
            tool_choice={"any": "required", "none": "none"}.get(str(choice_type), "auto"),
            tool_result=_tool_result(payload["messages"][-1]),
            stop=tuple(s for s in stop if isinstance(s, str)) if isinstance(stop, list) else (),
            max_tokens=max_tokens, stream=payload.get("stream") is True,
        )

    @staticmethod
    def _requested_output(tools: Any, tool_choice: Any) -> OutputRequest | str:
        if not isinstance(tool_choice, dict) or tool_choice.get("type") != "tool":
            return TEXT_OUTPUT
        name = tool_choice.get("name")
        if not isinstance(name, str):
            return "tool_choice.name: Field required"
        for tool in tools if isinstance(tools, list) else []:
            if isinstance(tool, dict) and tool.get("name") == name:
                return OutputRequest("tool", tool.get("input_schema"), name)
        return f"tool_choice: tool {name!r} not found in tools"

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"type": "error", "error": {"type": _anthropic_error_type(status), "message": message}}
        return OrjsonResponse(body, status_code=status, headers=headers)

    def reply(self, parsed: ParsedRequest, completion: Completion) -> Response:
        if completion.tool_name is None:
            content: dict[str, Any] = {"type": "text", "text": completion.text}
            stop_reason = "max_tokens" if completion.finish == "length" else (
                "stop_sequence" if completion.stop_sequence is not None else "end_turn")
        else:
            content = {
                "type": "tool_use",
                "id": f"toolu_{new_id()}",
                "name": completion.tool_name,
                "input": completion.tool_input,
            }
            stop_reason = "tool_use"
        body = {
            "id": f"msg_{new_id()}",
            "type": "message",
            "role": "assistant",
            "model": parsed.model,
            "content": [content],
            "stop_reason": stop_reason,
            "stop_sequence": completion.stop_sequence,
            "usage": {
                "input_tokens": estimate_tokens(parsed.prompt_chars),
                "output_tokens": estimate_tokens(len(completion.text)),
            },
        }
        return OrjsonResponse(body)

    def models(self, model: str) -> Response:
        entry = {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}
        return OrjsonResponse({"data": [entry], "has_more": False, "first_id": model, "last_id": model})


def _tool_result(message: Any) -> str | None:
    """The text of the last tool_result block of a user turn that carries tool results."""
    content = message.get("content") if isinstance(message, dict) else None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] if isinstance(
        content, list) else []
    return content_text(results[-1].get("content")) if results else None
