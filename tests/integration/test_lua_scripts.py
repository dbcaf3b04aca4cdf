"""The Lua scripts in gateway_core/fleet/lua on a real redis-server (a database of each test's own): each loads, and
the job settle scripts, one per outcome, do every side effect the outcome owes (and none it does not)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys, lua
from gateway_core.jobs.models import JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.store import BATCH_KEY_PREFIX, PAYLOAD_FIELDS, JobRecord, JobStore, delayed_member
from tests.helpers import run_async_scenario
from tests.unit.test_lua_scripts import SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_loads_on_redis(redis_client: redis.Redis, name: str) -> None:
    text = lua.script(name)
    sha = redis_client.script_load(text)
    assert redis_client.script_exists(sha) == [True]


# --- the settle scripts, one per outcome ---------------------------------------------------------------------------

TTL_S = 3600


class Env:
    def __init__(self, client: aioredis.Redis, store: JobStore) -> None:
        self.redis = client
        self.store = store
        self.batch_keys: list[str] = []

    async def claimed(self, lane: str = keys.INTERACTIVE, batch_id: str | None = None) -> tuple[JobRecord, str]:
        record = JobRecord(
            id=new_job_id(), tenant="tenant-a", partner="p1", requested_partner="p1", status=JobStatus.QUEUED,
            attempt=1, created_at=now(), messages=[Message(role="user", content="hello")], lane=lane,
        )
        await self.store.create(record)
        if batch_id is not None:
            await self.redis.hset(keys.job(record.id), "batch_id", batch_id)
            self.batch_keys.append(BATCH_KEY_PREFIX + batch_id)
            await self.redis.hset(BATCH_KEY_PREFIX + batch_id, "status", "in_progress")
        word, token, _ = await self.store.begin_run(record.id, "p1", 1)
        assert word == "ok"
        loaded = await self.store.get(record.id, with_payload=True)
        assert loaded is not None
        return loaded, token

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


@pytest.fixture()
def run_env(redis_url: str) -> Callable[[Callable[[Env], Awaitable[Any]]], Any]:
    cipher = PayloadCipher([Fernet.generate_key()])

    def run(scenario: Callable[[Env], Awaitable[Any]]) -> Any:
        return run_async_scenario(redis_url, lambda c: Env(c, JobStore(c, cipher, TTL_S)), scenario)

    return run


Runner = Callable[[Callable[[Env], Awaitable[Any]]], Any]


async def announced(client: aioredis.Redis, channel: str, settle: Awaitable[bool], job_id: str) -> list[str]:
    """What `settle` publishes on `channel` about `job_id` (waits for the first such message, with a deadline).

    Channels are not per database: messages about other tests' jobs may arrive too, and are skipped."""
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    try:
        assert await settle
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None and str(message["data"]).partition("|")[0] == job_id:
                return [str(message["data"])]
        return []
    finally:
        await pubsub.unsubscribe(channel)
        await pubsub.aclose()


def test_success_with_retention_schedules_the_payload_deletion(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(batch_id=f"b_{new_job_id()}")
        before = await env.now_ms()
        settle = env.store.publish_success(record, token, "the answer", Usage(), "p1", retention_s=600)
        assert await announced(env.redis, keys.DONE_CHANNEL, settle, record.id) == [record.id]
        after = await env.now_ms()
        raw = await env.redis.hgetall(keys.job(record.id))
        assert raw["status"] == "succeeded" and raw["output"] and raw["messages"] and "run_token" in raw
        score = await env.redis.zscore(keys.RETENTION, record.id)
        assert score is not None and before + 600_000 <= score <= after + 600_000
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S
        assert await env.redis.hgetall(env.batch_keys[0]) == {"status": "in_progress", "n_succeeded": "1"}
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is None

    run_env(scenario)


def test_success_with_no_retention_drops_the_payload_and_sends_the_output_only_to_waiters(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        settle = env.store.publish_success(record, token, "the answer", Usage(), "p1", retention_s=0,
                                           placeholder_map="{}")
        [message] = await announced(env.redis, keys.DONE_CHANNEL, settle, record.id)
        job_id, _, sealed = message.partition("|")
        assert job_id == record.id and env.store.cipher.decrypt(sealed.encode()) == "the answer"
        raw = await env.redis.hgetall(keys.job(record.id))
        assert raw["status"] == "succeeded" and raw["payload_retained"] == "0"
        assert not set(PAYLOAD_FIELDS) & set(raw)
        assert await env.redis.zscore(keys.RETENTION, record.id) is None

    run_env(scenario)


def test_a_batch_job_is_announced_on_the_batch_channel(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(lane=keys.BATCH)
        settle = env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up")
        assert await announced(env.redis, keys.done_channel(keys.BATCH), settle, record.id) == [record.id]

    run_env(scenario)


@pytest.mark.parametrize("status", [JobStatus.DEAD_LETTERED])
def test_failure_counts_in_the_batch_and_only_a_dead_letter_is_listed(run_env: Runner, status: JobStatus) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(batch_id=f"b_{new_job_id()}")
        record.cost_nanousd = 1234
        settle = env.store.finish_unsuccessful(record, token, status, "gave up")
        assert await announced(env.redis, keys.DONE_CHANNEL, settle, record.id) == [record.id]
        raw = await env.redis.hgetall(keys.job(record.id))
        assert (raw["status"], raw["error"], raw["cost_nanousd"]) == (status.value, "gave up", "1234")
        listed = await env.redis.zscore(keys.DEAD_LETTERS, record.id) is not None
        assert listed is (status is JobStatus.DEAD_LETTERED)
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S
        assert await env.redis.hget(env.batch_keys[0], "n_unsuccessful") == "1"
        assert await env.redis.zscore(keys.RETENTION, record.id) is None

    run_env(scenario)


def test_move_on_is_not_an_ending(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(lane=keys.BATCH, batch_id=f"b_{new_job_id()}")
        member = delayed_member(record.id, "p2", 2)
        assert await env.store.move_on(record, token, status=JobStatus.QUEUED, partner="p2", attempt=2,
                                       delay_s=600.0, reservation="p2:2")
        assert await env.redis.zscore(keys.delayed(keys.BATCH), member) is not None
        assert await env.redis.lrange(keys.delayed_wake(keys.BATCH), 0, -1) == ["1"]
        raw = await env.redis.hgetall(keys.job(record.id))
        assert (raw["status"], raw["partner"], raw["attempt"], raw["reservation"]) == ("queued", "p2", "2", "p2:2")
        assert await env.redis.ttl(keys.job(record.id)) > 0  # the record's TTL from creation, not a finished one's
        assert await env.redis.hgetall(env.batch_keys[0]) == {"status": "in_progress"}
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is None

    run_env(scenario)


def test_only_one_of_three_racing_outcomes_settles(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        results = await asyncio.gather(
            env.store.publish_success(record, token, "out", Usage(), "p1"),
            env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up"),
            env.store.move_on(record, token, status=JobStatus.RETRYING, partner="p1", attempt=2, delay_s=600.0),
        )
        assert sorted(results) == [False, False, True]

    run_env(scenario)
