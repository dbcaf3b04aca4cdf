"""The Redis job store against a real redis-server (a database of each test's own): encryption at rest, run claims,
guarded settles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.jobs.models import Attempt, JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.store import JobRecord, JobStore, delayed_member, parse_delayed_member
from tests.helpers import run_async_scenario

T = TypeVar("T")
TTL_S = 3600
PROMPT = "Please summarise: patient Jane Roe, card 4111 1111 1111 1111, phone +44 20 7946 0958"
OUTPUT = "Summary for Jane Roe: card ending 1111 is on file"


class StoreEnv:
    """One store on one event loop, on this test's own Redis database."""

    def __init__(self, client: aioredis.Redis, store: JobStore) -> None:
        self.redis = client
        self.store = store

    async def new_job(self, partner: str = "p1", attempt: int = 1, prompt: str = PROMPT) -> JobRecord:
        record = JobRecord(
            id=new_job_id(),
            tenant="tenant-a",
            partner=partner,
            requested_partner=partner,
            status=JobStatus.QUEUED,
            attempt=attempt,
            created_at=now(),
            messages=[Message(role="system", content="be brief"), Message(role="user", content=prompt)],
            params={"max_tokens": 64},
            metadata={"ref": "order-17"},
        )
        await self.store.create(record)
        return record

    async def claimed(self, partner: str = "p1") -> tuple[JobRecord, str]:
        """A new job claimed for its first run; returns the loaded record and the run token."""
        record = await self.new_job(partner)
        word, token, _ = await self.store.begin_run(record.id, partner, 1)
        assert word == "ok"
        loaded = await self.store.get(record.id, with_payload=True)
        assert loaded is not None
        return loaded, token

    async def raw(self, job_id: str) -> dict[str, str]:
        return await self.redis.hgetall(keys.job(job_id))

    async def redis_now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


@pytest.fixture()
def run_store(redis_url: str) -> Callable[[Callable[[StoreEnv], Awaitable[T]]], T]:
    """Run `scenario(env)` on a fresh event loop with a fresh client (clients may not cross loops)."""
    cipher = PayloadCipher([Fernet.generate_key()])

    def run(scenario: Callable[[StoreEnv], Awaitable[T]]) -> T:
        def make_env(client: aioredis.Redis) -> StoreEnv:
            return StoreEnv(client, JobStore(client, cipher, TTL_S))

        return run_async_scenario(redis_url, make_env, scenario)  # type: ignore[no-any-return]

    return run


Runner = Callable[[Callable[[StoreEnv], Awaitable[Any]]], Any]


def attempt(partner: str, number: int, outcome: str = "retryable") -> Attempt:
    return Attempt(partner=partner, attempt=number, outcome=outcome, status_code=503,  # type: ignore[arg-type]
                   error="HTTP 503: busy", started_at=now(), duration_ms=12.5)


# --- encryption at rest ----------------------------------------------------------------------------------------


def test_prompt_and_output_are_not_stored_in_plaintext(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        assert await env.store.publish_success(record, token, OUTPUT, Usage(prompt_tokens=5, completion_tokens=3), "p1")
        raw = await env.raw(record.id)
        assert raw["messages"] and raw["output"]
        for field, value in raw.items():
            for secret in (PROMPT, "Jane Roe", "4111 1111", "be brief", OUTPUT):
                assert secret not in value, f"{secret!r} stored in plaintext in field {field!r}"
        # ...and nowhere in the delayed queue or dead-letter set either
        for member in await env.redis.zrange(keys.DELAYED, 0, -1) + await env.redis.zrange(keys.DEAD_LETTERS, 0, -1):
            assert "Jane" not in member
        # but the store reads them back
        loaded = await env.store.get(record.id, with_payload=True)
        assert loaded is not None
        assert [m.content for m in loaded.messages] == ["be brief", PROMPT]
        assert loaded.output == OUTPUT

    run_store(scenario)


def test_new_job_round_trips_and_payload_is_loaded_only_on_request(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record = await env.new_job(partner="p9", attempt=1)
        ttl = await env.redis.ttl(keys.job(record.id))
        assert 0 < ttl <= TTL_S
        light = await env.store.get(record.id)
        assert light is not None
        assert light.messages == []
        assert (light.tenant, light.partner, light.requested_partner) == ("tenant-a", "p9", "p9")
        assert (light.status, light.attempt) == (JobStatus.QUEUED, 1)
        assert light.params == {"max_tokens": 64} and light.metadata == {"ref": "order-17"}
        assert light.history == [] and light.output is None and light.started_at is None
        full = await env.store.get(record.id, with_payload=True)
        assert full is not None and full.messages == record.messages
        assert await env.store.get(new_job_id()) is None

    run_store(scenario)


# --- begin_run ----------------------------------------------------------------------------------------------------


def test_begin_run_missing_job(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        word, _, fields = await env.store.begin_run(new_job_id(), "p1", 1)
        assert (word, fields) == ("missing", {})

    run_store(scenario)


def test_begin_run_ok_claims_the_job(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record = await env.new_job()
        word, token, fields = await env.store.begin_run(record.id, "p1", 1)
        assert word == "ok"
        raw = await env.raw(record.id)
        assert raw["status"] == "running"
        assert raw["run_token"] == token
        assert float(raw["started_at"]) >= record.created_at
        assert fields == raw  # the claim hands back the job's fields as they are after the claim
        claimed = env.store.decode(record.id, fields, with_payload=True)
        assert claimed.status is JobStatus.RUNNING and claimed.messages == record.messages

    run_store(scenario)


@pytest.mark.parametrize(("partner", "attempt_no"), [("p2", 1), ("p1", 2), ("p1", 0)])
def test_begin_run_stale_for_another_partner_or_attempt(run_store: Runner, partner: str, attempt_no: int) -> None:
    async def scenario(env: StoreEnv) -> None:
        record = await env.new_job(partner="p1", attempt=1)
        word, _, fields = await env.store.begin_run(record.id, partner, attempt_no)
        assert (word, fields) == ("stale", {})
        raw = await env.raw(record.id)
        assert raw["status"] == "queued"  # a stale message changes nothing
        assert "run_token" not in raw

    run_store(scenario)


def test_begin_run_redelivered_takes_over_and_keeps_started_at(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record = await env.new_job()
        _, first, _ = await env.store.begin_run(record.id, "p1", 1)
        started = (await env.raw(record.id))["started_at"]
        word, second, fields = await env.store.begin_run(record.id, "p1", 1)
        assert word == "redelivered"
        assert second != first
        raw = await env.raw(record.id)
        assert raw["run_token"] == second
        assert fields["run_token"] == second
        assert raw["started_at"] == started

    run_store(scenario)


@pytest.mark.parametrize("finish", ["succeeded", "dead_lettered"])
def test_begin_run_done_after_the_job_finished(run_store: Runner, finish: str) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        if finish == "succeeded":
            assert await env.store.publish_success(record, token, "out", Usage(), "p1")
        else:
            assert await env.store.finish_unsuccessful(record, token, JobStatus(finish), "gave up")
        word, _, fields = await env.store.begin_run(record.id, "p1", 1)
        assert (word, fields) == ("done", {})
        assert (await env.raw(record.id))["run_token"] == token  # a finished job is not re-claimed

    run_store(scenario)


def test_begin_run_done_for_a_cancelled_job(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record = await env.new_job()
        await env.redis.hset(keys.job(record.id), "status", "cancelled")
        word, _, _ = await env.store.begin_run(record.id, "p1", 1)
        assert word == "done"

    run_store(scenario)


def test_a_released_claim_is_queued_again_and_its_next_run_is_a_first_run(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        assert not await env.store.release_claim(record.id, "not-the-token")
        assert await env.store.release_claim(record.id, token)
        fields = await env.redis.hgetall(keys.job(record.id))
        assert fields["status"] == "queued" and "run_token" not in fields
        assert not await env.store.release_claim(record.id, token)  # already given back
        word, _, _ = await env.store.begin_run(record.id, "p1", 1)
        assert word == "ok"

    run_store(scenario)


def test_concurrent_duplicate_claims_leave_exactly_one_owner(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record = await env.new_job()
        results = await asyncio.gather(*(env.store.begin_run(record.id, "p1", 1) for _ in range(20)))
        words = sorted(word for word, _, _ in results)
        assert words == ["ok"] + ["redelivered"] * 19
        owner = (await env.raw(record.id))["run_token"]
        assert owner in {token for _, token, _ in results}
        # scripts run one at a time: each claim saw itself as the owner when it ran
        assert all(fields["run_token"] == token for _, token, fields in results)

    run_store(scenario)


# --- guarded settles: no zombie publishes ---------------------------------------------------------------------------


def test_zombie_run_cannot_publish_after_a_takeover(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, zombie = await env.claimed()
        word, current, _ = await env.store.begin_run(record.id, "p1", 1)  # redelivery: another worker takes over
        assert word == "redelivered"

        assert not await env.store.publish_success(record, zombie, "zombie output", Usage(), "p1")
        assert not await env.store.finish_unsuccessful(record, zombie, JobStatus.DEAD_LETTERED, "zombie")
        assert not await env.store.move_on(record, zombie, status=JobStatus.RETRYING, partner="p1", attempt=2,
                                           delay_s=0)
        raw = await env.raw(record.id)
        assert raw["status"] == "running"
        assert "output" not in raw and "error" not in raw and raw["attempt"] == "1"
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is None
        assert await env.redis.zscore(keys.DELAYED, delayed_member(record.id, "p1", 2)) is None

        assert await env.store.publish_success(record, current, "real output", Usage(), "p1")
        loaded = await env.store.get(record.id)
        assert loaded is not None and loaded.output == "real output"

    run_store(scenario)


def test_a_run_settles_only_once(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        assert await env.store.publish_success(record, token, "first", Usage(), "p1")
        assert not await env.store.publish_success(record, token, "second", Usage(), "p1")
        assert not await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "late failure")
        loaded = await env.store.get(record.id)
        assert loaded is not None
        assert (loaded.status, loaded.output, loaded.error) == (JobStatus.SUCCEEDED, "first", None)

    run_store(scenario)


# --- publish_success ------------------------------------------------------------------------------------------------


async def next_done_message(pubsub: Any, job_id: str, deadline_s: float = 10.0) -> str | None:
    """The first done-channel message for job_id (other tests may publish on the same channel)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message and message["data"] == job_id:
            return str(message["data"])
    return None


def test_publish_success_sets_fields_and_announces_the_job(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        record.history.append(attempt("p1", 1, outcome="ok"))
        pubsub = env.redis.pubsub()
        await pubsub.subscribe(keys.DONE_CHANNEL)
        try:
            usage = Usage(prompt_tokens=12, completion_tokens=34)
            assert await env.store.publish_success(record, token, OUTPUT, usage, "p1-fallback")
            assert await next_done_message(pubsub, record.id) == record.id
        finally:
            await pubsub.unsubscribe(keys.DONE_CHANNEL)
            await pubsub.aclose()
        loaded = await env.store.get(record.id)
        assert loaded is not None
        assert loaded.status is JobStatus.SUCCEEDED
        assert loaded.output == OUTPUT
        assert loaded.usage == usage
        assert loaded.answered_by == "p1-fallback"
        assert loaded.finished_at is not None and loaded.finished_at >= (loaded.started_at or 0)
        assert [(a.partner, a.outcome) for a in loaded.history] == [("p1", "ok")]
        view = loaded.view()
        assert view.attempts == 1 and view.output == OUTPUT and "total_ms" in view.timings_ms
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is None

    run_store(scenario)


# --- move_on --------------------------------------------------------------------------------------------------------


def test_move_on_schedules_the_next_attempt_in_the_same_step(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        record.history.append(attempt("p1", 1))
        before_ms = await env.redis_now_ms()
        # a long delay: the member is still there when the test reads it
        assert await env.store.move_on(record, token, status=JobStatus.QUEUED, partner="p2", attempt=2,
                                       delay_s=600.0)
        after_ms = await env.redis_now_ms()
        member = delayed_member(record.id, "p2", 2)
        assert parse_delayed_member(member) == (record.id, "p2", 2)
        score = await env.redis.zscore(keys.DELAYED, member)
        assert score is not None
        assert before_ms + 600_000 <= score <= after_ms + 600_000
        assert await env.redis.lrange(keys.DELAYED_WAKE, 0, -1) == ["1"]  # movers are woken
        raw = await env.raw(record.id)
        assert (raw["status"], raw["partner"], raw["attempt"]) == ("queued", "p2", "2")
        assert raw["requested_partner"] == "p1"
        loaded = await env.store.get(record.id)
        assert loaded is not None and [a.partner for a in loaded.history] == ["p1"]
        # the old run's token is spent; only the new attempt can be claimed
        assert not await env.store.publish_success(record, token, "late", Usage(), "p1")
        assert (await env.store.begin_run(record.id, "p1", 1))[0] == "stale"
        assert (await env.store.begin_run(record.id, "p2", 2))[0] == "ok"

    run_store(scenario)


def test_move_on_to_retry_keeps_the_partner(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        assert await env.store.move_on(record, token, status=JobStatus.RETRYING, partner="p1", attempt=2,
                                       delay_s=900.0)
        raw = await env.raw(record.id)
        assert (raw["status"], raw["partner"], raw["attempt"]) == ("retrying", "p1", "2")
        assert await env.redis.zscore(keys.DELAYED, delayed_member(record.id, "p1", 2)) is not None

    run_store(scenario)


def test_move_on_with_a_lost_token_writes_nothing(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, _ = await env.claimed()
        before = await env.raw(record.id)
        assert not await env.store.move_on(record, "not-the-token", status=JobStatus.QUEUED, partner="p2",
                                           attempt=2, delay_s=600.0)
        assert await env.raw(record.id) == before
        assert await env.redis.zscore(keys.DELAYED, delayed_member(record.id, "p2", 2)) is None

    run_store(scenario)


# --- finish_unsuccessful ------------------------------------------------------------------------------------------


def test_dead_letter_adds_to_the_dead_letter_set(run_store: Runner) -> None:
    async def scenario(env: StoreEnv) -> None:
        record, token = await env.claimed()
        record.history.extend([attempt("p1", 1), attempt("p2", 2, outcome="fatal")])
        before_ms = await env.redis_now_ms()
        assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "chain exhausted")
        after_ms = await env.redis_now_ms()
        score = await env.redis.zscore(keys.DEAD_LETTERS, record.id)
        assert score is not None and before_ms <= score <= after_ms
        loaded = await env.store.get(record.id)
        assert loaded is not None
        assert loaded.status is JobStatus.DEAD_LETTERED
        assert loaded.error == "chain exhausted"
        assert loaded.finished_at is not None
        assert [(a.partner, a.outcome) for a in loaded.history] == [("p1", "retryable"), ("p2", "fatal")]
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S

    run_store(scenario)
