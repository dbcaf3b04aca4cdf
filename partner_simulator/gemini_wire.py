"""Google Gemini `generateContent` as the Gemini API speaks it.

`POST /v1beta/models/{model}:generateContent` (or `/v1/...`, google-genai's default) with `x-goog-api-key` (or
`?key=`); the body has `contents` (roles `user` / `model`, text in `parts`), `systemInstruction` and
`generationConfig`. Like the real API (proto JSON), an unknown field is a 400, and field names may be camelCase
or snake_case. Errors are Google RPC statuses
(`{"error": {"code": 429, "message": ..., "status": "RESOURCE_EXHAUSTED"}}`); a throttle says when to retry in
the body (`google.rpc.RetryInfo`), not in a Retry-After header.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from partner_simulator.answers import (
    TEXT_OUTPUT,
    Completion,
    OutputRequest,
    ParsedRequest,
    ToolSpec,
    estimate_tokens,
    json_text,
    load_json_object,
    new_id,
)
from partner_simulator.behaviour import PartnerKind, retry_after_seconds
from partner_simulator.wire import OrjsonResponse, WireFormat

_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_UNREGISTERED_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other "
    "form of API consumer identity to call this API."
)
_REQUEST_FIELDS = frozenset(
    {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig", "cachedContent"}
)
_GENERATION_FIELDS = frozenset(
    {
        "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
        "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
        "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
        "thinkingConfig", "mediaResolution",
    }
)
_SNAKE_PART = re.compile(r"_([a-z])")
_ROLES = frozenset({"user", "model"})


def _camel(name: str) -> str:
    return _SNAKE_PART.sub(lambda match: match.group(1).upper(), name)


def _fields(payload: dict[str, Any], known: frozenset[str], where: str) -> dict[str, Any] | str:
    """The payload with camelCase keys, or the API's message naming the first field it does not know."""
    fields: dict[str, Any] = {}
    for name, value in payload.items():
        camel = _camel(name)
        if camel not in known:
            return f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
        fields[camel] = value
    return fields


def _parts_text(content: Any) -> str | None:
    """The text of a Content's parts, or None when it is not a Content."""
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return None
    parts = content["parts"]
    return "".join(part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str))


def _rpc_error(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": _RPC_STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


class GeminiWire(WireFormat):
    kind: PartnerKind = "gemini"

    def auth_problem(self, request: Request) -> tuple[int, str] | None:
        if request.headers.get("x-goog-api-key", "").strip() or request.query_params.get("key", "").strip():
            return None
        return 403, _UNREGISTERED_CALLER

    def route_problem(self, request: Request, served_model: str) -> Response | None:
        model = request.path_params.get("model")
        if model == served_model:
            return None
        version = request.url.path.split("/")[2]  # /{partner}/{version}/models/{model}:generateContent
        message = (
            f"models/{model} is not found for API version {version}, or is not supported for generateContent. "
            "Call ListModels to see the list of available models and their supported methods."
        )
        return self.error(404, message)

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        payload = load_json_object(body)
        if payload is None:
            return "Invalid JSON payload received. Expected an object."
        fields = _fields(payload, _REQUEST_FIELDS, "")
        if isinstance(fields, str):
            return fields
        contents = fields.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified\n"
        last_user_text, prompt_chars = "", 0
        for content in contents:
            text = _parts_text(content)
            if text is None:
                return "* GenerateContentRequest.contents: each content must have parts\n"
            role = content.get("role", "user")
            if role not in _ROLES:
                return "Please use a valid role: user, model."
            prompt_chars += len(text)
            if role == "user":
                last_user_text = text
        if "systemInstruction" in fields:
            system_text = _parts_text(fields["systemInstruction"])
            if system_text is None:
                return "* GenerateContentRequest.system_instruction: must be a Content with parts\n"
            prompt_chars += len(system_text)
        output = self._requested_output(fields.get("generationConfig"))
        if isinstance(output, str):
            return output
        config = _fields(fields.get("generationConfig") or {}, _GENERATION_FIELDS, "")
        config = config if isinstance(config, dict) else {}
        stop, limit = config.get("stopSequences"), config.get("maxOutputTokens")
        return ParsedRequest(
            default_model, last_user_text, prompt_chars, output, tools=_tools(fields.get("tools")),
            tool_choice=_tool_choice(fields.get("toolConfig")), tool_result=_tool_result(contents[-1]),
            stop=tuple(s for s in stop if isinstance(s, str)) if isinstance(stop, list) else (),
            max_tokens=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        )

    @staticmethod
    def _requested_output(generation_config: Any) -> OutputRequest | str:
        if generation_config is None:
            return TEXT_OUTPUT
        if not isinstance(generation_config, dict):
            return "Invalid value at 'generation_config': expected an object."
        config = _fields(generation_config, _GENERATION_FIELDS, " at 'generation_config'")
        if isinstance(config, str):
            return config
        schema = config.get("responseJsonSchema", config.get("responseSchema"))
        mime_type = config.get("responseMimeType", "text/plain")
        if schema is not None and mime_type != "application/json":
            return (
                "* GenerateContentRequest.generation_config.response_mime_type: must be application/json when a "
                "response schema is set\n"
            )
        if schema is not None:
            return OutputRequest("json_schema", schema)
        return OutputRequest("json_object") if mime_type == "application/json" else TEXT_OUTPUT

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return OrjsonResponse(_rpc_error(status, message), status_code=status, headers=headers)

    def rate_limited(self, wait_s: float) -> Response:
        return self._throttled(retry_after_seconds(wait_s), "You exceeded your current quota, please check your plan.")

    def failure(self, status: int) -> Response:
        if status == 429:
            return self._throttled(1, "Simulated partner failure.")
        return self.error(status, "Simulated partner failure.")

    @staticmethod
    def _throttled(seconds: int, message: str) -> Response:
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}
        return OrjsonResponse(_rpc_error(429, message, [retry]), status_code=429)

    def reply(self, parsed: ParsedRequest, completion: Completion) -> Response:
        prompt_tokens = estimate_tokens(parsed.prompt_chars)
        candidates_tokens = estimate_tokens(len(completion.text))
        part: dict[str, Any] = {"text": completion.text}
        if completion.finish == "tool_calls" and completion.tool_name is not None:
            part = {"functionCall": {"name": completion.tool_name, "args": completion.tool_input}}
        body = {
            "candidates": [
                {
                    "content": {"parts": [part], "role": "model"},
                    "finishReason": "MAX_TOKENS" if completion.finish == "length" else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": candidates_tokens,
                "totalTokenCount": prompt_tokens + candidates_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            },
            "modelVersion": parsed.model,
            "responseId": new_id(),
        }
        return OrjsonResponse(body)

    def models(self, model: str) -> Response:
        entry = {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 8_192,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
        return OrjsonResponse({"models": [entry]})


def _tools(tools: Any) -> tuple[ToolSpec, ...]:
    found = []
    for tool in tools if isinstance(tools, list) else []:
        declarations = {_camel(k): v for k, v in tool.items()}.get("functionDeclarations") if isinstance(
            tool, dict) else None
        for declaration in declarations if isinstance(declarations, list) else []:
            declaration = {_camel(k): v for k, v in declaration.items()} if isinstance(declaration, dict) else None
            if declaration is not None and isinstance(declaration.get("name"), str):
                schema = declaration.get("parametersJsonSchema", declaration.get("parameters"))
                found.append(ToolSpec(declaration["name"], schema))
    return tuple(found)


def _tool_choice(tool_config: Any) -> str:
    config = tool_config.get("functionCallingConfig") if isinstance(tool_config, dict) else None
    if not isinstance(config, dict):
        return "auto"
    allowed = config.get("allowedFunctionNames")
    if config.get("mode") == "ANY" and isinstance(allowed, list) and len(allowed) == 1:
        return str(allowed[0])
    return {"ANY": "required", "NONE": "none"}.get(str(config.get("mode")), "auto")


def _tool_result(content: Any) -> str | None:
    """The last functionResponse of the conversation's last turn, as JSON text."""
    parts = content.get("parts") if isinstance(content, dict) else None
    responses = [p["functionResponse"] for p in parts if isinstance(p, dict) and isinstance(
        p.get("functionResponse"), dict)] if isinstance(parts, list) else []
    return json_text(responses[-1].get("response")) if responses else None
