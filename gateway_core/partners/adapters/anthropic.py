"""Anthropic messages API."""

from __future__ import annotations

import json
from typing import Any

from gateway_core.jobs.models import Usage
from gateway_core.partners.adapters import anthropic_mapping
from gateway_core.partners.adapters.anthropic_mapping import OUTPUT_TOOL
from gateway_core.partners.adapters.base import (
    CallRequest,
    Ending,
    PartnerAdapter,
    PartnerRefused,
    StreamError,
    StreamProgress,
)
from gateway_core.partners.adapters.capabilities import UnsupportedOption, check_honoured
from gateway_core.partners.adapters.sse import SseEvent

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic's stop_reason in OpenAI's finish_reason words.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter"}
# Error events that say the partner is busy or failed, not that the request was wrong.
RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


class AnthropicMessagesAdapter(PartnerAdapter):
    def endpoint(self) -> str:
        return f"{self.config.base_url}/v1/messages"

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def body(self, request: CallRequest) -> dict[str, Any]:
        check_honoured(self.config.adapter, request.messages, request.options)
        options = request.options
        system = "\n\n".join(m.text() for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_tokens or self.config.max_output_tokens,
            "messages": anthropic_mapping.messages(request.messages),
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        if options is not None and options.top_p is not None:
            body["top_p"] = options.top_p
        if options is not None and options.stop:
            body["stop_sequences"] = options.stop
        if options is not None and options.user is not None:
            body["metadata"] = {"user_id": options.user}
        if options is not None and options.tools:
            if request.output is not None:  # capabilities.NO_TOOLS_WITH_STRUCTURED_OUTPUT: the tools would never run
                raise UnsupportedOption("response_format (with tools)", self.config.adapter)
            body["tools"] = anthropic_mapping.tools(options.tools)
        if options is not None and options.tool_choice is not None and options.tools:
            body["tool_choice"] = anthropic_mapping.tool_choice(options.tool_choice)
        if request.output is not None:
            # Anthropic's way to structured output: one tool whose input is the schema, and that tool forced.
            body["tools"] = [{"name": OUTPUT_TOOL, "description": f"Return the answer as {request.output.name}.",
                              "input_schema": request.output.schema}]
            body["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}
        body.update(request.extra)
        return body

    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        if body.get("stop_reason") == "refusal":
            raise PartnerRefused("the model refused (stop_reason refusal)")
        parts: list[str] = []
        for block in body["content"]:
            if block.get("type") == "text":
                parts.append(block["text"])
            elif block.get("type") == "tool_use" and block.get("name") == OUTPUT_TOOL:
                parts.append(json.dumps(block.get("input", {})))
        usage = body.get("usage") or {}
        return "".join(parts), Usage(
            prompt_tokens=int(usage.get("input_tokens", 0)),
            completion_tokens=int(usage.get("output_tokens", 0)),
        )

    def read_ending(self, body: dict[str, Any]) -> Ending:
        return anthropic_mapping.ending(body)

    supports_streaming = True

    def stream_body(self, request: CallRequest) -> dict[str, Any]:
        return {**self.body(request), "stream": True}

    def read_stream_event(self, event: SseEvent, progress: StreamProgress) -> str:
        """message_start, content_block_start/delta/stop, message_delta, message_stop, ping and error events."""
        payload = json.loads(event.data)
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            delta = payload["delta"]
            if delta.get("type") == "text_delta":
                return str(delta["text"])
            if delta.get("type") == "input_json_delta":
                index = int(payload.get("index", 0))
                if progress.tool_calls.holds(index):  # a tool_use block: a tool call's arguments
                    progress.tool_calls.append(index, str(delta.get("partial_json", "")))
                    return ""
                return str(delta.get("partial_json", ""))  # the forced output tool's JSON: the text of the answer
            return ""
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("name") != OUTPUT_TOOL:
                given = block.get("input")
                progress.tool_calls.start(int(payload.get("index", 0)), str(block.get("id") or ""),
                                          str(block.get("name") or ""), json.dumps(given) if given else "")
        elif kind == "message_start":
            usage = payload["message"].get("usage") or {}
            progress.prompt_tokens = int(usage.get("input_tokens") or 0)
            progress.completion_tokens = int(usage.get("output_tokens") or 0)
        elif kind == "message_delta":
            stop_reason = (payload.get("delta") or {}).get("stop_reason")
            if stop_reason == "refusal":
                raise PartnerRefused("the model refused (stop_reason refusal)")
            if stop_reason:
                progress.finish_reason = FINISH_REASONS.get(stop_reason, "stop")
            usage = payload.get("usage") or {}
            if usage.get("output_tokens") is not None:
                progress.completion_tokens = int(usage["output_tokens"])
            if usage.get("input_tokens") is not None:
                progress.prompt_tokens = int(usage["input_tokens"])
        elif kind == "message_stop":
            progress.ended = True
        elif kind == "error":
            error = payload.get("error") or {}
            raise StreamError(str(error.get("message") or "error")[:300],
                              retryable=error.get("type") in RETRYABLE_STREAM_ERRORS)
        return ""
