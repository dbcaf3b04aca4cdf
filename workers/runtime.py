"""Per-process resources a worker's pipeline needs, created once on the I/O loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property

import redis.asyncio as aioredis

from gateway_core.config import GatewayConfig, load_config
from gateway_core.contracts import ContractRegistry, ContractVersion
from gateway_core.crypto import load_cipher
from gateway_core.fleet.redis_clients import async_client
from gateway_core.jobs import run_owners
from gateway_core.jobs.job_stream import JobStream
from gateway_core.jobs.store import JobStore
from gateway_core.partners.adapters import PartnerAdapter, adapter_for
from gateway_core.partners.adapters.base import HttpPool
from gateway_core.partners.adapters.embeddings import EmbeddingAdapter, embedding_adapter_for
from gateway_core.partners.breaker import CircuitBreakers
from gateway_core.partners.ratelimit import PartnerBudgets
from gateway_core.redaction import Redactor
from gateway_core.settings import Settings, get_settings


@dataclass
class Runtime:
    settings: Settings
    config: GatewayConfig
    redis: aioredis.Redis
    store: JobStore
    http: HttpPool
    _contracts: dict[str, ContractVersion] = field(default_factory=dict)

    @cached_property
    def budgets(self) -> PartnerBudgets:
        return PartnerBudgets(self.redis)

    @cached_property
    def breakers(self) -> CircuitBreakers:
        return CircuitBreakers(self.redis)

    @cached_property
    def redactors(self) -> dict[str, Redactor]:
        return {name: Redactor(cfg.policy) for name, cfg in self.config.partners.items()}

    @cached_property
    def job_stream(self) -> JobStream:
        return JobStream(self.redis, self.store.cipher)

    @cached_property
    def contracts(self) -> ContractRegistry:
        return ContractRegistry(self.redis)

    async def contract(self, reference: str) -> ContractVersion:
        """A pinned contract version ("name@N"); versions never change, so each is read from Redis once."""
        found = self._contracts.get(reference)
        if found is None:
            found = self._contracts[reference] = await self.contracts.resolve(reference)
        return found

    def tenant_salt(self, tenant: str) -> str:
        return self.store.cipher.derive(f"redaction-salt:{tenant}")

    @cached_property
    def adapters(self) -> dict[str, PartnerAdapter]:
        return {name: adapter_for(cfg, self.http) for name, cfg in self.config.partners.items()}

    @cached_property
    def embedding_adapters(self) -> dict[str, EmbeddingAdapter]:
        """The partners that can take embedding jobs (an adapter with an embeddings wire and an embedding_model)."""
        found = {name: embedding_adapter_for(cfg, self.http) for name, cfg in self.config.partners.items()}
        return {name: adapter for name, adapter in found.items() if adapter is not None}

    async def close(self) -> None:
        await self.http.aclose()
        await self.redis.aclose()


_runtimes: dict[int, Runtime] = {}
REDIS_CONNECTIONS = 64


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or get_settings()
    config = load_config(settings.config, home=settings.home_dir())
    # Commands take well under a millisecond, so a few dozen connections serve thousands of calls in flight;
    # a connection per call would cost seconds of connects when a worker starts with a full prefetch.
    client = async_client(settings, decode_responses=True, max_connections=REDIS_CONNECTIONS, pool_timeout_s=30)
    store = JobStore(client, load_cipher(settings), settings.job_ttl_s, run_owner=run_owners.new_owner())
    http = HttpPool(settings.worker_concurrency, settings.max_partner_response_bytes)
    return Runtime(settings, config, client, store, http)


def runtime() -> Runtime:
    """The runtime bound to the running loop (clients may not cross event loops)."""
    loop_id = id(asyncio.get_running_loop())
    found = _runtimes.get(loop_id)
    if found is None:
        found = _runtimes[loop_id] = build_runtime()
    return found
