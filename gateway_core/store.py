"""The Redis job store: one hash per job, encrypted payloads, atomic state changes guarded by a run token."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from gateway_core import keys
from gateway_core.crypto import PayloadCipher
from gateway_core.models import Attempt, JobStatus, JobView, Message, Usage, now

# Claim a job for one run. Returns a status word (only "ok" and "redelivered" let the caller proceed) and,
# when claimed, the job's fields, so a run costs one round trip to start.
# A job of a batch counts its terminal outcome in the batch's hash, in the same step that settles it, so a batch's
# progress is two counters to read rather than one status per job. The batch hash is never re-created once gone.
BATCH_COUNTER_LUA = """
local function count_in_batch(job_key, field, by)
  local batch = redis.call('HGET', job_key, 'batch_id')
  if batch and redis.call('EXISTS', '@BATCH@' .. batch) == 1 then
    redis.call('HINCRBY', '@BATCH@' .. batch, field, by)
  end
end
""".replace("@BATCH@", f"{keys.PREFIX}:batch:")

_BEGIN_RUN = """
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'dead_lettered' or status == 'cancelled' then
  return 'done'
end
if redis.call('HGET', key, 'partner') ~= ARGV[1] or redis.call('HGET', key, 'attempt') ~= ARGV[2] then
  return 'stale'
end
local word = 'ok'
if status == 'running' then word = 'redelivered' end
redis.call('HSET', key, 'status', 'running', 'run_token', ARGV[3])
if not redis.call('HGET', key, 'started_at') then redis.call('HSET', key, 'started_at', ARGV[4]) end
return {word, redis.call('HGETALL', key)}
"""

# Settle a run: write fields only if the caller still holds the run (no zombie run publishes after a
# takeover), and in the same step schedule the next attempt, dead-letter, or announce completion.
# KEYS: job, delayed, wake, dead_letters, done_channel
# ARGV: token, next_member|'', delay_ms, dead_letter('1'|''), terminal('1'|''), ttl_s, job_id, done_message,
#       fields_to_delete (space-separated), retention_due_ms|'', field, value, ...
_SETTLE = BATCH_COUNTER_LUA + """
local key = KEYS[1]
if redis.call('HGET', key, 'run_token') ~= ARGV[1] or redis.call('HGET', key, 'status') ~= 'running' then
  return 0
end
for i = 11, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
for name in string.gmatch(ARGV[9], '%S+') do redis.call('HDEL', key, name) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[2])
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 0)
end
if ARGV[4] == '1' then redis.call('ZADD', KEYS[4], now_ms, ARGV[7]) end
if ARGV[5] == '1' then
  redis.call('EXPIRE', key, tonumber(ARGV[6]))
  redis.call('PUBLISH', KEYS[5], ARGV[8])
  if ARGV[10] ~= '' then redis.call('ZADD', KEYS[6], now_ms + tonumber(ARGV[10]), ARGV[7]) end
  count_in_batch(key, redis.call('HGET', key, 'status') == 'succeeded' and 'n_succeeded' or 'n_unsuccessful', 1)
end
return 1
"""


# Give a claimed job back before its call (a stopping worker): queued again, so the next run is a first run.
# KEYS: job   ARGV: token
_RELEASE_CLAIM = """
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'run_token')
return 1
"""

# Cancel a job that has not finished. A run in flight loses its claim: its result is discarded when it settles.
# KEYS: job, done_channel, batch_done_channel   ARGV: finished_at, ttl_s, job_id
# Returns the status before ('' if missing).
_CANCEL = BATCH_COUNTER_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status == 'succeeded' or status == 'failed' or status == 'dead_lettered' or status == 'cancelled' then
  return status
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'error', 'cancelled by the client')
redis.call('HDEL', KEYS[1], 'run_token', 'reservation')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if redis.call('HGET', KEYS[1], 'lane') == 'batch' then
  redis.call('PUBLISH', KEYS[3], ARGV[3])
else
  redis.call('PUBLISH', KEYS[2], ARGV[3])
end
count_in_batch(KEYS[1], 'n_unsuccessful', 1)
return status
"""


@dataclass
class JobRecord:
    id: str
    tenant: str
    partner: str  # the partner this attempt targets (changes on fallback)
    requested_partner: str
    status: JobStatus
    attempt: int
    created_at: float
    messages: list[Message] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    history: list[Attempt] = field(default_factory=list)
    output: str | None = None
    parsed: Any = None
    usage: Usage | None = None
    cost_nanousd: int | None = None  # every call of this job so far, where priced (gateway_core.metering)
    error: str | None = None
    answered_by: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    run_token: str | None = None
    reservation: str | None = None  # "partner:attempt" that already holds budget
    webhook_url: str | None = None
    payload_retained: bool = True
    lane: str = keys.INTERACTIVE

    def view(self) -> JobView:
        audit: dict[str, dict[str, int]] = {}
        for attempt in self.history:
            if attempt.redactions is not None:
                audit[attempt.partner] = dict(attempt.redactions)
        timings: dict[str, float] = {}
        if self.started_at:
            timings["queue_wait_ms"] = round((self.started_at - self.created_at) * 1000, 3)
        if self.finished_at:
            timings["total_ms"] = round((self.finished_at - self.created_at) * 1000, 3)
        return JobView(
            id=self.id,
            status=self.status,
            partner=self.requested_partner,
            answered_by=self.answered_by,
            attempts=len([a for a in self.history if a.outcome != "redelivered"]),
            output=self.output,
            parsed=self.parsed,
            contract=self.params.get("contract"),
            usage=self.usage,
            cost_usd=None if self.cost_nanousd is None else round(self.cost_nanousd / 1e9, 9),
            error=self.error,
            history=self.history,
            redaction_audit=audit,
            payload_retained=self.payload_retained,
            metadata=self.metadata,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            timings_ms=timings,
        )


class JobStore:
    def __init__(self, client: aioredis.Redis, cipher: PayloadCipher, ttl_s: int) -> None:
        self.redis = client
        self.cipher = cipher
        self.ttl_s = ttl_s
        self._begin_run = client.register_script(_BEGIN_RUN)
        self._settle_script = client.register_script(_SETTLE)
        self._cancel = client.register_script(_CANCEL)
        self._release_claim = client.register_script(_RELEASE_CLAIM)

    def encode_new(self, record: JobRecord) -> dict[str, str]:
        """The hash for a new job; prompts are encrypted before they reach Redis."""
        return {
            "tenant": record.tenant,
            "partner": record.partner,
            "requested_partner": record.requested_partner,
            "status": record.status.value,
            "attempt": str(record.attempt),
            "created_at": repr(record.created_at),
            "messages": self.cipher.encrypt(
                json.dumps([m.model_dump() for m in record.messages])
            ).decode(),
            "params": json.dumps(record.params),
            "metadata": json.dumps(record.metadata),
            "history": "[]",
            **({"webhook_url": self.cipher.encrypt(record.webhook_url).decode()} if record.webhook_url else {}),
            **({"lane": record.lane} if record.lane != keys.INTERACTIVE else {}),
        }

    async def create(self, record: JobRecord) -> None:
        key = keys.job(record.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(self.encode_new(record)))  # type: ignore[arg-type]
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def delete(self, job_id: str) -> None:
        await self.redis.delete(keys.job(job_id))

    async def get(self, job_id: str, *, with_payload: bool = False) -> JobRecord | None:
        raw: dict[str, str] = await self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        if not raw or "status" not in raw:
            return None
        return self.decode(job_id, raw, with_payload=with_payload)

    def decode(self, job_id: str, raw: dict[str, str], *, with_payload: bool) -> JobRecord:
        record = JobRecord(
            id=job_id,
            tenant=raw["tenant"],
            partner=raw["partner"],
            requested_partner=raw.get("requested_partner", raw["partner"]),
            status=JobStatus(raw["status"]),
            attempt=int(raw["attempt"]),
            created_at=float(raw["created_at"]),
            params=json.loads(raw.get("params", "{}")),
            metadata=json.loads(raw.get("metadata", "{}")),
            history=[Attempt.model_validate(a) for a in json.loads(raw.get("history", "[]"))],
            error=raw.get("error"),
            answered_by=raw.get("answered_by"),
            started_at=float(raw["started_at"]) if raw.get("started_at") else None,
            finished_at=float(raw["finished_at"]) if raw.get("finished_at") else None,
            run_token=raw.get("run_token"),
            reservation=raw.get("reservation") or None,
            payload_retained=raw.get("payload_retained", "1") != "0",
            lane=raw.get("lane") or keys.INTERACTIVE,
            cost_nanousd=int(raw["cost_nanousd"]) if raw.get("cost_nanousd") else None,
        )
        if raw.get("usage"):
            record.usage = Usage.model_validate_json(raw["usage"])
        if with_payload and raw.get("messages"):
            decoded = json.loads(self.cipher.decrypt(raw["messages"].encode()))
            record.messages = [Message.model_validate(m) for m in decoded]
        if raw.get("output"):
            record.output = self.cipher.decrypt(raw["output"].encode())
        if raw.get("webhook_url"):
            record.webhook_url = self.cipher.decrypt(raw["webhook_url"].encode())
        if raw.get("parsed"):
            record.parsed = json.loads(self.cipher.decrypt(raw["parsed"].encode()))
        return record

    async def begin_run(self, job_id: str, partner: str, attempt: int) -> tuple[str, str, dict[str, str]]:
        """Claim the job for this attempt: (word, run token, raw fields when claimed)."""
        token = secrets.token_hex(8)
        reply = await self._begin_run(keys=[keys.job(job_id)], args=[partner, str(attempt), token, repr(now())])
        if not isinstance(reply, list):
            return str(reply), token, {}
        flat = reply[1]
        return str(reply[0]), token, dict(zip(flat[::2], flat[1::2], strict=True))

    async def holds_claim(self, job_id: str, token: str) -> bool:
        """Whether the run holding `token` still owns the job (not taken over, cancelled or finished)."""
        run_token, status = await self.redis.hmget(keys.job(job_id), ["run_token", "status"])  # type: ignore[misc]
        return bool(run_token == token and status == "running")

    async def release_claim(self, job_id: str, token: str) -> bool:
        """Undo begin_run for a run that made no call: the job is queued again (False if the claim was lost)."""
        return bool(await self._release_claim(keys=[keys.job(job_id)], args=[token]))

    async def _settle(
        self,
        record: JobRecord,
        token: str,
        fields: dict[str, str],
        *,
        next_member: str = "",
        delay_ms: int = 0,
        dead_letter: bool = False,
        terminal: bool = False,
        done_message: str = "",
        delete_fields: tuple[str, ...] = (),
        retention_ms: int | None = None,
    ) -> bool:
        args: list[str] = [
            token,
            next_member,
            str(delay_ms),
            "1" if dead_letter else "",
            "1" if terminal else "",
            str(self.ttl_s),
            record.id,
            done_message or record.id,
            " ".join(delete_fields),
            "" if retention_ms is None else str(retention_ms),
        ]
        fields = {**fields, "history": _history_json(record.history)}
        if record.cost_nanousd is not None:
            fields["cost_nanousd"] = str(record.cost_nanousd)
        for name, value in fields.items():
            args.extend((name, value))
        done = await self._settle_script(
            keys=[keys.job(record.id), keys.delayed(record.lane), keys.delayed_wake(record.lane), keys.DEAD_LETTERS,
                  keys.done_channel(record.lane), keys.RETENTION],
            args=args,
        )
        return bool(done)

    async def publish_success(
        self,
        record: JobRecord,
        token: str,
        output: str,
        usage: Usage,
        answered_by: str,
        *,
        placeholder_map: str | None = None,
        retention_s: int | None = None,
        parsed: Any = None,
    ) -> bool:
        """Publish the result. With retention 0 the payload is deleted now and the encrypted output travels only
        in the completion message, to waiting long-pollers; with N > 0 it is deleted N seconds from now."""
        sealed_output = self.cipher.encrypt(output).decode()
        fields: dict[str, str] = {
            "usage": usage.model_dump_json(),
            "answered_by": answered_by,
            "finished_at": repr(now()),
            "status": JobStatus.SUCCEEDED.value,
        }
        if retention_s == 0:
            return await self._settle(
                record, token, {**fields, "payload_retained": "0"}, terminal=True,
                done_message=f"{record.id}|{sealed_output}", delete_fields=PAYLOAD_FIELDS,
            )
        fields["output"] = sealed_output
        if parsed is not None:
            fields["parsed"] = self.cipher.encrypt(json.dumps(parsed)).decode()
        if placeholder_map is not None:
            fields["placeholder_map"] = self.cipher.encrypt(placeholder_map).decode()
        retention_ms = None if retention_s is None else retention_s * 1000
        return await self._settle(record, token, fields, terminal=True, retention_ms=retention_ms)

    async def cancel(self, job_id: str) -> str:
        """Cancel an unfinished job; returns its status before the call ('' when there is no such job)."""
        before = await self._cancel(keys=[keys.job(job_id), keys.DONE_CHANNEL, keys.done_channel(keys.BATCH)],
                                    args=[repr(now()), self.ttl_s, job_id])
        return str(before)

    async def drop_payload(self, job_id: str) -> None:
        """Retention: remove prompt, output and placeholder map; keep the metadata."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.job(job_id), *PAYLOAD_FIELDS)
            pipe.hset(keys.job(job_id), "payload_retained", "0")
            await pipe.execute()

    async def finish_unsuccessful(self, record: JobRecord, token: str, status: JobStatus, error: str) -> bool:
        fields = {"error": error, "finished_at": repr(now()), "status": status.value}
        return await self._settle(
            record, token, fields, dead_letter=status is JobStatus.DEAD_LETTERED, terminal=True
        )

    async def move_on(
        self, record: JobRecord, token: str, *, status: JobStatus, partner: str, attempt: int, delay_s: float,
        reservation: str = "",
    ) -> bool:
        """Hand the job to its next delivery (a budget wait, a retry, a fallback) through the delay queue."""
        fields = {"partner": partner, "attempt": str(attempt), "status": status.value, "reservation": reservation}
        member = delayed_member(record.id, partner, attempt)
        return await self._settle(record, token, fields, next_member=member, delay_ms=int(delay_s * 1000))


PAYLOAD_FIELDS = ("messages", "output", "parsed", "placeholder_map")


def delayed_member(job_id: str, partner: str, attempt: int) -> str:
    return f"{job_id}|{partner}|{attempt}"


def parse_delayed_member(member: str) -> tuple[str, str, int]:
    job_id, partner, attempt = member.split("|")
    return job_id, partner, int(attempt)


def _history_json(history: list[Attempt]) -> str:
    return json.dumps([a.model_dump(exclude_none=True) for a in history])
