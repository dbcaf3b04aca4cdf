"""Configuration models for simulated partners, plus the plain counters the hot path updates.

The pydantic models are validated only when configuration enters the process (startup or a control
endpoint); per-request bookkeeping uses the slotted classes below so it stays cheap.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIG_ENV_VAR = "FEDGATE_SIM_CONFIG"
COMPRESS_ENV_VAR = "FEDGATE_SIM_COMPRESS"
RATE_WINDOW_S = 60.0
FIXED_ERROR_KINDS = ("timeout", "malformed", "offcontract", "unauthorized", "bad_request")
# Partner names become the first path segment, so they must not collide with control routes.
_PARTNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED_NAMES = frozenset({"healthz"})

PartnerKind = Literal["openai", "anthropic", "azure_openai", "gemini"]
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class PartnerBehaviour(BaseModel):
    """How one simulated partner misbehaves. Rates are probabilities drawn per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0, ge=0)
    latency_jitter_ms: float = Field(default=0, ge=0)
    error_rate: float = Field(default=0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)
    timeout_rate: float = Field(default=0, ge=0, le=1)
    hang_s: float = Field(default=120, ge=0)
    malformed_rate: float = Field(default=0, ge=0, le=1)
    offcontract_rate: float = Field(default=0, ge=0, le=1)
    # What a load balancer in front of the partner answers when its upstream fails: an HTML page, not JSON.
    html_502_rate: float = Field(default=0, ge=0, le=1)
    # Wire shapes of a correct answer (not faults): a chunked body, and `Connection: close` then a closed socket.
    chunked_rate: float = Field(default=0, ge=0, le=1)
    close_connection_rate: float = Field(default=0, ge=0, le=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    # token_bucket refills continuously (as OpenAI and Anthropic describe their limits) and holds `burst_s`
    # seconds of requests; sliding_window counts accepted requests over any trailing 60 s, the strictest reading.
    rate_limiter: Literal["token_bucket", "sliding_window"] = "token_bucket"
    burst_s: float = Field(default=2.0, gt=0, le=60)
    require_api_key: bool = True
    seed: int | None = None
    # Streamed answers (partner_simulator.streaming): characters per delta, the pause between deltas, and where to
    # stop a stream without its end (a partner failing mid-answer; None: never).
    stream_chunk_chars: int = Field(default=4, ge=1, le=10_000)
    stream_token_delay_ms: float = Field(default=0, ge=0)
    stream_cut_after_chars: int | None = Field(default=None, ge=0)

    def patched(self, changes: dict[str, Any]) -> PartnerBehaviour:
        """Return a validated copy with only the given fields changed."""
        return PartnerBehaviour.model_validate({**self.model_dump(), **changes})


class SimulatedPartner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: PartnerKind
    model: str = "sim-model"
    behaviour: PartnerBehaviour = PartnerBehaviour()


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partners: dict[str, SimulatedPartner]
    record_bodies: bool = False
    compress: bool = Field(
        default=True,
        description="Compress answers (br, zstd, gzip or deflate) when the client's Accept-Encoding allows, as real "
        "APIs do; FEDGATE_SIM_COMPRESS=0 or PUT /_sim/settings {\"compress\": false} turns it off",
    )

    @field_validator("partners")
    @classmethod
    def _names_fit_in_a_path_segment(cls, partners: dict[str, SimulatedPartner]) -> dict[str, SimulatedPartner]:
        for name in partners:
            if not _PARTNER_NAME.match(name) or name in _RESERVED_NAMES:
                raise ValueError(f"partner name {name!r} cannot be used as a path prefix")
        return partners

    @classmethod
    def demo(cls) -> SimulatorConfig:
        return cls(
            partners={
                "sim-openai": SimulatedPartner(kind="openai", model="sim-gpt"),
                "sim-anthropic": SimulatedPartner(kind="anthropic", model="sim-claude"),
                # Azure routes by deployment: the simulated deployment is named after `model`.
                "sim-azure": SimulatedPartner(kind="azure_openai", model="sim-gpt-deployment"),
                "sim-gemini": SimulatedPartner(kind="gemini", model="sim-gemini-flash"),
            }
        )

    @classmethod
    def from_env(cls) -> SimulatorConfig:
        """Load the JSON file named by FEDGATE_SIM_CONFIG (else the demo partners); FEDGATE_SIM_COMPRESS overrides
        the file's `compress`."""
        path = os.environ.get(CONFIG_ENV_VAR)
        config = cls.model_validate_json(Path(path).read_bytes()) if path else cls.demo()
        compress = os.environ.get(COMPRESS_ENV_VAR, "").strip().lower()
        if not compress:
            return config
        if compress not in _TRUE_WORDS | _FALSE_WORDS:
            raise ValueError(f"{COMPRESS_ENV_VAR} must be one of 1/0, true/false, yes/no, on/off (got {compress!r})")
        return config.model_copy(update={"compress": compress in _TRUE_WORDS})


class SimulatorSettings(BaseModel):
    """Simulator-wide settings that can change while it runs (PUT /_sim/settings)."""

    model_config = ConfigDict(extra="forbid")

    compress: bool


def _new_error_counter() -> Counter[str]:
    return Counter(dict.fromkeys(FIXED_ERROR_KINDS, 0))


@dataclass(slots=True)
class PartnerStats:
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: Counter[str] = field(default_factory=_new_error_counter)
    in_flight: int = 0
    max_in_flight: int = 0
    # How answers went on the wire: by content-coding, and how many were chunked or closed their connection.
    encodings: Counter[str] = field(default_factory=Counter)
    chunked: int = 0
    closed: int = 0
    # Streamed answers: started, still being sent, and ended early because the client went away.
    streams: int = 0
    streams_open: int = 0
    streams_cut: int = 0

    def enter(self) -> None:
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def count_error(self, kind: str) -> None:
        self.errors[kind] += 1

    def reset(self) -> None:
        self.requests = 0
        self.ok = 0
        self.rate_limited = 0
        self.errors = _new_error_counter()
        self.encodings = Counter()
        self.chunked = 0
        self.closed = 0
        self.streams = 0
        self.streams_cut = 0
        # Requests still running will call leave(), so in_flight must keep its live value.
        self.max_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "over_limit": self.rate_limited,
            "errors": dict(self.errors),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "encodings": dict(self.encodings),
            "chunked": self.chunked,
            "closed": self.closed,
            "streams": self.streams,
            "streams_open": self.streams_open,
            "streams_cut": self.streams_cut,
        }


class SlidingWindowLimiter:
    """Accepts at most `limit` requests in any trailing 60-second window."""

    __slots__ = ("_accepted", "_clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._accepted: deque[float] = deque()

    def try_acquire(self, limit: int) -> float | None:
        """Record an accepted request and return None, or return seconds until a slot frees up."""
        now = self._clock()
        accepted = self._accepted
        horizon = now - RATE_WINDOW_S
        while accepted and accepted[0] <= horizon:
            accepted.popleft()
        if len(accepted) < limit:
            accepted.append(now)
            return None
        # The limit may have been lowered at run time, so the freeing entry is not always the oldest.
        freeing_at = accepted[len(accepted) - limit] + RATE_WINDOW_S
        return freeing_at - now

    def clear(self) -> None:
        self._accepted.clear()


class TokenBucketLimiter:
    """Refills at limit/60 per second up to `burst_s` seconds' worth; a request takes one token."""

    __slots__ = ("_at", "_clock", "_level")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._level: float | None = None
        self._at = 0.0

    def try_acquire(self, limit: int, burst_s: float) -> float | None:
        now = self._clock()
        rate = limit / RATE_WINDOW_S
        capacity = max(1.0, rate * burst_s)
        level = capacity if self._level is None else min(capacity, self._level + (now - self._at) * rate)
        self._at = now
        if level >= 1.0:
            self._level = level - 1.0
            return None
        self._level = level
        return (1.0 - level) / rate

    def clear(self) -> None:
        self._level = None


def retry_after_seconds(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


def retry_after_millis(wait_s: float) -> int:
    return max(1, math.ceil(wait_s * 1000))
