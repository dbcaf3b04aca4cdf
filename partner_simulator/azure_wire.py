"""Azure OpenAI chat completions: OpenAI's body and answer, routed by deployment, with Azure's gateway in front.

`POST /openai/deployments/{deployment}/chat/completions?api-version=...` with an `api-key` header (or an Entra ID
bearer token). Azure's gateway answers its own errors (`{"error": {"code": "404", "message": ...}}`: no api-version,
unknown deployment, bad key, throttling); request validation errors come from the model service in OpenAI's shape.
The simulated deployment is named after the partner's `model`.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from partner_simulator.answers import Completion, ParsedRequest
from partner_simulator.behaviour import PartnerKind, retry_after_millis, retry_after_seconds
from partner_simulator.openai_wire import OpenAIWire
from partner_simulator.wire import OrjsonResponse

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_GATEWAY_CODES = {500: "InternalServerError", 503: "ServiceUnavailable"}
_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
_NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)
_NOT_FILTERED = {"filtered": False, "severity": "safe"}
_CONTENT_FILTER_RESULTS = {
    "hate": _NOT_FILTERED,
    "self_harm": _NOT_FILTERED,
    "sexual": _NOT_FILTERED,
    "violence": _NOT_FILTERED,
}


def _gateway_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return OrjsonResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class AzureOpenAIWire(OpenAIWire):
    kind: PartnerKind = "azure_openai"

    def auth_problem(self, request: Request) -> tuple[int, str] | None:
        headers = request.headers
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if headers.get("api-key", "").strip() or (scheme.lower() == "bearer" and token.strip()):
            return None
        return 401, _ACCESS_DENIED

    def route_problem(self, request: Request, served_model: str) -> Response | None:
        if not _API_VERSION.match(request.query_params.get("api-version", "")):
            return _gateway_error(404, "404", "Resource not found")
        if request.path_params.get("deployment") != served_model:
            return _gateway_error(404, "DeploymentNotFound", _NO_DEPLOYMENT)
        return None

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        if status == 400:  # the model service's validation error, as OpenAI words it
            return super().error(status, message, headers)
        return _gateway_error(status, _GATEWAY_CODES.get(status, str(status)), message, headers)

    def rate_limited(self, wait_s: float) -> Response:
        seconds = retry_after_seconds(wait_s)
        message = (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
            f"exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds."
        )
        headers = {"retry-after": str(seconds), "retry-after-ms": str(retry_after_millis(wait_s))}
        return _gateway_error(429, "429", message, headers)

    @staticmethod
    def completion_body(parsed: ParsedRequest, completion: Completion) -> dict[str, Any]:
        body = OpenAIWire.completion_body(parsed, completion)
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_RESULTS}]
        for choice in body["choices"]:
            choice["content_filter_results"] = _CONTENT_FILTER_RESULTS
        return body
