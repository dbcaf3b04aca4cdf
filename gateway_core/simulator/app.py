"""Starlette app that impersonates OpenAI- and Anthropic-style partners for tests and benchmarks.

The request path is deliberately lean (orjson, no pydantic, no logging) because benchmarks drive
this process at ~1,000 requests/s; only the control endpoints validate their input with pydantic.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive

from gateway_core.simulator.behaviour import (
    PartnerBehaviour,
    PartnerKind,
    PartnerStats,
    SimulatorConfig,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    retry_after_millis,
    retry_after_seconds,
)

RECORDED_BODIES_PER_PARTNER = 10_000
OFFCONTRACT_TEXT = "I cannot produce JSON right now."
MALFORMED_BODY = b'{"id": "sim-malformed", "choices": [{"message": {"content": "trunc'
_MAX_SCHEMA_DEPTH = 32

Clock = Callable[[], float]
OutputMode = Literal["text", "json_object", "json_schema", "tool"]


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(slots=True, frozen=True)
class OutputRequest:
    """The output shape the caller asked for."""

    mode: OutputMode = "text"
    schema: Any = None
    tool_name: str = ""


TEXT_OUTPUT = OutputRequest()


@dataclass(slots=True, frozen=True)
class ParsedRequest:
    model: str
    last_user_text: str
    prompt_chars: int
    output: OutputRequest


@dataclass(slots=True, frozen=True)
class Completion:
    """Wire-agnostic answer; `text` is the JSON document itself when the answer is structured."""

    text: str
    tool_name: str | None = None
    tool_input: Any = None


def estimate_tokens(chars: int) -> int:
    return max(1, chars // 4)


def _new_id() -> str:
    return os.urandom(12).hex()


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _load_json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def content_text(content: Any) -> str:
    """Text of a message content given as a string or as a list of typed parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _read_messages(messages: Any) -> tuple[str, int] | str:
    """Return (last user text, total content chars), or an error message."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array."
    last_user_text = ""
    total_chars = 0
    for message in messages:
        if not isinstance(message, dict):
            return "Each entry of 'messages' must be an object."
        text = content_text(message.get("content"))
        total_chars += len(text)
        if message.get("role") == "user":
            last_user_text = text
    return last_user_text, total_chars


# --- minimal JSON-schema instances ---------------------------------------------------------------


def minimal_instance(schema: Any) -> Any:
    """Smallest plausible value satisfying `schema`: required properties only, first enum value."""
    return _instance_of(schema, schema if isinstance(schema, dict) else {}, 0)


def _instance_of(schema: Any, root: Mapping[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("$ref"), str):
        return _instance_of(_resolve_ref(schema["$ref"], root), root, depth + 1)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _instance_of(_prefer_non_null(options), root, depth + 1)
    return _instance_of_type(schema, _schema_type(schema), root, depth)


def _instance_of_type(schema: dict[str, Any], type_name: str, root: Mapping[str, Any], depth: int) -> Any:
    if type_name == "object":
        properties = schema.get("properties") or {}
        return {
            name: _instance_of(properties.get(name), root, depth + 1) if name in properties else "sim"
            for name in schema.get("required") or []
        }
    if type_name == "array":
        min_items = schema.get("minItems", 0)
        return [_instance_of(schema.get("items"), root, depth + 1) for _ in range(min_items)]
    scalars: dict[str, Any] = {"string": "sim", "integer": 1, "number": 1.0, "boolean": True, "null": None}
    return scalars.get(type_name, "sim")


def _schema_type(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [name for name in declared if name != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(declared, str):
        return declared
    if "properties" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _prefer_non_null(options: list[Any]) -> Any:
    for option in options:
        if not (isinstance(option, dict) and option.get("type") == "null"):
            return option
    return options[0]


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for segment in filter(None, ref[1:].split("/")):
        key = segment.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def answer_for(partner_name: str, parsed: ParsedRequest) -> Completion:
    """The well-behaved answer: an echo of the prompt, or a minimal instance of the requested schema."""
    reply = f"Simulated reply from {partner_name}: {parsed.last_user_text}"
    output = parsed.output
    if output.mode == "json_object":
        return Completion(_json_text({"reply": reply}))
    if output.mode == "json_schema":
        return Completion(_json_text(minimal_instance(output.schema)))
    if output.mode == "tool":
        tool_input = minimal_instance(output.schema)
        return Completion(_json_text(tool_input), tool_name=output.tool_name, tool_input=tool_input)
    return Completion(reply)


# --- wire formats ----------------------------------------------------------------------------------


class WireFormat:
    """One partner API dialect: how it authenticates, parses, answers and fails."""

    kind: PartnerKind

    def auth_problem(self, headers: Headers) -> tuple[int, str] | None:
        raise NotImplementedError

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        raise NotImplementedError

    def reply(self, parsed: ParsedRequest, completion: Completion) -> Response:
        raise NotImplementedError

    def models(self, model: str) -> Response:
        raise NotImplementedError

    def rate_limited(self, wait_s: float) -> Response:
        return self.error(
            429, "Rate limit reached for requests per minute.", {"retry-after": str(retry_after_seconds(wait_s))}
        )

    def failure(self, status: int) -> Response:
        """Injected failure; a 429 carries retry-after so clients see a realistic throttle."""
        headers = {"retry-after": "1"} if status == 429 else None
        return self.error(status, "Simulated partner failure.", headers)


def _openai_error_type(status: int) -> str:
    if status in (401, 403):
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


_OPENAI_ERROR_CODES = {"authentication_error": "invalid_api_key", "rate_limit_error": "rate_limit_exceeded"}


class OpenAIWire(WireFormat):
    kind: PartnerKind = "openai"

    def auth_problem(self, headers: Headers) -> tuple[int, str] | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "You didn't provide an API key. Provide it in the Authorization header as a Bearer token."
        return None

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        payload = _load_json_object(body)
        if payload is None:
            return "We could not parse the JSON body of your request."
        messages = _read_messages(payload.get("messages"))
        if isinstance(messages, str):
            return messages
        output = self._requested_output(payload.get("response_format"))
        if isinstance(output, str):
            return output
        model = payload.get("model")
        return ParsedRequest(model if isinstance(model, str) and model else default_model, *messages, output)

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
        prompt_tokens = estimate_tokens(parsed.prompt_chars)
        completion_tokens = estimate_tokens(len(completion.text))
        body = {
            "id": f"chatcmpl-{_new_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_sim",
        }
        return OrjsonResponse(body)

    def models(self, model: str) -> Response:
        entry = {"id": model, "object": "model", "created": 0, "owned_by": "fedgate-sim"}
        return OrjsonResponse({"object": "list", "data": [entry]})


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

    def auth_problem(self, headers: Headers) -> tuple[int, str] | None:
        if not headers.get("x-api-key", "").strip():
            return 401, "x-api-key header is required"
        if not headers.get("anthropic-version", "").strip():
            return 400, "anthropic-version: header is required"
        return None

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        payload = _load_json_object(body)
        if payload is None:
            return "There was an issue with your request body: invalid JSON."
        max_tokens = payload.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return "max_tokens: Field required"
        messages = _read_messages(payload.get("messages"))
        if isinstance(messages, str):
            return messages
        output = self._requested_output(payload.get("tools"), payload.get("tool_choice"))
        if isinstance(output, str):
            return output
        last_user_text, message_chars = messages
        system_chars = len(content_text(payload.get("system")))
        model = payload.get("model")
        model_name = model if isinstance(model, str) and model else default_model
        return ParsedRequest(model_name, last_user_text, message_chars + system_chars, output)

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
            stop_reason = "end_turn"
        else:
            content = {
                "type": "tool_use",
                "id": f"toolu_{_new_id()}",
                "name": completion.tool_name,
                "input": completion.tool_input,
            }
            stop_reason = "tool_use"
        body = {
            "id": f"msg_{_new_id()}",
            "type": "message",
            "role": "assistant",
            "model": parsed.model,
            "content": [content],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": estimate_tokens(parsed.prompt_chars),
                "output_tokens": estimate_tokens(len(completion.text)),
            },
        }
        return OrjsonResponse(body)

    def models(self, model: str) -> Response:
        entry = {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}
        return OrjsonResponse({"data": [entry], "has_more": False, "first_id": model, "last_id": model})


WIRE_FORMATS: dict[PartnerKind, WireFormat] = {"openai": OpenAIWire(), "anthropic": AnthropicWire()}


# --- runtime state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PartnerRuntime:
    name: str
    kind: PartnerKind
    model: str
    behaviour: PartnerBehaviour
    limiter: SlidingWindowLimiter
    bucket: TokenBucketLimiter
    recorded: deque[str] | None
    stats: PartnerStats = field(default_factory=PartnerStats)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.behaviour.seed)

    @property
    def wire(self) -> WireFormat:
        return WIRE_FORMATS[self.kind]

    def update_behaviour(self, changes: dict[str, Any]) -> PartnerBehaviour:
        self.behaviour = self.behaviour.patched(changes)
        if "seed" in changes:
            self.rng.seed(self.behaviour.seed)
        return self.behaviour

    def reset(self) -> None:
        self.stats.reset()
        self.limiter.clear()
        self.bucket.clear()
        if self.recorded is not None:
            self.recorded.clear()
        # Reseeding makes a reset run replay the same fault sequence as a fresh process.
        self.rng.seed(self.behaviour.seed)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "behaviour": self.behaviour.model_dump()}


def _build_runtimes(config: SimulatorConfig, clock: Clock) -> dict[str, PartnerRuntime]:
    return {
        name: PartnerRuntime(
            name=name,
            kind=partner.kind,
            model=partner.model,
            behaviour=partner.behaviour,
            limiter=SlidingWindowLimiter(clock),
            bucket=TokenBucketLimiter(clock),
            recorded=deque(maxlen=RECORDED_BODIES_PER_PARTNER) if config.record_bodies else None,
        )
        for name, partner in config.partners.items()
    }


def _happens(rate: float, rng: random.Random) -> bool:
    return rate > 0 and (rate >= 1 or rng.random() < rate)


async def _simulate_latency(behaviour: PartnerBehaviour, rng: random.Random) -> None:
    delay_ms = behaviour.latency_ms
    if behaviour.latency_jitter_ms:
        delay_ms += rng.uniform(0, behaviour.latency_jitter_ms)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _hang_while_connected(seconds: float, receive: Receive) -> None:
    """Sleep, but stop early once the client gives up so abandoned hangs do not pile up in_flight."""
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({watcher}, timeout=seconds)
    finally:
        watcher.cancel()


def _not_found(message: str) -> Response:
    return OrjsonResponse({"detail": message}, status_code=404)


# --- endpoints -------------------------------------------------------------------------------------


class SimulatorEndpoints:
    def __init__(self, partners: dict[str, PartnerRuntime]) -> None:
        self._partners = partners

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "openai")

    async def messages(self, request: Request) -> Response:
        return await self._generate(request, "anthropic")

    async def models(self, request: Request) -> Response:
        runtime = self._partners.get(request.path_params["partner"])
        if runtime is None:
            return _not_found("unknown partner")
        runtime.stats.enter()
        try:
            rejection = self._auth_rejection(runtime, request.headers)
            if rejection is not None:
                return rejection
            runtime.stats.ok += 1
            return runtime.wire.models(runtime.model)
        finally:
            runtime.stats.leave()

    async def _generate(self, request: Request, kind: PartnerKind) -> Response:
        runtime = self._partners.get(request.path_params["partner"])
        if runtime is None:
            return _not_found("unknown partner")
        if runtime.kind != kind:
            return runtime.wire.error(404, f"Partner {runtime.name!r} does not serve this endpoint.")
        runtime.stats.enter()
        try:
            body = await request.body()
            if runtime.recorded is not None:
                runtime.recorded.append(body.decode("utf-8", "replace"))
            return await self._answer(runtime, request, body)
        finally:
            runtime.stats.leave()

    @staticmethod
    def _auth_rejection(runtime: PartnerRuntime, headers: Headers) -> Response | None:
        if not runtime.behaviour.require_api_key:
            return None
        problem = runtime.wire.auth_problem(headers)
        if problem is None:
            return None
        status, message = problem
        runtime.stats.count_error("unauthorized" if status == 401 else "bad_request")
        return runtime.wire.error(status, message)

    async def _answer(self, runtime: PartnerRuntime, request: Request, body: bytes) -> Response:
        behaviour, stats, wire = runtime.behaviour, runtime.stats, runtime.wire
        rejection = self._auth_rejection(runtime, request.headers)
        if rejection is not None:
            return rejection
        if behaviour.requests_per_minute is not None:
            if behaviour.rate_limiter == "sliding_window":
                wait_s = runtime.limiter.try_acquire(behaviour.requests_per_minute)
            else:
                wait_s = runtime.bucket.try_acquire(behaviour.requests_per_minute, behaviour.burst_s)
            if wait_s is not None:
                stats.rate_limited += 1
                return wire.rate_limited(wait_s)
        parsed = wire.parse(body, runtime.model)
        if isinstance(parsed, str):
            stats.count_error("bad_request")
            return wire.error(400, parsed)
        await _simulate_latency(behaviour, runtime.rng)
        return await self._faulty_or_normal_reply(runtime, behaviour, request, parsed)

    @staticmethod
    async def _faulty_or_normal_reply(
        runtime: PartnerRuntime, behaviour: PartnerBehaviour, request: Request, parsed: ParsedRequest
    ) -> Response:
        rng, stats, wire = runtime.rng, runtime.stats, runtime.wire
        if _happens(behaviour.timeout_rate, rng):
            stats.count_error("timeout")
            await _hang_while_connected(behaviour.hang_s, request.receive)
            return wire.reply(parsed, answer_for(runtime.name, parsed))
        if _happens(behaviour.error_rate, rng):
            stats.count_error(f"status_{behaviour.error_status}")
            return wire.failure(behaviour.error_status)
        if _happens(behaviour.malformed_rate, rng):
            stats.count_error("malformed")
            return Response(MALFORMED_BODY, media_type="application/json")
        if _happens(behaviour.offcontract_rate, rng):
            stats.count_error("offcontract")
            return wire.reply(parsed, Completion(OFFCONTRACT_TEXT))
        stats.ok += 1
        return wire.reply(parsed, answer_for(runtime.name, parsed))

    # --- control plane ---

    async def stats(self, request: Request) -> Response:
        return OrjsonResponse({"partners": {name: rt.stats.snapshot() for name, rt in self._partners.items()}})

    async def reset(self, request: Request) -> Response:
        for runtime in self._partners.values():
            runtime.reset()
        return OrjsonResponse({"ok": True})

    async def list_partners(self, request: Request) -> Response:
        return OrjsonResponse({"partners": {name: rt.describe() for name, rt in self._partners.items()}})

    async def update_partner(self, request: Request) -> Response:
        runtime = self._partners.get(request.path_params["name"])
        if runtime is None:
            return _not_found("unknown partner")
        changes = _load_json_object(await request.body())
        if changes is None:
            return OrjsonResponse({"detail": "body must be a JSON object"}, status_code=400)
        try:
            behaviour = runtime.update_behaviour(changes)
        except ValidationError as exc:
            return Response(exc.json(include_url=False), status_code=422, media_type="application/json")
        return OrjsonResponse(behaviour.model_dump())

    async def recorded_requests(self, request: Request) -> Response:
        runtime = self._partners.get(request.path_params["name"])
        if runtime is None:
            return _not_found("unknown partner")
        bodies = list(runtime.recorded) if runtime.recorded is not None else []
        return OrjsonResponse({"partner": runtime.name, "recording": runtime.recorded is not None, "bodies": bodies})

    async def healthz(self, request: Request) -> Response:
        return OrjsonResponse({"ok": True})


def create_app(config: SimulatorConfig, *, clock: Clock = time.monotonic) -> Starlette:
    """Build the simulator; `clock` drives the rate-limit windows so tests can move time."""
    endpoints = SimulatorEndpoints(_build_runtimes(config, clock))
    routes = [
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/_sim/stats", endpoints.stats, methods=["GET"]),
        Route("/_sim/reset", endpoints.reset, methods=["POST"]),
        Route("/_sim/partners", endpoints.list_partners, methods=["GET"]),
        Route("/_sim/partners/{name}", endpoints.update_partner, methods=["PUT"]),
        Route("/_sim/requests/{name}", endpoints.recorded_requests, methods=["GET"]),
        Route("/{partner}/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/{partner}/v1/messages", endpoints.messages, methods=["POST"]),
        Route("/{partner}/v1/models", endpoints.models, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _first_installed(preferred: str, fallback: str) -> str:
    return preferred if importlib.util.find_spec(preferred) is not None else fallback


def serve(host: str = "127.0.0.1", port: int = 8900, config: SimulatorConfig | None = None) -> None:
    """Run the simulator in the foreground with the fastest available uvicorn loop and HTTP parser."""
    uvicorn.run(
        create_app(config or SimulatorConfig.from_env()),
        host=host,
        port=port,
        loop=_first_installed("uvloop", "asyncio"),
        http=_first_installed("httptools", "h11"),
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the process's own handler (gateway_core.logs)
    )


__all__ = ["OrjsonResponse", "create_app", "minimal_instance", "serve"]
