"""OpenAI chat completions (also what most OpenAI-compatible partners speak)."""

from __future__ import annotations

import json
from typing import Any

from gateway_core.jobs.models import Usage
from gateway_core.partners.adapters import openai_mapping
from gateway_core.partners.adapters.base import (
    CallRequest,
    Ending,
    PartnerAdapter,
    PartnerRefused,
    StreamError,
    StreamProgress,
)
from gateway_core.partners.adapters.capabilities import check_honoured
from gateway_core.partners.adapters.sse import SseEvent


class OpenAIChatAdapter(PartnerAdapter):
    def endpoint(self) -> str:
        return f"{self.config.base_url}/chat/completions"

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def body(self, request: CallRequest) -> dict[str, Any]:
        check_honoured(self.config.adapter, request.messages, request.options)
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [openai_mapping.message(m) for m in request.messages],
            "max_tokens": request.max_tokens or self.config.max_output_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.output is not None:
            body["response_format"] = openai_mapping.response_format(request.output, _schema_name(request.output.name))
        openai_mapping.apply_options(body, request)
        body.update(request.extra)
        return body

    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        choice = body["choices"][0]
        message = choice["message"]
        text = message.get("content")
        if text is None and message.get("tool_calls"):
            text = ""
        if not isinstance(text, str):
            if choice.get("finish_reason") == "content_filter":
                raise PartnerRefused("content filter (finish_reason content_filter)")
            if isinstance(message.get("refusal"), str):
                raise PartnerRefused("the model refused (message.refusal)")
            raise ValueError("choices[0].message.content is not text")
        usage = body.get("usage") or {}
        return text, Usage(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    def read_ending(self, body: dict[str, Any]) -> Ending:
        return openai_mapping.ending(body)

    supports_streaming = True

    def stream_body(self, request: CallRequest) -> dict[str, Any]:
        return {**self.body(request), "stream": True, "stream_options": {"include_usage": True}}

    def read_stream_event(self, event: SseEvent, progress: StreamProgress) -> str:
        """`chat.completion.chunk` events, a usage chunk (empty choices) and `data: [DONE]`."""
        if event.data.strip() == "[DONE]":
            progress.ended = True
            return ""
        chunk = json.loads(event.data)
        if isinstance(chunk.get("error"), dict):
            raise StreamError(str(chunk["error"].get("message") or "error")[:300])
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            progress.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            progress.completion_tokens = int(usage.get("completion_tokens") or 0)
        text = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            if delta.get("refusal"):
                raise PartnerRefused("the model refused (delta.refusal)")
            openai_mapping.gather_tool_calls(delta.get("tool_calls"), progress.tool_calls)
            if choice.get("finish_reason"):
                progress.finish_reason = openai_mapping.FINISH_REASONS.get(str(choice["finish_reason"]), "stop")
        return text


def _schema_name(name: str) -> str:
    """OpenAI allows letters, digits, '_' and '-' in a schema name."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)[:64]
