"""The dead-letter queue operations against a real redis-server (a database of each test's own): list, show, replay,
purge."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.errors import RequestError
from gateway_core.fleet import keys
from gateway_core.jobs.dlq import (
    DeadLetterNotFound,
    DeadLetters,
    NotDeadLettered,
    PartnerNotAllowed,
    UnknownPartner,
)
from gateway_core.jobs.models import Attempt, JobStatus, Message, new_job_id, now
from gateway_core.jobs.store import JobRecord, JobStore, delayed_member
from tests.helpers import run_async_scenario
from tests.integration.test_store import StoreEnv

T = TypeVar("T")
TTL_S = 3600
PROMPT = "Private: patient Jane Roe, card 4111 1111 1111 1111"

CONFIG = GatewayConfig.model_validate(
    {
        "partners": {
            name: {"name": name, "adapter": "openai", "base_url": f"http://{name}.example/v1", "model": "m",
                   "fallback": fallback, "prices": {"m": {"input_per_million_usd": 1, "output_per_million_usd": 2}}}
            for name, fallback in {"p1": ["p2"], "p2": [], "p3": []}.items()
        },
        "tenants": {
            "restricted": {"name": "restricted", "api_key": "k1", "partners": ["p1", "p2"]},
            "capped": {"name": "capped", "api_key": "k2", "budgets": {"daily_usd": 1.0}},
        },
    }
)


class DlqEnv(StoreEnv):
    def __init__(self, client: aioredis.Redis, store: JobStore) -> None:
        super().__init__(client, store)
        self.dlq = DeadLetters(client, store, CONFIG)
        self.tenant = "t-" + secrets.token_hex(4)  # the tenant of the test's dead letters unless it names another

    async def dead_letter(self, *, tenant: str | None = None, requested: str = "p1",
                          tried: tuple[str, ...] = ("p1", "p2"), score_ms: int | None = None) -> JobRecord:
        """A job that went through the real store path to the dead-letter set, one fatal call per partner."""
        record = JobRecord(
            id=new_job_id(), tenant=tenant or self.tenant, partner=requested, requested_partner=requested,
            status=JobStatus.QUEUED, attempt=1, created_at=now(),
            messages=[Message(role="user", content=PROMPT)], metadata={"ref": "order-17"},
        )
        await self.store.create(record)
        attempt = 1
        for i, partner in enumerate(tried):
            word, token, raw = await self.store.begin_run(record.id, partner, attempt)
            assert word == "ok"
            loaded = self.store.decode(record.id, raw, with_payload=True)
            loaded.history.append(Attempt(partner=partner, attempt=attempt, outcome="fatal", status_code=400,
                                          error="HTTP 400: bad request", started_at=now(), duration_ms=3.0))
            if i < len(tried) - 1:
                attempt += 1
                assert await self.store.move_on(loaded, token, status=JobStatus.QUEUED, partner=tried[i + 1],
                                                attempt=attempt, delay_s=600)
                await self.redis.zrem(keys.DELAYED, delayed_member(record.id, tried[i + 1], attempt))
            else:
                assert await self.store.finish_unsuccessful(loaded, token, JobStatus.DEAD_LETTERED,
                                                            f"{partner}: fatal error; no fallback left")
        if score_ms is not None:
            await self.redis.zadd(keys.DEAD_LETTERS, {record.id: score_ms})
        got = await self.store.get(record.id)
        assert got is not None
        return got



Runner = Callable[[Callable[[DlqEnv], Awaitable[Any]]], Any]


@pytest.fixture()
def run_dlq(redis_url: str) -> Callable[[Callable[[DlqEnv], Awaitable[T]]], T]:
    cipher = PayloadCipher([Fernet.generate_key()])

    def run(scenario: Callable[[DlqEnv], Awaitable[T]]) -> T:
        def make_env(client: aioredis.Redis) -> DlqEnv:
            return DlqEnv(client, JobStore(client, cipher, TTL_S))

        return run_async_scenario(redis_url, make_env, scenario)  # type: ignore[no-any-return]

    return run


# --- list ---------------------------------------------------------------------------------------------------------


def test_list_shows_summaries_newest_first_without_payload(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        base = await env.redis_now_ms()
        older = await env.dead_letter(score_ms=base - 2000)
        newer = await env.dead_letter(score_ms=base - 1000)
        page = await env.dlq.list(tenant=env.tenant)
        assert [i.id for i in page.items] == [newer.id, older.id]
        assert page.next_offset is None and page.total == 2
        item = page.items[1]
        assert (item.tenant, item.requested_partner, item.last_partner) == (env.tenant, "p1", "p2")
        assert item.attempts == 2 and item.last_status_code == 400
        assert item.error == "p2: fatal error; no fallback left"
        assert item.dead_lettered_at == pytest.approx((base - 2000) / 1000)
        dumped = page.model_dump_json()
        assert "Jane" not in dumped and "4111 1111" not in dumped and "messages" not in dumped

    run_dlq(scenario)


def test_list_pages_and_filters(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        base = await env.redis_now_ms()
        jobs = [await env.dead_letter(score_ms=base - 10_000 + i) for i in range(5)]
        direct = await env.dead_letter(requested="p3", tried=("p3",), score_ms=base - 20_000)
        newest_first = [j.id for j in reversed(jobs)] + [direct.id]
        first = await env.dlq.list(limit=2, tenant=env.tenant)
        assert [i.id for i in first.items] == newest_first[:2] and first.next_offset == 2
        second = await env.dlq.list(limit=2, offset=2, tenant=env.tenant)
        assert [i.id for i in second.items] == newest_first[2:4] and second.next_offset == 4
        last = await env.dlq.list(limit=2, offset=4, tenant=env.tenant)
        assert [i.id for i in last.items] == newest_first[4:] and last.next_offset is None
        # partner matches the requested or the last partner
        assert [i.id for i in (await env.dlq.list(partner="p3", tenant=env.tenant)).items] == [direct.id]
        assert len((await env.dlq.list(partner="p2", tenant=env.tenant)).items) == 5
        assert (await env.dlq.list(partner="nobody", tenant=env.tenant)).items == []
        with pytest.raises(ValueError, match="limit"):
            await env.dlq.list(limit=0)

    run_dlq(scenario)


def test_list_drops_entries_whose_record_expired(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        kept = await env.dead_letter()
        gone = await env.dead_letter()
        await env.redis.delete(keys.job(gone.id))  # as if its TTL ran out
        page = await env.dlq.list(tenant=env.tenant)
        assert [i.id for i in page.items] == [kept.id]
        assert await env.redis.zscore(keys.DEAD_LETTERS, gone.id) is None
        assert await env.redis.zscore(keys.DEAD_LETTERS, kept.id) is not None

    run_dlq(scenario)


# --- show ---------------------------------------------------------------------------------------------------------


def test_show_has_the_full_history_and_no_payload(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        detail = await env.dlq.show(job.id)
        assert detail.status is JobStatus.DEAD_LETTERED
        assert [(a.partner, a.attempt, a.outcome, a.status_code) for a in detail.history] == [
            ("p1", 1, "fatal", 400), ("p2", 2, "fatal", 400)]
        assert (detail.requested_partner, detail.last_partner, detail.attempt, detail.attempts) == ("p1", "p2", 2, 2)
        assert detail.metadata == {"ref": "order-17"} and detail.dead_lettered_at is not None
        dumped = detail.model_dump_json()
        # no plaintext, no ciphertext
        assert "Jane" not in dumped and "4111 1111" not in dumped and "gAAAA" not in dumped

    run_dlq(scenario)


def test_show_refuses_missing_and_live_jobs(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        with pytest.raises(DeadLetterNotFound, match="no job"):
            await env.dlq.show(new_job_id())
        job = await env.dead_letter()
        await env.redis.hset(keys.job(job.id), "status", "succeeded")
        with pytest.raises(NotDeadLettered, match=r"status: succeeded"):
            await env.dlq.show(job.id)

    run_dlq(scenario)


# --- replay -------------------------------------------------------------------------------------------------------


def test_replay_requeues_the_same_job_through_the_delay_queue(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        await env.redis.expire(keys.job(job.id), 60)  # the record's clock is reset by a replay
        await env.redis.delete(keys.DELAYED_WAKE)
        before_ms = await env.redis_now_ms()
        result = await env.dlq.replay(job.id, "p3")
        after_ms = await env.redis_now_ms()
        assert (result.id, result.status, result.partner, result.attempt) == (job.id, JobStatus.QUEUED, "p3", 3)
        raw = await env.redis.hgetall(keys.job(job.id))
        assert (raw["status"], raw["partner"], raw["attempt"], raw["requested_partner"]) == ("queued", "p3", "3", "p1")
        for cleared in ("error", "finished_at", "run_token", "reservation"):
            assert cleared not in raw
        assert raw["messages"]  # the payload stays, still encrypted
        assert 60 < await env.redis.ttl(keys.job(job.id)) <= TTL_S
        assert await env.redis.zscore(keys.DEAD_LETTERS, job.id) is None
        score = await env.redis.zscore(keys.DELAYED, delayed_member(job.id, "p3", 3))
        assert score is not None and before_ms <= score <= after_ms  # due now
        assert await env.redis.lrange(keys.DELAYED_WAKE, 0, -1) == ["1"]
        loaded = await env.store.get(job.id)
        assert loaded is not None  # history kept, with a marker from which retries count afresh
        assert [(a.partner, a.outcome) for a in loaded.history][-1] == ("p3", "replayed")
        assert [a.partner for a in loaded.history][:2] == ["p1", "p2"]
        # a worker can claim exactly the new attempt, and gets the prompt back
        assert (await env.store.begin_run(job.id, "p2", 2))[0] == "stale"
        word, _, fields = await env.store.begin_run(job.id, "p3", 3)
        assert word == "ok"
        assert env.store.decode(job.id, fields, with_payload=True).messages[0].content == PROMPT

    run_dlq(scenario)


def test_replay_defaults_to_the_requested_partner(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        result = await env.dlq.replay(job.id)
        assert (result.partner, result.attempt) == ("p1", 3)
        assert await env.redis.zscore(keys.DELAYED, delayed_member(job.id, "p1", 3)) is not None

    run_dlq(scenario)


def test_replay_refuses_with_clear_errors_and_changes_nothing(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        before = await env.redis.hgetall(keys.job(job.id))
        with pytest.raises(UnknownPartner, match=r"unknown partner 'p9': replay to one of p1, p2, p3"):
            await env.dlq.replay(job.id, "p9")
        with pytest.raises(DeadLetterNotFound):
            await env.dlq.replay(new_job_id())
        restricted = await env.dead_letter(tenant="restricted")
        with pytest.raises(PartnerNotAllowed, match=r"tenant 'restricted' may not use partner 'p3'.*p1, p2"):
            await env.dlq.replay(restricted.id, "p3")
        assert await env.redis.hgetall(keys.job(job.id)) == before
        assert await env.redis.zscore(keys.DEAD_LETTERS, job.id) is not None
        assert await env.redis.zscore(keys.DEAD_LETTERS, restricted.id) is not None
        await env.dlq.replay(job.id)
        with pytest.raises(NotDeadLettered, match=r"not dead-lettered \(status: queued\).*already replayed"):
            await env.dlq.replay(job.id)

    run_dlq(scenario)


def test_replay_for_a_tenant_over_its_budget_is_refused_and_changes_nothing(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter(tenant="capped")
        before = await env.redis.hgetall(keys.job(job.id))
        spend_key = keys.usage("capped", datetime.now(UTC).strftime("%Y-%m-%d"))
        await env.redis.hset(spend_key, "p1:cost_nanousd", str(2 * 10**9))  # $2 of a $1 daily cap
        with pytest.raises(RequestError, match=r"tenant 'capped' has spent .* daily budget") as refused:
            await env.dlq.replay(job.id)
        assert (refused.value.status_code, refused.value.code) == (402, "budget_exceeded")
        assert await env.redis.hgetall(keys.job(job.id)) == before
        assert await env.redis.zscore(keys.DEAD_LETTERS, job.id) is not None
        await env.redis.delete(spend_key)  # the day's spending back under the cap
        assert (await env.dlq.replay(job.id)).status == JobStatus.QUEUED

    run_dlq(scenario)


def test_concurrent_replays_enqueue_exactly_once(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        results = await asyncio.gather(*(env.dlq.replay(job.id, "p2") for _ in range(10)), return_exceptions=True)
        assert len([r for r in results if not isinstance(r, Exception)]) == 1
        assert all(isinstance(r, NotDeadLettered) for r in results if isinstance(r, Exception))
        members = [m for m in await env.redis.zrange(keys.DELAYED, 0, -1) if m.startswith(job.id)]
        assert members == [delayed_member(job.id, "p2", 3)]

    run_dlq(scenario)


# --- purge and count ------------------------------------------------------------------------------------------------


def test_purge_one_deletes_the_record_and_the_entry(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        assert await env.dlq.count() == 1
        assert (await env.dlq.purge(job.id)).purged == 1
        assert not await env.redis.exists(keys.job(job.id))
        assert await env.redis.zscore(keys.DEAD_LETTERS, job.id) is None
        assert await env.dlq.count() == 0
        with pytest.raises(DeadLetterNotFound):
            await env.dlq.purge(job.id)

    run_dlq(scenario)


def test_purge_leaves_a_live_job_alone(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        job = await env.dead_letter()
        await env.dlq.replay(job.id)
        with pytest.raises(NotDeadLettered, match="status: queued"):
            await env.dlq.purge(job.id)
        assert await env.redis.hget(keys.job(job.id), "status") == "queued"

    run_dlq(scenario)


def test_purge_all_older_than_deletes_only_old_dead_letters(run_dlq: Runner) -> None:
    async def scenario(env: DlqEnv) -> None:
        # Scored in January 1970: a cutoff 10 s before now reaches these and not the recent one.
        old = [await env.dead_letter(score_ms=1000 + i) for i in range(3)]
        recent = await env.dead_letter()
        live = await env.dead_letter(score_ms=2000)
        await env.redis.hset(keys.job(live.id), "status", "queued")  # a stray entry for a job that moved on
        older_than_s = (await env.redis_now_ms()) / 1000 - 10
        assert await env.dlq.purge_all(older_than_s=older_than_s) == 3
        for job in old:
            assert not await env.redis.exists(keys.job(job.id))
            assert await env.redis.zscore(keys.DEAD_LETTERS, job.id) is None
        assert await env.redis.zscore(keys.DEAD_LETTERS, recent.id) is not None
        assert await env.redis.exists(keys.job(recent.id))
        assert await env.redis.zscore(keys.DEAD_LETTERS, live.id) is None  # stray entry gone...
        assert await env.redis.hget(keys.job(live.id), "status") == "queued"  # ...the live job kept
        with pytest.raises(ValueError, match="older_than_s"):
            await env.dlq.purge_all(older_than_s=-1)

    run_dlq(scenario)
