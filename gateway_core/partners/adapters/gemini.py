"""Google Gemini `generateContent` (the Gemini API, not Vertex AI).

`POST {base_url}/{api_version}/models/{model}:generateContent` with `x-goog-api-key`; base_url is
`https://generativelanguage.googleapis.com` and api_version `v1beta` unless configured (google-genai itself now
defaults to `v1`). Field names and shapes follow google-genai's types (checked in
tests/unit/test_sdk_conformance.py): `contents` with roles `user` / `model`, the system prompt as
`systemInstruction`, and `generationConfig`. Structured output is `responseMimeType: application/json` with the
contract's JSON Schema as `responseJsonSchema`, which takes JSON Schema as it is; the older `responseSchema` takes
an OpenAPI subset that would need a lossy conversion ($ref inlining, type lists, const).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from gateway_core.jobs.models import Usage
from gateway_core.partners.adapters import gemini_mapping
from gateway_core.partners.adapters.base import CallRequest, Ending, PartnerAdapter, PartnerRefused, StreamProgress
from gateway_core.partners.adapters.capabilities import check_honoured
from gateway_core.partners.adapters.sse import SseEvent

DEFAULT_API_VERSION = "v1beta"
# google-genai's FinishReason values that mean the answer was withheld, not cut short or failed.
REFUSAL_FINISH_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                                    "IMAGE_SAFETY", "LANGUAGE"})
# Gemini's finishReason in OpenAI's finish_reason words (a withheld answer is content_filter).
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(REFUSAL_FINISH_REASONS, "content_filter")}


class GeminiAdapter(PartnerAdapter):
    def endpoint(self) -> str:
        model = quote(self.config.model.removeprefix("models/"), safe="")
        api_version = quote(self.config.api_version or DEFAULT_API_VERSION, safe="")
        return f"{self.config.base_url}/{api_version}/models/{model}:generateContent"

    def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key} if self.api_key else {}

    def body(self, request: CallRequest) -> dict[str, Any]:
        check_honoured(self.config.adapter, request.messages, request.options)
        system = "\n\n".join(m.text() for m in request.messages if m.role == "system")
        body: dict[str, Any] = {"contents": gemini_mapping.contents(request.messages)}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        generation: dict[str, Any] = {"maxOutputTokens": request.max_tokens or self.config.max_output_tokens}
        if request.temperature is not None:
            generation["temperature"] = request.temperature
        if request.output is not None:
            generation["responseMimeType"] = "application/json"
            generation["responseJsonSchema"] = request.output.schema
        gemini_mapping.apply_options(body, generation, request)
        body["generationConfig"] = generation
        body.update(request.extra)
        return body

    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        candidates = body.get("candidates")
        if not candidates:
            block = (body.get("promptFeedback") or {}).get("blockReason")
            if block:
                raise PartnerRefused(f"prompt blocked ({block})")
            raise ValueError("no candidates")
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts")
        if not parts:
            finish = candidate.get("finishReason")
            if finish in REFUSAL_FINISH_REASONS:
                raise PartnerRefused(f"answer blocked (finishReason {finish})")
            raise ValueError(f"candidate without content (finish reason: {finish})")
        text = "".join(part["text"] for part in parts if isinstance(part.get("text"), str) and not part.get("thought"))
        usage = body.get("usageMetadata") or {}
        # Thinking tokens are billed as output tokens.
        completion_tokens = int(usage.get("candidatesTokenCount", 0)) + int(usage.get("thoughtsTokenCount", 0))
        return text, Usage(prompt_tokens=int(usage.get("promptTokenCount", 0)), completion_tokens=completion_tokens)

    def retry_after_in_body(self, body: Any) -> float | None:
        """Gemini says how long to wait in a 429's body (`error.details[].retryDelay`, e.g. "30s"), not a header."""
        error = body.get("error") if isinstance(body, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        for detail in details if isinstance(details, list) else []:
            delay = detail.get("retryDelay") if isinstance(detail, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(0.0, float(delay[:-1]))
                except ValueError:
                    return None
        return None

    def read_ending(self, body: dict[str, Any]) -> Ending:
        return gemini_mapping.ending(body)

    supports_streaming = True

    def stream_endpoint(self) -> str:
        return self.endpoint().replace(":generateContent", ":streamGenerateContent") + "?alt=sse"

    def stream_body(self, request: CallRequest) -> dict[str, Any]:
        return self.body(request)

    def read_stream_event(self, event: SseEvent, progress: StreamProgress) -> str:
        """Each event is a GenerateContentResponse holding the next parts; the last has the finish reason."""
        chunk = json.loads(event.data)
        usage = chunk.get("usageMetadata") or {}
        if usage:
            progress.prompt_tokens = int(usage.get("promptTokenCount", 0))
            progress.completion_tokens = int(usage.get("candidatesTokenCount", 0)) + int(
                usage.get("thoughtsTokenCount", 0))
        candidates = chunk.get("candidates")
        if not candidates:
            block = (chunk.get("promptFeedback") or {}).get("blockReason")
            if block:
                raise PartnerRefused(f"prompt blocked ({block})")
            return ""
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts") or []
        text = "".join(part["text"] for part in parts if isinstance(part.get("text"), str) and not part.get("thought"))
        gemini_mapping.gather_function_calls(parts, progress.tool_calls)
        finish = candidate.get("finishReason")
        if finish:
            progress.finish_reason = FINISH_REASONS.get(finish, "stop")
            if progress.finish_reason == "stop" and len(progress.tool_calls):  # Gemini says STOP after its calls
                progress.finish_reason = "tool_calls"
        return text
