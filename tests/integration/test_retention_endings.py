"""A partner's `policy.retention_s` applies to every ending of a job (succeeded, dead-lettered, cancelled)
and to a finished batch's files; the retention drop never re-creates a record that is gone. Against a real
redis-server, on a database of each test's own."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.jobs.batches import BatchStore, batch_jobs_key, batch_key, file_key
from gateway_core.jobs.dlq import DeadLetters, PayloadRemoved
from gateway_core.jobs.models import Attempt, JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.store import PAYLOAD_FIELDS, JobRecord, JobStore, job_retention_s
from tests.helpers import run_async_scenario

TTL_S = 3600
CONFIG = GatewayConfig.model_validate({
    "partners": {
        name: {"adapter": "openai", "base_url": f"http://{name}.example/v1", "model": "m",
               **({"policy": {"retention_s": retention}} if retention is not None else {})}
        for name, retention in (("keeper", None), ("brief", 120), ("forgetful", 0))
    },
    "tenants": {"tenant-r": {"api_key": "key-r"}},
})


class Env:
    def __init__(self, client: aioredis.Redis, store: JobStore) -> None:
        self.redis = client
        self.store = store

    async def job(self, partner: str, *, batch_id: str | None = None, claim: bool = True) -> tuple[JobRecord, str]:
        record = JobRecord(
            id=new_job_id(), tenant="tenant-r", partner=partner, requested_partner=partner, status=JobStatus.QUEUED,
            attempt=1, created_at=now(), messages=[Message(role="user", content="my card is 4111 1111 1111 1111")],
            lane=keys.BATCH if batch_id else keys.INTERACTIVE,
        )
        await self.store.create(record)
        if batch_id is not None:
            await self.redis.hset(keys.job(record.id), mapping={"batch_id": batch_id, "custom_id": record.id,
                                                                "batch_model": "m"})
            await self.redis.rpush(batch_jobs_key(batch_id), record.id)
        if not claim:
            return record, ""
        word, token, _ = await self.store.begin_run(record.id, partner, 1)
        assert word == "ok"
        loaded = await self.store.get(record.id, with_payload=True)
        assert loaded is not None
        loaded.history.append(Attempt(partner=partner, attempt=1, outcome="fatal", started_at=now(), duration_ms=1))
        return loaded, token

    async def raw(self, job_id: str) -> dict[str, str]:
        return await self.redis.hgetall(keys.job(job_id))  # type: ignore[no-any-return]


Runner = Callable[[Callable[[Env], Awaitable[Any]]], Any]


@pytest.fixture()
def run_env(redis_url: str) -> Runner:
    cipher = PayloadCipher([Fernet.generate_key()])

    def run(scenario: Callable[[Env], Awaitable[Any]]) -> Any:
        return run_async_scenario(redis_url, lambda c: Env(c, JobStore(c, cipher, TTL_S)), scenario)

    return run


# --- which retention a job follows -------------------------------------------------------------------------------


def test_a_job_follows_the_shortest_retention_of_every_partner_it_was_meant_for_or_sent_to() -> None:
    record = JobRecord(id="job_x", tenant="tenant-r", partner="keeper", requested_partner="keeper",
                       status=JobStatus.RUNNING, attempt=1, created_at=0.0)
    assert job_retention_s(CONFIG, record) is None
    record.history.append(Attempt(partner="brief", attempt=1, outcome="fatal", started_at=0.0, duration_ms=1))
    assert job_retention_s(CONFIG, record) == 120  # its prompt went to `brief`, then fell back to `keeper`
    record.requested_partner = "forgetful"
    assert job_retention_s(CONFIG, record) == 0


# --- every ending -------------------------------------------------------------------------------------------------


def test_a_dead_letter_with_no_retention_loses_its_payload_at_once(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.job("forgetful")
        assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up", retention_s=0)
        raw = await env.raw(record.id)
        assert raw["status"] == "dead_lettered" and raw["payload_retained"] == "0" and raw["error"] == "gave up"
        assert not set(PAYLOAD_FIELDS) & set(raw)
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S
        assert await env.redis.zscore(keys.RETENTION, record.id) is None
        view = (await env.store.get(record.id))
        assert view is not None and view.view().payload_retained is False

    run_env(scenario)


def test_an_unsuccessful_ending_with_a_retention_schedules_the_deletion(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.job("brief")
        seconds, micros = await env.redis.time()
        before = int(seconds) * 1000 + int(micros) // 1000
        assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up", retention_s=120)
        raw = await env.raw(record.id)
        assert raw["messages"] and "payload_retained" not in raw
        score = await env.redis.zscore(keys.RETENTION, record.id)
        assert score is not None and before + 120_000 <= score <= before + 125_000
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is not None

    run_env(scenario)


def test_cancelling_applies_the_retention(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        queued, _ = await env.job("forgetful", claim=False)
        assert await env.store.cancel(queued.id, retention_s=0) == "queued"
        raw = await env.raw(queued.id)
        assert raw["status"] == "cancelled" and raw["payload_retained"] == "0"
        assert not set(PAYLOAD_FIELDS) & set(raw)

        running, _ = await env.job("brief")
        assert await env.store.cancel(running.id, retention_s=120) == "running"
        assert (await env.raw(running.id))["messages"]
        assert await env.redis.zscore(keys.RETENTION, running.id) is not None

        kept, _ = await env.job("keeper", claim=False)
        assert await env.store.cancel(kept.id) == "queued"
        assert (await env.raw(kept.id))["messages"] and await env.redis.zscore(keys.RETENTION, kept.id) is None

    run_env(scenario)


def test_cancelling_a_finished_job_changes_nothing(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.job("keeper")
        assert await env.store.publish_success(record, token, "the answer", Usage(), "keeper")
        assert await env.store.cancel(record.id, retention_s=0) == "succeeded"
        raw = await env.raw(record.id)
        assert raw["status"] == "succeeded" and raw["messages"] and raw["output"] and "payload_retained" not in raw

    run_env(scenario)


def test_a_dead_letter_whose_prompt_was_deleted_is_not_replayed(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.job("forgetful")
        assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up", retention_s=0)
        with pytest.raises(PayloadRemoved, match="retention"):
            await DeadLetters(env.redis, env.store, CONFIG).replay(record.id)
        raw = await env.raw(record.id)
        assert raw["status"] == "dead_lettered" and await env.redis.zscore(keys.DEAD_LETTERS, record.id) is not None

    run_env(scenario)


# --- the retention drop ---------------------------------------------------------------------------------------------


def test_the_drop_on_a_record_that_is_gone_does_not_recreate_it(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        job_id = new_job_id()
        assert await env.store.drop_payload(job_id) is False
        assert await env.redis.exists(keys.job(job_id)) == 0

    run_env(scenario)


def test_the_drop_removes_a_finished_jobs_payload_and_keeps_its_ttl(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.job("brief")
        assert await env.store.publish_success(record, token, "the answer", Usage(), "brief", retention_s=120,
                                               placeholder_map="{}")
        assert await env.store.drop_payload(record.id) is True
        raw = await env.raw(record.id)
        assert raw["status"] == "succeeded" and raw["payload_retained"] == "0" and raw["answered_by"] == "brief"
        assert not set(PAYLOAD_FIELDS) & set(raw)
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S

    run_env(scenario)


def test_the_drop_leaves_a_job_that_runs_again_alone(run_env: Runner) -> None:
    """A dead letter replayed before its retention ran out: its payload is needed for the new run, and its next
    ending schedules the retention again."""
    async def scenario(env: Env) -> None:
        record, _ = await env.job("brief")  # running
        assert await env.store.drop_payload(record.id) is False
        raw = await env.raw(record.id)
        assert raw["messages"] and "payload_retained" not in raw

    run_env(scenario)


# --- batch files ----------------------------------------------------------------------------------------------------


def _batches(env: Env) -> BatchStore:
    producer: Any = SimpleNamespace(config=CONFIG)  # all the retention needs of the producer: the config
    return BatchStore(env.store, producer)


async def _finished_batch(env: Env, outcomes: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """A batch whose jobs (partner, 'succeeded' | 'dead_lettered') have ended, read once (which finalises it);
    returns the input file id and the batch object."""
    batches = _batches(env)
    info = await batches.create_file("tenant-r", "in.jsonl", "batch", b'{"custom_id": "x"}\n')
    batch_id = "batch_" + new_job_id()
    await env.redis.hset(batch_key(batch_id), mapping={
        "tenant": "tenant-r", "status": "in_progress", "input_file_id": info.id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "created_at": repr(now()), "expires_at": repr(now() + 86400),
    })
    for partner, outcome in outcomes:
        record, token = await env.job(partner, batch_id=batch_id)
        retention = job_retention_s(CONFIG, record)
        if outcome == "succeeded":
            assert await env.store.publish_success(record, token, f"answer from {partner}", Usage(), partner,
                                                   retention_s=retention)
        else:
            assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up",
                                                       retention_s=retention)
    view = await batches.get_batch("tenant-r", batch_id)
    assert view is not None and view["status"] == "completed", view
    return info.id, view


def test_a_batch_with_a_retention_keeps_its_input_and_output_files_no_longer(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        input_id, view = await _finished_batch(env, [("keeper", "succeeded"), ("brief", "succeeded")])
        assert 0 < await env.redis.ttl(file_key(input_id)) <= 120
        assert 0 < await env.redis.ttl(file_key(view["output_file_id"])) <= 120
        content = await _batches(env).file_content("tenant-r", view["output_file_id"])
        assert content is not None and b"answer from brief" in content

    run_env(scenario)


def test_a_batch_with_a_partner_that_keeps_nothing_loses_its_input_at_the_end(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        input_id, view = await _finished_batch(env, [("keeper", "succeeded"), ("forgetful", "dead_lettered")])
        assert await env.redis.exists(file_key(input_id)) == 0
        # the output holds only `keeper`'s answer, which no retention limits
        output_ttl = await env.redis.ttl(file_key(view["output_file_id"]))
        assert TTL_S - 60 < output_ttl <= TTL_S
        errors = await _batches(env).file_content("tenant-r", view["error_file_id"])
        assert errors is not None and [json.loads(line)["error"]["code"] for line in errors.splitlines()] == [
            "dead_lettered"]

    run_env(scenario)


def test_a_batch_of_no_retention_keeps_its_files_for_their_ttl(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        input_id, view = await _finished_batch(env, [("keeper", "succeeded")])
        assert TTL_S - 60 < await env.redis.ttl(file_key(input_id)) <= TTL_S
        assert TTL_S - 60 < await env.redis.ttl(file_key(view["output_file_id"])) <= TTL_S

    run_env(scenario)


def test_cancelling_a_batch_applies_each_jobs_retention(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        batches = _batches(env)
        batch_id = "batch_" + new_job_id()
        await env.redis.hset(batch_key(batch_id), mapping={"tenant": "tenant-r", "status": "in_progress",
                                                           "created_at": repr(now()), "expires_at": repr(now() + 60)})
        forgetful, _ = await env.job("forgetful", batch_id=batch_id, claim=False)
        keeper, _ = await env.job("keeper", batch_id=batch_id, claim=False)
        await batches.cancel_batch("tenant-r", batch_id)
        gone, kept = await env.raw(forgetful.id), await env.raw(keeper.id)
        assert gone["status"] == kept["status"] == "cancelled"
        assert gone["payload_retained"] == "0" and "messages" not in gone
        assert kept["messages"] and "payload_retained" not in kept

    run_env(scenario)
