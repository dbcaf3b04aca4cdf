"""Submitting jobs, the domain service behind every front door: validate, store (prompt encrypted), enqueue.
All or nothing: the job record and its first message are written in one Redis transaction.

The message itself is the enqueuer's (gateway_core.jobs.enqueuer.Enqueuer; the workers implement it with Celery):
this service asks it for the Redis commands that put the job on its partner's queue and runs them in the same
MULTI as the record.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from gateway_core.config import GatewayConfig, TenantConfig
from gateway_core.contracts import ContractNotFound, ContractRegistry
from gateway_core.errors import RequestError
from gateway_core.fleet import keys, metrics, tracing
from gateway_core.jobs.enqueuer import Enqueuer, stage
from gateway_core.jobs.models import JobStatus, JobSubmission, new_job_id, now
from gateway_core.jobs.request_checks import check_request_options
from gateway_core.jobs.store import CHAT, JobRecord, JobStore
from gateway_core.settings import Settings
from gateway_core.tenants import spending
from gateway_core.webhooks import WebhookError, allow_list, check_destination

IDEMPOTENCY_TTL_S = 24 * 3600


class JobProducer:
    """Submits jobs for tenants under one config (a config reload builds a new one on the same enqueuer)."""

    def __init__(
        self, store: JobStore, config: GatewayConfig, settings: Settings, enqueuer: Enqueuer,
        contracts: ContractRegistry | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.settings = settings
        self.enqueuer = enqueuer
        self.contracts = contracts or ContractRegistry(store.redis)

    def validate(self, tenant: TenantConfig, submission: JobSubmission) -> None:
        if submission.partner not in self.config.partners:
            known = ", ".join(sorted(self.config.partners))
            raise RequestError(404, f"unknown partner {submission.partner!r}: use one of {known}", "unknown_partner")
        if tenant.partners is not None and submission.partner not in tenant.partners:
            raise RequestError(
                403, f"tenant {tenant.name!r} may not use partner {submission.partner!r}", "partner_not_allowed"
            )
        if not submission.prompt and not submission.messages:
            raise RequestError(422, "give a non-empty 'prompt' or 'messages'", "missing_prompt")
        check_request_options(self.config.partners[submission.partner], submission)
        size = sum(m.size() for m in submission.conversation())
        if size > self.settings.max_prompt_chars:
            raise RequestError(
                413,
                f"prompt is {size} characters; the limit is {self.settings.max_prompt_chars} "
                "(FEDGATE_MAX_PROMPT_CHARS): shorten it or split the job",
                "prompt_too_large",
            )

    async def check_webhook(self, url: str) -> None:
        """Refuse destinations on private, loopback or link-local addresses unless allow-listed (SSRF)."""
        try:
            await asyncio.to_thread(check_destination, url, allow_list(self.config, self.settings))
        except WebhookError as exc:
            raise RequestError(422, f"webhook_url: {exc}", "webhook_refused") from None

    async def pin_contract(self, reference: str) -> str:
        """The contract a job names, pinned to a version ("name@N") so a later version cannot change the job."""
        try:
            version = await self.contracts.resolve(reference)
        except ContractNotFound as exc:
            message = f"{exc}: register it first (fedgate contracts add)"
            raise RequestError(404, message, "contract_not_found") from None
        except ValueError as exc:
            raise RequestError(422, f"contract: {exc}", "invalid_contract") from None
        return f"{version.name}@{version.version}"

    async def submit_idempotent(
        self, tenant: TenantConfig, submission: JobSubmission, key: str
    ) -> tuple[JobRecord | str, bool]:
        """Same key and body: the same job (returns its id, False). A new key: a new job (record, True).
        The same key with a different body is refused with 409."""
        if not 1 <= len(key) <= 255:
            raise RequestError(422, "Idempotency-Key must be 1 to 255 characters", "invalid_idempotency_key")
        # Fields left at their defaults are not part of the body's digest: a field a later release adds does not
        # make a retry of the same body look different. (Keys stored before this rule was in place, within their
        # 24 h, see a retry of the same body as another body: 409.)
        digest = hashlib.sha256(submission.model_dump_json(exclude_defaults=True).encode()).hexdigest()
        slot = keys.idempotency(tenant.name, hashlib.sha256(key.encode()).hexdigest())
        redis = self.store.redis
        if not await redis.set(slot, f"pending:{digest}", nx=True, ex=IDEMPOTENCY_TTL_S):
            existing = str(await redis.get(slot) or "")
            state, _, value = existing.partition(":")
            stored_digest, _, job_id = value.partition(":")
            if stored_digest != digest:
                raise RequestError(
                    409, "this Idempotency-Key was used with a different request body: use a new key for a new job",
                    "idempotency_key_reused",
                )
            if state == "pending":
                raise RequestError(409, "a request with this Idempotency-Key is still being processed; retry shortly",
                                   "idempotency_key_in_use")
            return job_id, False
        try:
            record = await self.submit(tenant, submission)
        except BaseException:
            await redis.delete(slot)
            raise
        await redis.set(slot, f"done:{digest}:{record.id}", ex=IDEMPOTENCY_TTL_S)
        return record, True

    async def submit(self, tenant: TenantConfig, submission: JobSubmission, *, kind: str = CHAT,
                     params: dict[str, Any] | None = None) -> JobRecord:
        """`kind` and `params` are for jobs other front doors make (an embedding job: gateway_api/embeddings.py)."""
        self.validate(tenant, submission)
        await spending.check_budget(self.store.redis, tenant)
        contract = await self.pin_contract(submission.contract) if submission.contract else None
        if submission.webhook_url:
            await self.check_webhook(submission.webhook_url)
        record = JobRecord(
            id=new_job_id(),
            tenant=tenant.name,
            partner=submission.partner,
            requested_partner=submission.partner,
            status=JobStatus.QUEUED,
            attempt=1,
            created_at=now(),
            messages=submission.conversation(),
            params={k: v for k, v in
                    {"max_tokens": submission.max_tokens, "temperature": submission.temperature,
                     "contract": contract, "stream": submission.stream or None}.items()
                    if v is not None} | (params or {}),
            metadata=submission.metadata,
            webhook_url=submission.webhook_url,
            kind=kind,
            options=submission.options,
        )
        fields = self.store.encode_new(record)
        tracing.stamp_job(fields, record.id)  # every attempt's worker span joins this request's trace
        try:
            message = self.enqueuer.job_messages([(record.id, record.partner, record.attempt)])
        except Exception as exc:  # the broker connection could not be opened (kombu's errors vary by failure)
            raise RequestError(
                503,
                f"the broker did not accept the job ({exc.__class__.__name__}); nothing was stored, try again",
                "broker_unavailable",
            ) from exc
        # The record and its Celery message in one transaction: both are written or neither, in one round trip.
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.job(record.id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.job(record.id), self.store.ttl_s)
            pipe.zadd(keys.UNFINISHED, {record.id: int(record.created_at * 1000)})  # for the sweeper
            stage(pipe, message)
            await pipe.execute()
        metrics.record_submitted(record.requested_partner, tenant.name)
        return record
