"""Generic JSON over HTTP: POST {"model", "messages", "max_tokens", "temperature"?}; read {"output", "usage"}."""

from __future__ import annotations

from typing import Any

from gateway_core.jobs.models import Usage
from gateway_core.partners.adapters.base import CallRequest, PartnerAdapter, schema_instruction
from gateway_core.partners.adapters.capabilities import check_honoured


class GenericJSONAdapter(PartnerAdapter):
    def endpoint(self) -> str:
        return self.config.base_url

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def body(self, request: CallRequest) -> dict[str, Any]:
        check_honoured(self.config.adapter, request.messages, request.options)  # no tools, images or sampling
        messages = [m.stored() for m in request.messages]
        if request.output is not None:
            messages.insert(0, {"role": "system", "content": schema_instruction(request.output)})
        return {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self.config.max_output_tokens,
            **({"temperature": request.temperature} if request.temperature is not None else {}),
            **request.extra,
        }

    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        text = body["output"]
        if not isinstance(text, str):
            raise ValueError("output is not text")
        usage = body.get("usage") or {}
        return text, Usage(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )
