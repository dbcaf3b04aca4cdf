"""Anthropic messages API."""

from __future__ import annotations

import json
from typing import Any

from gateway_core.jobs.models import Usage
from gateway_core.partners.adapters.base import CallRequest, PartnerAdapter, PartnerRefused

ANTHROPIC_VERSION = "2023-06-01"
OUTPUT_TOOL = "emit_output"


class AnthropicMessagesAdapter(PartnerAdapter):
    def endpoint(self) -> str:
        return f"{self.config.base_url}/v1/messages"

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def body(self, request: CallRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_tokens or self.config.max_output_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
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
            elif block.get("type") == "tool_use":
                parts.append(json.dumps(block.get("input", {})))
        usage = body.get("usage") or {}
        return "".join(parts), Usage(
            prompt_tokens=int(usage.get("input_tokens", 0)),
            completion_tokens=int(usage.get("output_tokens", 0)),
        )
