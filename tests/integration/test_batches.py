"""Batch input validation and bulk enqueue against a real redis-server, on a database of each test's own."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.config import GatewayConfig, PartnerConfig, TenantConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.errors import RequestError
from gateway_core.fleet import keys
from gateway_core.jobs.batches import (
    BatchStore,
    batch_jobs_key,
    file_key,
    parse_input,
)
from gateway_core.jobs.store import JobStore, delayed_member
from gateway_core.jobs.submission import JobProducer
from gateway_core.settings import Settings
from workers.celery_app import make_celery
from workers.enqueue import CeleryEnqueuer

T = TypeVar("T")
PARTNER = "unit-batch-partner"  # no worker consumes the test's database, so nothing scheduled is ever called


def line(custom_id: str, model: str = PARTNER, content: str = "hello", **extra: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


class Env:
    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self.config = GatewayConfig(
            partners={PARTNER: PartnerConfig(name=PARTNER, adapter="openai", base_url="http://127.0.0.1:9/v1",
                                             model="m")},
            tenants={"unit-tenant": TenantConfig(name="unit-tenant", api_key="unit-key"),
                     "limited": TenantConfig(name="limited", api_key="limited-key", partners=[])},
            routes={"alias-model": PARTNER},
        )
        settings = Settings(redis_url=url, max_prompt_chars=1000)
        self.store = JobStore(self.redis, PayloadCipher([Fernet.generate_key()]), 3600)
        self.producer = JobProducer(self.store, self.config, settings, CeleryEnqueuer(make_celery(settings)))
        self.batches = BatchStore(self.store, self.producer, max_file_bytes=100_000)
        self.tenant = self.config.tenants["unit-tenant"]

    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        return self.loop.run_until_complete(factory())


@pytest.fixture()
def env(redis_url: str) -> Iterator[Env]:
    environment = Env(redis_url)
    yield environment
    environment.run(environment.redis.aclose)
    environment.loop.close()


def test_valid_lines_become_submissions(env: Env) -> None:
    text = "\n".join([line("a"), "", line("b", model="alias-model", max_tokens=5), line("c", model="nope")]) + "\n"
    parsed = parse_input(text, tenant=env.tenant, producer=env.producer)
    assert parsed.errors == []
    assert [(entry.line, entry.custom_id) for entry in parsed.lines] == [(1, "a"), (3, "b"), (4, "c")]
    assert parsed.lines[1].submission is not None and parsed.lines[1].submission.partner == PARTNER
    assert parsed.lines[1].submission.max_tokens == 5
    # An unknown model is that request's error (error file), not the batch's.
    assert parsed.lines[2].submission is None and parsed.lines[2].reject_code == "model_not_found"
    assert parsed.lines[2].reject_status == 404


def test_structural_errors_name_their_line(env: Env) -> None:
    bad = [
        line("a"),
        '{"custom_id": "b", "method": "POST", ',  # malformed JSON
        line("a"),  # duplicate custom_id
        json.dumps({"custom_id": "d", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
        json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {}}),
        json.dumps({"custom_id": "f", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": PARTNER, "messages": []}}),
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
        "[1, 2]",
    ]
    parsed = parse_input("\n".join(bad), tenant=env.tenant, producer=env.producer)
    assert [(e.line, e.code) for e in parsed.errors] == [
        (2, "invalid_json"), (3, "duplicate_custom_id"), (4, "invalid_method"), (5, "mismatched_url"),
        (6, "invalid_body"), (7, "invalid_custom_id"), (8, "invalid_request"),
    ]
    assert "line 1" in parsed.errors[1].message and "body.messages" in parsed.errors[4].message


def test_policy_refusals_are_per_request(env: Env) -> None:
    limited = env.config.tenants["limited"]
    parsed = parse_input(line("a") + "\n" + line("b", content="x" * 2000), tenant=limited, producer=env.producer)
    assert parsed.errors == []
    assert [entry.reject_code for entry in parsed.lines] == ["partner_not_allowed", "partner_not_allowed"]
    parsed = parse_input(line("b", content="x" * 2000), tenant=env.tenant, producer=env.producer)
    assert parsed.lines[0].reject_code == "prompt_too_large" and parsed.lines[0].reject_status == 413


def test_empty_and_oversized_input(env: Env) -> None:
    assert [e.code for e in parse_input("\n\n", tenant=env.tenant, producer=env.producer).errors] == ["empty_file"]
    parsed = parse_input("\n".join(line(str(i)) for i in range(4)), tenant=env.tenant, producer=env.producer,
                         max_requests=3)
    assert [(e.line, e.code) for e in parsed.errors] == [(4, "too_many_requests")]


def test_files_refuse_a_bad_purpose_or_size_and_are_encrypted(env: Env) -> None:
    with pytest.raises(RequestError) as bad_purpose:
        env.run(lambda: env.batches.create_file("unit-tenant", "in.jsonl", "assistants", b"{}"))
    assert bad_purpose.value.status_code == 400
    with pytest.raises(RequestError) as too_big:
        env.run(lambda: env.batches.create_file("unit-tenant", "in.jsonl", "batch", b"x" * 100_001))
    assert too_big.value.status_code == 413 and too_big.value.code == "file_too_large"
    info = env.run(lambda: env.batches.create_file("unit-tenant", "in.jsonl", "batch", line("secret-id").encode()))
    stored = env.run(lambda: env.redis.hget(file_key(info.id), "content"))
    assert stored is not None and "secret-id" not in stored and "hello" not in stored
    assert env.run(lambda: env.batches.file_content("unit-tenant", info.id)) == line("secret-id").encode()
    assert env.run(lambda: env.batches.file_content("someone-else", info.id)) is None
    assert env.run(lambda: env.batches.get_file("someone-else", info.id)) is None


def test_a_bad_line_fails_the_batch_and_enqueues_nothing(env: Env) -> None:
    text = "\n".join([line("a"), line("b"), line("a")])
    info = env.run(lambda: env.batches.create_file("unit-tenant", "in.jsonl", "batch", text.encode()))
    batch = env.run(lambda: env.batches.create_batch(env.tenant, info.id, "/v1/chat/completions", "24h"))
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["line"] == 3
    assert batch["errors"]["data"][0]["code"] == "duplicate_custom_id"
    assert env.run(lambda: env.redis.llen(batch_jobs_key(batch["id"]))) == 0
    assert env.run(lambda: env.redis.zcard(keys.delayed(keys.BATCH))) == 0


def test_bulk_enqueue_of_50000_lines(env: Env) -> None:
    count = 50_000
    text = "\n".join(line(f"req-{i}", content=f"prompt {i}") for i in range(count)) + "\n"
    started = time.perf_counter()
    parsed = parse_input(text, tenant=env.tenant, producer=env.producer)
    parse_s = time.perf_counter() - started
    assert parsed.errors == [] and len(parsed.lines) == count
    batch_id = "batch_unit_bulk"
    started = time.perf_counter()
    job_ids = env.run(lambda: env.batches.enqueue(batch_id, env.tenant.name, parsed.lines))
    enqueue_s = time.perf_counter() - started
    print(f"\n50,000 lines: parse+validate {parse_s:.2f}s, encode+write+schedule {enqueue_s:.2f}s")
    assert len(job_ids) == count == len(set(job_ids))
    assert env.run(lambda: env.redis.lrange(batch_jobs_key(batch_id), 0, -1)) == job_ids

    async def check() -> tuple[list[Any], list[Any]]:
        fields: list[Any] = []
        scores: list[Any] = []
        async with env.redis.pipeline(transaction=False) as pipe:
            for start in range(0, count, 1000):
                part = job_ids[start:start + 1000]
                for job_id in part:
                    pipe.hmget(keys.job(job_id), ["status", "partner", "batch_id", "custom_id", "tenant"])
                pipe.zmscore(keys.delayed(keys.BATCH), [delayed_member(j, PARTNER, 1) for j in part])
                replies = await pipe.execute()
                fields.extend(replies[:-1])
                scores.extend(replies[-1])
        return fields, scores

    fields, scores = env.run(check)
    assert all(f[0] == "queued" and f[1] == PARTNER and f[2] == batch_id and f[4] == "unit-tenant"
               for f in fields)
    assert [f[3] for f in fields] == [f"req-{i}" for i in range(count)]
    assert len(scores) == count and all(s is not None and s <= (time.time() + 1) * 1000 for s in scores)
    assert 0 < env.run(lambda: env.redis.ttl(keys.job(job_ids[-1]))) <= 3600
    record = env.run(lambda: env.store.get(job_ids[7], with_payload=True))
    assert record is not None and record.messages[0].content == "prompt 7" and record.status.value == "queued"


def test_progress_comes_from_counters_each_job_bumps_as_it_settles(env: Env) -> None:
    """Succeeded, dead-lettered, cancelled and replayed jobs move the batch's counters in the step that settles
    them, so reading progress does not touch every job."""
    from gateway_core.jobs.dlq import DeadLetters
    from gateway_core.jobs.models import JobStatus, Usage

    text = "\n".join(line(f"c{i}") for i in range(4)) + "\n"
    info = env.run(lambda: env.batches.create_file(env.tenant.name, "in.jsonl", "batch", text.encode()))
    batch = env.run(lambda: env.batches.create_batch(env.tenant, info.id, "/v1/chat/completions", "24h"))
    batch_id = batch["id"]
    ok, dead, cancelled, pending = env.run(lambda: env.redis.lrange(batch_jobs_key(batch_id), 0, -1))

    async def settle(job_id: str, outcome: str) -> None:
        claim, token, _ = await env.store.begin_run(job_id, PARTNER, 1)
        assert claim == "ok"
        record = await env.store.get(job_id, with_payload=True)
        assert record is not None
        if outcome == "succeeded":
            assert await env.store.publish_success(record, token, "out", Usage(), PARTNER)
        else:
            assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up")

    def counts() -> dict[str, int]:
        view = env.run(lambda: env.batches.get_batch(env.tenant.name, batch_id))
        assert view is not None
        return view["request_counts"]  # type: ignore[no-any-return]

    env.run(lambda: settle(ok, "succeeded"))
    env.run(lambda: settle(dead, "dead_lettered"))
    env.run(lambda: env.store.cancel(cancelled))
    env.run(lambda: env.store.cancel(cancelled))  # a second cancel of a finished job counts nothing
    assert counts() == {"total": 4, "completed": 1, "failed": 2}
    dlq = DeadLetters(env.redis, env.store, env.config)
    env.run(lambda: dlq.replay(dead))
    assert counts() == {"total": 4, "completed": 1, "failed": 1}
    env.run(lambda: env.store.cancel(pending))
    env.run(lambda: env.redis.zrem(keys.DEAD_LETTERS, dead))
    env.run(lambda: env.store.cancel(dead))
    final = env.run(lambda: env.batches.get_batch(env.tenant.name, batch_id))
    assert final is not None and final["status"] == "completed"
    assert final["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
