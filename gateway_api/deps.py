"""What every route needs: the process's services, the calling tenant, and the error shape."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, Header, Request

from gateway_api.completion import CompletionListener
from gateway_core.config import GatewayConfig, TenantConfig
from gateway_core.errors import RequestError
from gateway_core.fleet import keys
from gateway_core.jobs.store import JobRecord, JobStore
from gateway_core.jobs.submission import JobProducer
from gateway_core.settings import Settings

_ERROR_TYPES = {"budget_exceeded": "insufficient_quota", "partner_failed": "api_error"}
BATCH_RECHECK_S = 1.0


def error_body(message: str, code: str, param: str | None = None, *, status: int | None = None) -> dict[str, Any]:
    """OpenAI-style error shape, so SDK clients show the message; a 5xx is OpenAI's `server_error` type."""
    kind = "server_error" if status is not None and status >= 500 else _ERROR_TYPES.get(code, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class Services:
    settings: Settings
    config: GatewayConfig
    redis: aioredis.Redis
    store: JobStore
    producer: JobProducer
    completions: CompletionListener


def services(request: Request) -> Services:
    """The services this request started with: a config reload (SIGHUP) while it runs does not change them, so
    the tenant it authenticated as and the config it is served with come from the same file."""
    pinned: Services | None = getattr(request.state, "services", None)
    if pinned is None:
        pinned = request.app.state.services
        request.state.services = pinned
    return pinned


def authenticate(request: Request, authorization: str | None) -> TenantConfig:
    """The tenant whose key the request carries, or the 401 that says what was wrong."""
    svc = services(request)
    if not authorization or not authorization.lower().startswith("bearer "):
        raise RequestError(401, "missing API key: send 'Authorization: Bearer <your tenant key>'", "missing_api_key")
    found = svc.config.tenant_for_key(authorization[7:].strip())
    if found is None:
        raise RequestError(401, "invalid API key: check the key your operator issued", "invalid_api_key")
    return found


async def tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> TenantConfig:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hand-off on every request.
    return authenticate(request, authorization)


Tenant = Annotated[TenantConfig, Depends(tenant)]


def require_admin(what: str) -> Callable[[TenantConfig], Awaitable[TenantConfig]]:
    """A dependency refusing non-admin tenants with a 403 that says what needed the admin key."""

    async def admin(who: Tenant) -> TenantConfig:
        if not who.admin:
            raise RequestError(
                403,
                f"tenant {who.name!r} is not an operator: {what} needs an admin tenant's API key "
                "(a tenant with 'admin: true' in the config)",
                "admin_required",
            )
        return who

    return admin


async def wait_for_job(svc: Services, job_id: str, wait_s: float) -> JobRecord | None:
    """The job, once it is finished or `wait_s` has passed (0: at once). Wakes on the completion channel."""
    event = svc.completions.register(job_id) if wait_s > 0 else None
    follows_batch = False
    try:
        record = await svc.store.get(job_id)
        if record is None or event is None or record.status.terminal:
            return record
        if record.lane == keys.BATCH:
            follows_batch = True
            await svc.completions.follow_batch_lane()
            # Re-read on a short period too: a batch job may have finished while the subscription was made.
            deadline = asyncio.get_running_loop().time() + wait_s
            while not event.is_set() and not record.status.terminal:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(left, BATCH_RECHECK_S))
                record = await svc.store.get(job_id) or record
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=wait_s)
        record = await svc.store.get(job_id) or record
        sealed = svc.completions.sealed_outputs.get(job_id)
        if sealed and record.output is None:  # retention 0: the output only travelled in the message
            record.output = svc.store.cipher.decrypt(sealed.encode())
        return record
    finally:
        if follows_batch:
            await svc.completions.unfollow_batch_lane()
        if event is not None:
            svc.completions.unregister(job_id, event)
