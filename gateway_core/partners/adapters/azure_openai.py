"""Azure OpenAI chat completions: OpenAI's wire format, routed by deployment and authenticated with `api-key`.

`POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=...`, where base_url is the
resource endpoint (`https://<resource>.openai.azure.com`). The deployment in the URL picks the model, so the body
carries no `model`; the answer is OpenAI's (plus Azure's content-filter annotations, which are not read).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gateway_core.partners.adapters.base import CallRequest
from gateway_core.partners.adapters.openai import OpenAIChatAdapter

DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane version of the deployments API


class AzureOpenAIChatAdapter(OpenAIChatAdapter):
    def endpoint(self) -> str:
        deployment = quote(self.config.deployment or self.config.model, safe="")
        api_version = quote(self.config.api_version or DEFAULT_API_VERSION, safe="")
        return f"{self.config.base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}"

    def headers(self) -> dict[str, str]:
        return {"api-key": self.api_key} if self.api_key else {}

    def body(self, request: CallRequest) -> dict[str, Any]:
        body = super().body(request)
        body.pop("model", None)
        return body
