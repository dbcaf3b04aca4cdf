"""Starlette app that impersonates OpenAI-, Anthropic-, Azure OpenAI- and Gemini-style partners.

The request path is deliberately lean (orjson, no pydantic, no logging) because benchmarks drive
this process at ~1,000 requests/s; only the control endpoints validate their input with pydantic.
Each answer then goes on the wire as real APIs send it (delivery.py): compressed when the client
accepts it, and, per partner behaviour, chunked or on a connection the server closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive

from partner_simulator.answers import (
    OFFCONTRACT_TEXT,
    Completion,
    ParsedRequest,
    answer_for,
    load_json_object,
    minimal_instance,
)
from partner_simulator.anthropic_wire import AnthropicWire
from partner_simulator.azure_wire import AzureOpenAIWire
from partner_simulator.behaviour import (
    PartnerBehaviour,
    PartnerKind,
    PartnerStats,
    SimulatorConfig,
    SimulatorSettings,
    SlidingWindowLimiter,
    TokenBucketLimiter,
)
from partner_simulator.delivery import WireShape, bad_gateway_page, choose_encoding, shape
from partner_simulator.embeddings_wire import EMBEDDING_WIRES, azure_route_problem
from partner_simulator.gemini_wire import GeminiWire
from partner_simulator.openai_wire import OpenAIWire
from partner_simulator.streaming import stream_reply
from partner_simulator.wire import OrjsonResponse, WireFormat

RECORDED_BODIES_PER_PARTNER = 10_000
MALFORMED_BODY = b'{"id": "sim-malformed", "choices": [{"message": {"content": "trunc'

Clock = Callable[[], float]

WIRE_FORMATS: dict[PartnerKind, WireFormat] = {
    "openai": OpenAIWire(),
    "anthropic": AnthropicWire(),
    "azure_openai": AzureOpenAIWire(),
    "gemini": GeminiWire(),
}
# Which partner kinds each generation route serves.
_CHAT_COMPLETIONS = frozenset[PartnerKind]({"openai"})
_MESSAGES = frozenset[PartnerKind]({"anthropic"})
_AZURE_CHAT_COMPLETIONS = frozenset[PartnerKind]({"azure_openai"})
_GENERATE_CONTENT = frozenset[PartnerKind]({"gemini"})
_V1_MODELS = frozenset[PartnerKind]({"openai", "anthropic", "gemini"})
_V1BETA_MODELS = frozenset[PartnerKind]({"gemini"})
_EMBEDDINGS = frozenset[PartnerKind]({"openai", "azure_openai", "gemini"})

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


@lru_cache(maxsize=256)
def _encoding_for(accept_encoding: str | None) -> str | None:
    """choose_encoding, remembered: clients send the same few Accept-Encoding values over and over."""
    return choose_encoding(accept_encoding)


def _not_found(message: str) -> Response:
    return OrjsonResponse({"detail": message}, status_code=404)


# --- endpoints -------------------------------------------------------------------------------------


class SimulatorEndpoints:
    def __init__(self, partners: dict[str, PartnerRuntime], settings: SimulatorSettings) -> None:
        self._partners = partners
        self._settings = settings

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, _CHAT_COMPLETIONS)

    async def messages(self, request: Request) -> Response:
        return await self._generate(request, _MESSAGES)

    async def azure_chat_completions(self, request: Request) -> Response:
        return await self._generate(request, _AZURE_CHAT_COMPLETIONS)

    async def generate_content(self, request: Request) -> Response:
        return await self._generate(request, _GENERATE_CONTENT)

    async def embeddings(self, request: Request) -> Response:
        """Every wire's embeddings route: the kind the partner is decides how the body is read and answered."""
        return await self._generate(request, _EMBEDDINGS, embeddings=True)

    async def _embedding_answer(self, runtime: PartnerRuntime, request: Request, body: bytes) -> Response:
        behaviour, stats, wire = runtime.behaviour, runtime.stats, runtime.wire
        rejection = self._auth_rejection(runtime, request)
        if rejection is not None:
            return rejection
        misrouted = azure_route_problem(request) if runtime.kind == "azure_openai" else None
        if misrouted is not None:
            stats.count_error("not_found")
            return wire.error(*misrouted)
        parsed = EMBEDDING_WIRES[runtime.kind].parse(body, runtime.model)
        if isinstance(parsed, str):
            stats.count_error("bad_request")
            return wire.error(400, parsed)
        await _simulate_latency(behaviour, runtime.rng)
        if _happens(behaviour.error_rate, runtime.rng):
            stats.count_error(f"status_{behaviour.error_status}")
            return wire.failure(behaviour.error_status)
        stats.ok += 1
        return EMBEDDING_WIRES[runtime.kind].reply(parsed)

    async def stream_generate_content(self, request: Request) -> Response:
        return await self._generate(request, _GENERATE_CONTENT, streamed=True)

    async def v1_models(self, request: Request) -> Response:
        return await self._list_models(request, _V1_MODELS)

    async def v1beta_models(self, request: Request) -> Response:
        return await self._list_models(request, _V1BETA_MODELS)

    def _runtime_serving(self, request: Request, kinds: frozenset[PartnerKind]) -> PartnerRuntime | Response:
        runtime = self._partners.get(request.path_params["partner"])
        if runtime is None:
            return _not_found("unknown partner")
        if runtime.kind not in kinds:
            return runtime.wire.error(404, f"Partner {runtime.name!r} does not serve this endpoint.")
        return runtime

    async def _list_models(self, request: Request, kinds: frozenset[PartnerKind]) -> Response:
        runtime = self._runtime_serving(request, kinds)
        if isinstance(runtime, Response):
            return runtime
        runtime.stats.enter()
        try:
            response = self._auth_rejection(runtime, request)
            if response is None:
                runtime.stats.ok += 1
                response = runtime.wire.models(runtime.model)
            return self._on_the_wire(runtime, request, response)
        finally:
            runtime.stats.leave()

    async def _generate(self, request: Request, kinds: frozenset[PartnerKind], streamed: bool = False,
                        embeddings: bool = False) -> Response:
        runtime = self._runtime_serving(request, kinds)
        if isinstance(runtime, Response):
            return runtime
        runtime.stats.enter()
        try:
            body = await request.body()
            if runtime.recorded is not None:
                runtime.recorded.append(body.decode("utf-8", "replace"))
            response = await (self._embedding_answer(runtime, request, body) if embeddings
                              else self._answer(runtime, request, body, streamed))
            if isinstance(response, StreamingResponse):  # a stream goes out as it is generated, never reshaped
                return response
            return self._on_the_wire(runtime, request, response)
        finally:
            runtime.stats.leave()

    def _on_the_wire(self, runtime: PartnerRuntime, request: Request, response: Response) -> Response:
        behaviour, rng, stats = runtime.behaviour, runtime.rng, runtime.stats
        encoding = _encoding_for(request.headers.get("accept-encoding")) if self._settings.compress else None
        wire = WireShape(
            encoding, _happens(behaviour.chunked_rate, rng), _happens(behaviour.close_connection_rate, rng)
        )
        if encoding is not None:
            stats.encodings[encoding] += 1
        stats.chunked += wire.chunked
        stats.closed += wire.close
        return shape(response, wire)

    @staticmethod
    def _auth_rejection(runtime: PartnerRuntime, request: Request) -> Response | None:
        if not runtime.behaviour.require_api_key:
            return None
        problem = runtime.wire.auth_problem(request)
        if problem is None:
            return None
        status, message = problem
        runtime.stats.count_error("unauthorized" if status in (401, 403) else "bad_request")
        return runtime.wire.error(status, message)

    async def _answer(self, runtime: PartnerRuntime, request: Request, body: bytes, streamed: bool = False
                      ) -> Response:
        behaviour, stats, wire = runtime.behaviour, runtime.stats, runtime.wire
        if _happens(behaviour.html_502_rate, runtime.rng):
            stats.count_error("html_502")
            return bad_gateway_page()
        rejection = self._auth_rejection(runtime, request)
        if rejection is not None:
            return rejection
        misrouted = wire.route_problem(request, runtime.model)
        if misrouted is not None:
            stats.count_error("not_found")
            return misrouted
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
        if streamed:  # Gemini says it in the URL (:streamGenerateContent), the others in the body
            parsed = dataclasses.replace(parsed, stream=True)
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
        if parsed.stream:
            return stream_reply(runtime.kind, parsed, answer_for(runtime.name, parsed), behaviour, stats)
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
        changes = load_json_object(await request.body())
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

    async def settings(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                self._settings.compress = SimulatorSettings.model_validate_json(await request.body()).compress
            except ValidationError as exc:
                return Response(exc.json(include_url=False), status_code=422, media_type="application/json")
        return OrjsonResponse(self._settings.model_dump())

    async def healthz(self, request: Request) -> Response:
        return OrjsonResponse({"ok": True})


def create_app(config: SimulatorConfig, *, clock: Clock = time.monotonic) -> Starlette:
    """Build the simulator; `clock` drives the rate-limit windows so tests can move time."""
    endpoints = SimulatorEndpoints(_build_runtimes(config, clock), SimulatorSettings(compress=config.compress))
    routes = [
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/_sim/stats", endpoints.stats, methods=["GET"]),
        Route("/_sim/reset", endpoints.reset, methods=["POST"]),
        Route("/_sim/partners", endpoints.list_partners, methods=["GET"]),
        Route("/_sim/partners/{name}", endpoints.update_partner, methods=["PUT"]),
        Route("/_sim/requests/{name}", endpoints.recorded_requests, methods=["GET"]),
        Route("/_sim/settings", endpoints.settings, methods=["GET", "PUT"]),
        Route("/{partner}/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/{partner}/v1/messages", endpoints.messages, methods=["POST"]),
        Route("/{partner}/v1/models", endpoints.v1_models, methods=["GET"]),
        Route(
            "/{partner}/openai/deployments/{deployment}/chat/completions",
            endpoints.azure_chat_completions,
            methods=["POST"],
        ),
        Route("/{partner}/v1beta/models/{model}:generateContent", endpoints.generate_content, methods=["POST"]),
        Route("/{partner}/v1/models/{model}:generateContent", endpoints.generate_content, methods=["POST"]),
        Route("/{partner}/v1beta/models/{model}:streamGenerateContent", endpoints.stream_generate_content,
              methods=["POST"]),
        Route("/{partner}/v1/models/{model}:streamGenerateContent", endpoints.stream_generate_content,
              methods=["POST"]),
        Route("/{partner}/v1beta/models", endpoints.v1beta_models, methods=["GET"]),
        Route("/{partner}/v1/embeddings", endpoints.embeddings, methods=["POST"]),
        Route("/{partner}/openai/deployments/{deployment}/embeddings", endpoints.embeddings, methods=["POST"]),
        Route("/{partner}/v1beta/models/{model}:batchEmbedContents", endpoints.embeddings, methods=["POST"]),
        Route("/{partner}/v1/models/{model}:batchEmbedContents", endpoints.embeddings, methods=["POST"]),
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
        log_config=None,  # uvicorn's lines go through the process's own handler (gateway_core.fleet.logs)
    )


__all__ = ["OrjsonResponse", "create_app", "minimal_instance", "serve"]
