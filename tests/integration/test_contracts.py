"""The output contract registry on a real Redis (a database of each test's own): versions, compatibility checks
on add, forced versions, concurrent adds, and models registered in code synced at worker start."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from gateway_core.contracts import (
    ContractNotFound,
    ContractRegistry,
    IncompatibleContract,
    InvalidContractName,
    InvalidSchema,
    register_model,
    unregister_model,
)
from gateway_core.contracts.registry import INDEX, contract_key
from tests.helpers import run_async_scenario
from tests.unit.test_contracts import INVOICE, OrderV1, OrderV2, changed

T = TypeVar("T")


# --- the registry -----------------------------------------------------------------------------------------------------


class RegistryEnv:
    def __init__(self, client: aioredis.Redis, names: list[str]) -> None:
        self.redis = client
        self.registry = ContractRegistry(client)
        self.names = names

    def name(self) -> str:
        name = f"t-{secrets.token_hex(5)}"
        self.names.append(name)
        return name


Runner = Callable[[Callable[[RegistryEnv], Awaitable[Any]]], Any]


@pytest.fixture()
def run_registry(redis_url: str) -> Iterator[Callable[[Callable[[RegistryEnv], Awaitable[T]]], T]]:
    names: list[str] = []

    def run(scenario: Callable[[RegistryEnv], Awaitable[T]]) -> T:
        return run_async_scenario(redis_url, lambda client: RegistryEnv(client, names), scenario)  # type: ignore[no-any-return]

    yield run
    for name in names:  # models registered in code live in this process, not in the test's database
        unregister_model(name)


def test_versions_increment_and_can_be_read_back(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()
        first, verdict = await env.registry.add(name, INVOICE)
        assert (first.version, first.forced, first.source, verdict.compatible) == (1, False, "json_schema", True)
        second, verdict = await env.registry.add(name, changed(properties__currency={"type": "string"}))
        assert second.version == 2 and verdict.compatible and verdict.problems == []
        assert (await env.registry.get(name)).schema_["properties"]["currency"] == {"type": "string"}
        assert (await env.registry.get(name, 1)).schema_ == INVOICE
        assert [v.version for v in await env.registry.versions(name)] == [1, 2]
        assert (await env.registry.resolve(f"{name}@1")).version == 1
        summary = next(s for s in await env.registry.list() if s.name == name)
        assert (summary.latest_version, summary.versions, summary.updated_at) == (2, 2, second.created_at)
        # stored where the docs say
        assert sorted(await env.redis.hkeys(contract_key(name))) == ["1", "2"]
        assert await env.redis.zscore(INDEX, name) == pytest.approx(second.created_at)

    run_registry(scenario)


def test_an_incompatible_version_is_refused_and_nothing_is_stored(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()
        await env.registry.add(name, INVOICE)
        with pytest.raises(IncompatibleContract) as caught:
            await env.registry.add(name, changed(required=["total"], properties__total={"type": "number"}))
        assert caught.value.previous == 1
        assert caught.value.verdict.problems == [
            "required field 'customer_id' removed",
            "properties.total: type narrowed from ['number','string'] to 'number'",
        ]
        assert "required field 'customer_id' removed" in str(caught.value)
        assert [v.version for v in await env.registry.versions(name)] == [1]

    run_registry(scenario)


def test_force_stores_an_incompatible_version_and_records_it(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()
        await env.registry.add(name, INVOICE)
        stored, verdict = await env.registry.add(name, changed(required=["total"]), force=True)
        assert stored.version == 2 and stored.forced and not verdict.compatible
        assert stored.problems == verdict.problems == ["required field 'customer_id' removed"]
        again = await env.registry.get(name)
        assert again.forced and again.problems == stored.problems
        compatible, _ = await env.registry.add(name, changed(required=["total"]), force=True)
        assert not compatible.forced  # nothing had to be forced

    run_registry(scenario)


def test_invalid_input_is_refused_before_anything_is_stored(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()
        with pytest.raises(InvalidSchema) as caught:
            await env.registry.add(name, {"type": "object", "properties": {"a": {"type": "strnig"}}})
        assert caught.value.path == "$.properties.a.type"
        with pytest.raises(InvalidContractName, match="invalid contract name 'Bad Name'"):
            await env.registry.add("Bad Name", INVOICE)
        assert not await env.redis.exists(contract_key(name))
        with pytest.raises(ContractNotFound, match=f"no contract named '{name}'"):
            await env.registry.get(name)
        await env.registry.add(name, INVOICE)
        with pytest.raises(ContractNotFound, match=r"has no version 7 \(latest is 1\)"):
            await env.registry.get(name, 7)
        with pytest.raises(ContractNotFound):
            await env.registry.versions(env.name())

    run_registry(scenario)


def test_concurrent_adds_get_distinct_versions(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()  # one registry per "process", each on its own connections
        registries = [ContractRegistry(env.redis) for _ in range(10)]
        results = await asyncio.gather(*(r.add(name, INVOICE) for r in registries))
        assert sorted(v.version for v, _ in results) == list(range(1, 11))
        assert [v.version for v in await env.registry.versions(name)] == list(range(1, 11))

    run_registry(scenario)


def test_concurrent_adds_are_each_checked_against_the_version_they_follow(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()
        await env.registry.add(name, INVOICE)
        narrowed = changed(properties__total={"type": "number"})
        outcomes = await asyncio.gather(env.registry.add(name, narrowed, force=True),
                                        env.registry.add(name, INVOICE), return_exceptions=True)
        stored = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, IncompatibleContract)]
        # either INVOICE went in first as v2 (then the forced one is v3), or the forced narrowing was v2 and
        # re-adding INVOICE after it widens the type back: refused, never silently stored over it
        assert len(stored) + len(refused) == 2
        versions = await env.registry.versions(name)
        assert [v.version for v in versions] == list(range(1, len(versions) + 1))
        if refused:
            assert refused[0].previous == 2 and versions[-1].forced

    run_registry(scenario)


def test_register_model_and_sync_models(run_registry: Runner) -> None:
    async def scenario(env: RegistryEnv) -> None:
        name = env.name()
        register_model(name, OrderV1)
        register_model(name, OrderV1)  # registering the same model again is harmless
        with pytest.raises(ValueError, match="already registered"):
            register_model(name, OrderV2)
        synced = await env.registry.sync_models()
        mine = next(v for v in synced if v.name == name)
        assert (mine.version, mine.source) == (1, "pydantic")
        assert mine.schema_ == OrderV1.model_json_schema()
        await env.registry.sync_models()  # every worker start: no new version while the model is unchanged
        assert [v.version for v in await env.registry.versions(name)] == [1]

        class OrderV1b(OrderV1):
            discount: float | None = None

        unregister_model(name)
        register_model(name, OrderV1b)
        await env.registry.sync_models()
        assert (await env.registry.get(name)).version == 2

        unregister_model(name)
        register_model(name, OrderV2)
        with pytest.raises(IncompatibleContract) as caught:
            await env.registry.sync_models()
        assert "OrderV2" in str(caught.value) and "enum value 'refund' removed" in str(caught.value)
        assert (await env.registry.get(name)).version == 2
        unregister_model(name)

    run_registry(scenario)
