"""The retention sweep (gateway_core.jobs.retention) leases the jobs it takes and the deletion takes them out of the
retention set, so a sweeper that dies between the two leaves the payload to another sweep rather than to the
record's expiry; a job whose record is gone is never re-created. Against a real redis-server, on this test's own
database; due times are set in the past rather than waited for."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs.models import JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.retention import drop_expired_payloads
from gateway_core.jobs.store import PAYLOAD_FIELDS, JobRecord, JobStore
from tests.helpers import with_redis


async def _succeeded_with_retention(store: JobStore) -> str:
    record = JobRecord(id=new_job_id(), tenant="t", partner="p", requested_partner="p", status=JobStatus.QUEUED,
                       attempt=1, created_at=now(), messages=[Message(role="user", content="secret prompt")])
    await store.create(record)
    _, token, _ = await store.begin_run(record.id, "p", 1)
    assert await store.publish_success(record, token, "the answer", Usage(), "p", retention_s=600)
    await store.redis.zadd(keys.RETENTION, {record.id: 1})  # due long ago
    return record.id


def test_a_sweeper_that_dies_after_taking_a_job_leaves_it_to_the_next_sweep(redis_url: str) -> None:
    async def scenario(client: Any) -> None:
        store = JobStore(client, PayloadCipher([Fernet.generate_key()]), 3600)
        job_id = await _succeeded_with_retention(store)
        claim = client.register_script(script("retention_claim_due"))
        assert await claim(keys=[keys.RETENTION], args=[10, 60_000]) == [job_id]  # ...and the sweeper dies here
        seconds, _ = await client.time()
        leased = await client.zscore(keys.RETENTION, job_id)
        assert leased is not None and leased > int(seconds) * 1000  # still there, leased, not due for anyone now
        assert await drop_expired_payloads(store) == 0
        assert (await client.hgetall(keys.job(job_id)))["messages"]
        await client.zadd(keys.RETENTION, {job_id: 1})  # the lease ran out
        assert await drop_expired_payloads(store) == 1
        stored = await client.hgetall(keys.job(job_id))
        assert stored["payload_retained"] == "0" and not set(PAYLOAD_FIELDS) & set(stored)
        assert await client.zscore(keys.RETENTION, job_id) is None

    with_redis(redis_url, scenario)


def test_a_due_job_whose_record_is_gone_is_not_recreated(redis_url: str) -> None:
    async def scenario(client: Any) -> None:
        store = JobStore(client, PayloadCipher([Fernet.generate_key()]), 3600)
        gone = new_job_id()
        await client.zadd(keys.RETENTION, {gone: 1})
        assert await drop_expired_payloads(store) == 1
        assert await client.exists(keys.job(gone)) == 0
        assert await client.zcard(keys.RETENTION) == 0

    with_redis(redis_url, scenario)
