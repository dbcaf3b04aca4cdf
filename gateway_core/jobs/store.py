"""The Redis job store: one hash per job, encrypted payloads, atomic state changes guarded by a run token."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs import run_owners, vectors
from gateway_core.jobs.chat_options import ChatOptions, ToolCall
from gateway_core.jobs.models import Attempt, EmbeddingsSummary, JobStatus, JobView, Message, Usage, now

# The job's state changes that must be atomic are Lua scripts in gateway_core/lua (job_*.lua): claim a run, give
# it back, settle it (one script per outcome), cancel. Each settle checks the caller still holds the run.
BATCH_KEY_PREFIX = f"{keys.PREFIX}:batch:"  # a batch's hash; job scripts count a batch job's outcome in it
CHAT = "chat"
EMBEDDING = "embedding"  # inputs as user messages, output the packed vectors (gateway_core.jobs.vectors)


@dataclass(frozen=True)
class WebhookWrite:
    """A job's webhook delivery, written by the settle scripts in the same step as the job's final status, so no
    crash can settle the job and lose its webhook. Built by gateway_core.webhooks.queue.job_webhook; opaque here."""

    delivery_id: str
    keys: tuple[str, str]  # the delivery hash, the webhook delay queue (for its safety-net entry)
    spec: str  # JSON the settle scripts read: the delivery's fields, its TTL and its safety-net entry


def _webhook_args(webhook: WebhookWrite | None) -> tuple[list[str], str]:
    """(extra KEYS, the webhook ARGV) for a settle script."""
    return ([], "") if webhook is None else (list(webhook.keys), webhook.spec)


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
    cost_nanousd: int | None = None  # every call of this job so far, where priced (gateway_core.tenants.metering)
    error: str | None = None
    answered_by: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    run_token: str | None = None
    reservation: str | None = None  # "partner:attempt" that already holds budget
    webhook_url: str | None = None
    payload_retained: bool = True
    lane: str = keys.INTERACTIVE
    kind: str = CHAT
    options: ChatOptions | None = None  # tools, response_format, stop, ...: payload, stored encrypted
    finish_reason: str | None = None
    tool_calls: list[ToolCall] | None = None  # model output: encrypted, dropped with the payload
    logprobs: dict[str, Any] | None = None  # OpenAI's choice.logprobs where asked for and given: like output

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
        embeddings = None
        if self.kind == EMBEDDING and self.output is not None:
            count, dimensions = vectors.shape(self.output)
            embeddings = EmbeddingsSummary(count=count, dimensions=dimensions)
        return JobView(
            id=self.id,
            kind="embedding" if self.kind == EMBEDDING else "chat",
            status=self.status,
            partner=self.requested_partner,
            answered_by=self.answered_by,
            attempts=len([a for a in self.history if a.outcome not in ("redelivered", "swept")]),
            output=None if self.kind == EMBEDDING else self.output,
            embeddings=embeddings,
            parsed=self.parsed,
            contract=self.params.get("contract"),
            usage=self.usage,
            cost_usd=None if self.cost_nanousd is None else round(self.cost_nanousd / 1e9, 9),
            error=self.error,
            history=self.history,
            redaction_audit=audit,
            payload_retained=self.payload_retained,
            metadata=self.metadata,
            finish_reason=self.finish_reason,
            tool_calls=self.tool_calls,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            timings_ms=timings,
        )


class JobStore:
    def __init__(self, client: aioredis.Redis, cipher: PayloadCipher, ttl_s: int, *, run_owner: str | None = None
                 ) -> None:
        """`run_owner`: the process's id in its runs' tokens, for a worker that keeps it alive (run_owners)."""
        self.redis = client
        self.cipher = cipher
        self.ttl_s = ttl_s
        self.run_owner = run_owner
        self._begin_run = client.register_script(script("job_begin_run"))
        self._settle_success = client.register_script(script("job_settle_success"))
        self._settle_failure = client.register_script(script("job_settle_failure"))
        self._settle_move_on = client.register_script(script("job_settle_move_on"))
        self._cancel = client.register_script(script("job_cancel"))
        self._release_claim = client.register_script(script("job_release_claim"))
        self._drop_payload = client.register_script(script("job_drop_payload"))

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
                json.dumps([m.stored() for m in record.messages])
            ).decode(),
            **({"options": self.cipher.encrypt(record.options.model_dump_json(exclude_none=True, by_alias=True))
                .decode()} if record.options is not None and not record.options.is_empty() else {}),
            "params": json.dumps(record.params),
            "metadata": json.dumps(record.metadata),
            "history": "[]",
            **({"webhook_url": self.cipher.encrypt(record.webhook_url).decode()} if record.webhook_url else {}),
            **({"lane": record.lane} if record.lane != keys.INTERACTIVE else {}),
            **({"kind": record.kind} if record.kind != CHAT else {}),
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
            kind=raw.get("kind") or CHAT,
            cost_nanousd=int(raw["cost_nanousd"]) if raw.get("cost_nanousd") else None,
            finish_reason=raw.get("finish_reason") or None,
        )
        if raw.get("usage"):
            record.usage = Usage.model_validate_json(raw["usage"])
        if with_payload and raw.get("messages"):
            decoded = json.loads(self.cipher.decrypt(raw["messages"].encode()))
            record.messages = [Message.model_validate(m) for m in decoded]
        if with_payload and raw.get("options"):
            record.options = ChatOptions.model_validate_json(self.cipher.decrypt(raw["options"].encode()))
        if raw.get("tool_calls"):
            calls = json.loads(self.cipher.decrypt(raw["tool_calls"].encode()))
            record.tool_calls = [ToolCall.model_validate(call) for call in calls]
        if raw.get("logprobs"):
            record.logprobs = json.loads(self.cipher.decrypt(raw["logprobs"].encode()))
        if raw.get("output"):
            record.output = self.cipher.decrypt(raw["output"].encode())
        if raw.get("webhook_url"):
            record.webhook_url = self.cipher.decrypt(raw["webhook_url"].encode())
        if raw.get("parsed"):
            record.parsed = json.loads(self.cipher.decrypt(raw["parsed"].encode()))
        return record

    async def begin_run(self, job_id: str, partner: str, attempt: int) -> tuple[str, str, dict[str, str]]:
        """Claim the job for this attempt: (word, run token, raw fields when claimed)."""
        token = run_owners.run_token(self.run_owner)
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

    @staticmethod
    def _field_args(record: JobRecord, fields: dict[str, str]) -> list[str]:
        """`fields` plus the record's history and cost so far, as the settle scripts' field, value, ... arguments."""
        fields = {**fields, "history": _history_json(record.history)}
        if record.cost_nanousd is not None:
            fields["cost_nanousd"] = str(record.cost_nanousd)
        return [item for pair in fields.items() for item in pair]

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
        webhook: WebhookWrite | None = None,
        finish_reason: str | None = None,
        tool_calls: list[ToolCall] | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> bool:
        """Publish the result. With retention 0 the payload is deleted now and the encrypted output travels only
        in the completion message, to waiting long-pollers; with N > 0 it is deleted N seconds from now. `webhook`
        (the job's delivery) is stored in the same step."""
        sealed_output = self.cipher.encrypt(output).decode()
        fields: dict[str, str] = {
            "usage": usage.model_dump_json(),
            "answered_by": answered_by,
            "finished_at": repr(now()),
        }
        if finish_reason:
            fields["finish_reason"] = finish_reason
        done_message, drop_fields, retention_ms = record.id, "", ""
        if retention_s == 0:
            fields["payload_retained"] = "0"
            done_message, drop_fields = f"{record.id}|{sealed_output}", " ".join(PAYLOAD_FIELDS)
        else:
            fields["output"] = sealed_output
            if parsed is not None:
                fields["parsed"] = self.cipher.encrypt(json.dumps(parsed)).decode()
            if tool_calls:
                fields["tool_calls"] = self.cipher.encrypt(json.dumps([c.model_dump() for c in tool_calls])).decode()
            if logprobs is not None:
                fields["logprobs"] = self.cipher.encrypt(json.dumps(logprobs)).decode()
            if placeholder_map is not None:
                fields["placeholder_map"] = self.cipher.encrypt(placeholder_map).decode()
            if retention_s is not None:
                retention_ms = str(retention_s * 1000)
        webhook_keys, webhook_spec = _webhook_args(webhook)
        done = await self._settle_success(
            keys=[keys.job(record.id), keys.done_channel(record.lane), keys.RETENTION, *webhook_keys],
            args=[token, str(self.ttl_s), record.id, done_message, retention_ms, drop_fields, BATCH_KEY_PREFIX,
                  webhook_spec, *self._field_args(record, fields)],
        )
        return bool(done)

    async def cancel(self, job_id: str, *, retention_s: int | None = None, webhook: WebhookWrite | None = None) -> str:
        """Cancel an unfinished job; returns its status before the call ('' when there is no such job). The payload
        is kept `retention_s` more seconds (0: deleted now; None: for the record's life), see `job_retention_s`.
        `webhook` (the job's `job.cancelled` delivery) is stored in the same step, only when this call cancels."""
        retention_ms, drop_fields = _retention_args(retention_s)
        webhook_keys, webhook_spec = _webhook_args(webhook)
        before = await self._cancel(
            keys=[keys.job(job_id), keys.DONE_CHANNEL, keys.done_channel(keys.BATCH), keys.RETENTION, *webhook_keys],
            args=[repr(now()), self.ttl_s, job_id, BATCH_KEY_PREFIX, retention_ms, drop_fields, webhook_spec],
        )
        return str(before)

    async def partners_of(self, job_id: str) -> list[str]:
        """Every partner the job was meant for or sent to so far (requested, current, its history); [] if gone."""
        fields = await self.redis.hmget(keys.job(job_id), ["requested_partner", "partner", "history"])  # type: ignore[misc]
        requested, current, history = cast(list[str | None], fields)
        return partners_named(requested, current, history=history)

    async def drop_payload(self, job_id: str) -> bool:
        """Retention: remove prompt, output and placeholder map of a finished job; keep the metadata; the job leaves
        the retention set (where the sweep only leased it). A record that is gone stays gone (never re-created
        without a TTL) and an unfinished one is left alone: False then."""
        return bool(await self._drop_payload(keys=[keys.job(job_id), keys.RETENTION],
                                             args=[job_id, " ".join(PAYLOAD_FIELDS)]))

    async def finish_unsuccessful(
        self, record: JobRecord, token: str, status: JobStatus, error: str, *, retention_s: int | None = None,
        webhook: WebhookWrite | None = None,
    ) -> bool:
        """End the job as `status` (dead-lettered: also listed in the dead-letter queue); False if the run lost it.
        The payload is kept `retention_s` more seconds (0: deleted now, so a dead letter cannot be replayed; None:
        for the record's life), see `job_retention_s`. `webhook` (the job's delivery) is stored in the same step."""
        fields = {"error": error, "finished_at": repr(now())}
        retention_ms, drop_fields = _retention_args(retention_s)
        webhook_keys, webhook_spec = _webhook_args(webhook)
        done = await self._settle_failure(
            keys=[keys.job(record.id), keys.DEAD_LETTERS, keys.done_channel(record.lane), keys.RETENTION,
                  *webhook_keys],
            args=[token, status.value, str(self.ttl_s), record.id, BATCH_KEY_PREFIX, retention_ms, drop_fields,
                  webhook_spec, *self._field_args(record, fields)],
        )
        return bool(done)

    async def move_on(
        self, record: JobRecord, token: str, *, status: JobStatus, partner: str, attempt: int, delay_s: float,
        reservation: str = "",
    ) -> bool:
        """Hand the job to its next delivery (a budget wait, a retry, a fallback) through the delay queue."""
        fields = {"partner": partner, "attempt": str(attempt), "status": status.value, "reservation": reservation}
        member = delayed_member(record.id, partner, attempt)
        done = await self._settle_move_on(
            keys=[keys.job(record.id), keys.delayed(record.lane), keys.delayed_wake(record.lane)],
            args=[token, member, str(int(delay_s * 1000)), *self._field_args(record, fields)],
        )
        return bool(done)


PAYLOAD_FIELDS = ("messages", "output", "parsed", "placeholder_map", "options", "tool_calls", "logprobs")


def retention_of(config: GatewayConfig, partners: Iterable[str]) -> int | None:
    """The shortest `policy.retention_s` among `partners` (unknown names and partners without one are skipped);
    None when none of them has a retention."""
    found = [config.partners[name].policy.retention_s for name in set(partners) if name in config.partners]
    kept = [seconds for seconds in found if seconds is not None]
    return min(kept) if kept else None


def partners_named(*names: str | None, history: str | None = None) -> list[str]:
    """`names` and every partner in a stored history (JSON; unreadable: skipped), without blanks."""
    found: list[object] = list(names)
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        found += [attempt.get("partner") for attempt in json.loads(history or "[]")]
    return [name for name in found if isinstance(name, str) and name]


def job_retention_s(config: GatewayConfig, record: JobRecord) -> int | None:
    """How long a finished job keeps its payload: the shortest retention among the partners its prompt was meant
    for or sent to (the requested partner, the current one, every partner in its history), whatever the ending."""
    return retention_of(config, [record.requested_partner, record.partner, *(a.partner for a in record.history)])


def _retention_args(retention_s: int | None) -> tuple[str, str]:
    """(retention_ms, drop_fields) as the settle and cancel scripts take them."""
    if retention_s is None:
        return "", ""
    if retention_s <= 0:
        return "", " ".join(PAYLOAD_FIELDS)
    return str(retention_s * 1000), ""


def delayed_member(job_id: str, partner: str, attempt: int) -> str:
    return f"{job_id}|{partner}|{attempt}"


def parse_delayed_member(member: str) -> tuple[str, str, int]:
    job_id, partner, attempt = member.split("|")
    return job_id, partner, int(attempt)


def _history_json(history: list[Attempt]) -> str:
    return json.dumps([a.model_dump(exclude_none=True) for a in history])
