"""The HTTP API (FastAPI): native job endpoints. OpenAPI at /docs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway_api import cancelling
from gateway_api.batch_routes import install as install_batch_routes
from gateway_api.completion import CompletionListener
from gateway_api.contract_routes import install as install_contract_routes
from gateway_api.deps import Services, Tenant, error_body, services, wait_for_job
from gateway_api.dlq_routes import install as install_dead_letter_routes
from gateway_api.embeddings import install as install_embedding_routes
from gateway_api.limits import install as install_request_guard
from gateway_api.metrics_routes import install as install_metrics_routes
from gateway_api.openai_compat import install as install_openai_routes
from gateway_api.openapi import COMMON, errors
from gateway_api.openapi import install as install_openapi_limits
from gateway_api.request_id import install as install_request_id
from gateway_api.telemetry import install as install_request_telemetry
from gateway_api.usage_routes import install as install_usage_routes
from gateway_core.config import DEMO_CONFIG, GatewayConfig, load_config
from gateway_core.contracts import ContractRegistry
from gateway_core.crypto import load_cipher
from gateway_core.errors import ConfigError, FedgateError, RequestError
from gateway_core.fleet import metrics
from gateway_core.fleet.logs import SecretMasker, known_secrets
from gateway_core.fleet.redis_clients import async_client
from gateway_core.jobs.models import JobStatus, JobSubmission, JobView
from gateway_core.jobs.store import JobRecord, JobStore
from gateway_core.jobs.submission import JobProducer
from gateway_core.settings import Settings, get_settings
from workers.celery_app import make_celery
from workers.enqueue import CeleryEnqueuer

log = logging.getLogger("fedgate.api.config")
RELOAD_APPLIED = "config reloaded"  # `fedgate reload` looks for these in the API's log
RELOAD_REFUSED = "config reload refused"

# Objects other modules cache on app.state, built from the services, that hold the config or the producer
# (gateway_api.batch_routes, gateway_api.dlq_routes): a reload drops them so they are rebuilt from the new services.
_CACHED_FROM_CONFIG = ("batches", "dead_letters")


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    partner: str
    created_at: float


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = load_config(settings.config, home=settings.home_dir())
        _use_secret_masker(_masker_for(settings, config))
        client = async_client(settings, decode_responses=True)
        store = JobStore(client, load_cipher(settings), settings.job_ttl_s)
        enqueuer = CeleryEnqueuer(make_celery(settings))  # the one place the API meets Celery: building messages
        producer = JobProducer(store, config, settings, enqueuer, ContractRegistry(client))
        await producer.contracts.sync_models()
        completions = CompletionListener(client)
        await completions.start()
        app.state.services = Services(settings, config, client, store, producer, completions)
        reloader = ConfigReloader(app, settings)
        reloader.install()
        try:
            yield
        finally:
            await reloader.close()
            await completions.stop()
            await client.aclose()

    app = FastAPI(
        title="fedgate",
        version="0.1.0",
        description="Federated AI partnership gateway: submit inference jobs to partners through a worker fleet.",
        lifespan=lifespan,
        responses=errors(*COMMON),
    )
    _install_error_handlers(app)
    install_request_guard(app, settings)  # the key, then the body's size, before any route reads the body
    install_request_telemetry(app)
    install_openapi_limits(app, settings)
    install_request_id(app)  # outermost: every answer carries x-request-id, guard refusals and crashes too

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> dict[str, bool]:
        await services(request).redis.ping()
        return {"ok": True}

    @app.post("/v1/jobs", status_code=202, response_model=JobAccepted, tags=["jobs"],
              responses=errors(402, 403, 404, 409, 410))
    async def submit_job(
        submission: JobSubmission,
        request: Request,
        who: Tenant,
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=255, description="Same key and body: the same job")
        ] = None,
    ) -> JobAccepted:
        svc = services(request)
        record: JobRecord | None
        if idempotency_key is None:
            record = await svc.producer.submit(who, submission)
        else:
            outcome, _ = await svc.producer.submit_idempotent(who, submission, idempotency_key)
            record = outcome if not isinstance(outcome, str) else await svc.store.get(outcome)
            if record is None:
                raise RequestError(410, "the job for this Idempotency-Key has expired; use a new key", "expired")
        return JobAccepted(id=record.id, status=record.status, partner=record.requested_partner,
                           created_at=record.created_at)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobView, tags=["jobs"], responses=errors(404, 409))
    async def cancel_job(job_id: str, request: Request, who: Tenant) -> JobView:
        """Cancel a job that has not finished; a partner call in flight is not interrupted, its result is dropped."""
        svc = services(request)
        record = await svc.store.get(job_id)
        if record is None or record.tenant != who.name:
            raise RequestError(404, f"no job {job_id!r} for this tenant", "job_not_found", "job_id")
        before = await cancelling.cancel(svc, record)
        if before in ("succeeded", "dead_lettered"):
            raise RequestError(409, f"job {job_id} already {before}; nothing to cancel", "job_finished", "job_id")
        record = await svc.store.get(job_id) or record
        return record.view()

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=errors(404))
    async def get_job(
        job_id: str,
        request: Request,
        who: Tenant,
        wait: Annotated[float, Query(ge=0, le=3600, allow_inf_nan=False,
                                     description="Seconds to long-poll for a finished job (at most FEDGATE_MAX_WAIT_S "
                                     "are waited)")] = 0,
    ) -> JobView:
        svc = services(request)
        record = await wait_for_job(svc, job_id, min(wait, svc.settings.max_wait_s))
        if record is None or record.tenant != who.name:
            raise RequestError(404, f"no job {job_id!r} for this tenant", "job_not_found", "job_id")
        return record.view()

    install_dead_letter_routes(app)
    install_openai_routes(app)
    install_embedding_routes(app)
    install_contract_routes(app)
    install_metrics_routes(app, settings)
    install_batch_routes(app)
    install_usage_routes(app)
    return app


class ConfigReloader:
    """On SIGHUP, re-read FEDGATE_CONFIG and serve new requests with it; a config that does not load is refused
    in one log line and the previous one stays in use. Workers are not reloaded: they read the config at start."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._lock = asyncio.Lock()  # overlapping signals apply in the order they came
        self._running: set[asyncio.Task[bool]] = set()
        self._installed = False

    def install(self) -> None:
        """Handle SIGHUP on the running loop. uvicorn keeps its own SIGINT/SIGTERM handlers, so graceful shutdown
        is unchanged. Outside the main thread (an in-process test client) signals cannot be handled: no reload."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (RuntimeError, ValueError, NotImplementedError):
            log.debug("config reload on SIGHUP is not available in this thread")
            return
        self._installed = True

    async def close(self) -> None:
        if self._installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._installed = False
        pending = list(self._running)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def reload(self) -> bool:
        """True when the new config is in use; False when it was refused and the previous one still serves."""
        async with self._lock:
            try:
                config = await asyncio.to_thread(load_config, self.settings.config, home=self.settings.home_dir())
                masker = await asyncio.to_thread(_masker_for, self.settings, config)
            except ConfigError as exc:
                return self._refuse(str(exc))
            except Exception as exc:  # e.g. an unreadable file: name the class only, its text may quote the file
                return self._refuse(f"{self.settings.config or DEMO_CONFIG} could not be read "
                                    f"({exc.__class__.__name__})")
            swap_config(self.app, config)
            _use_secret_masker(masker)
            metrics.record_config_reload(applied=True)
            log.info("%s from %s: %d tenants, %d partners, %d routes; new requests use it", RELOAD_APPLIED,
                     config.source, len(config.tenants), len(config.partners), len(config.routes))
            return True

    @staticmethod
    def _refuse(reason: str) -> bool:
        metrics.record_config_reload(applied=False)
        log.error("%s, still serving the previous config: %s", RELOAD_REFUSED, reason)
        return False


def swap_config(app: FastAPI, config: GatewayConfig) -> None:
    """Serve new requests with `config`: one assignment replaces the services that hold it (the config and the
    producer), so no request sees half of each; a request already running keeps the services it started with."""
    old: Services = app.state.services
    producer = JobProducer(old.store, config, old.settings, old.producer.enqueuer, old.producer.contracts)
    app.state.services = dataclasses.replace(old, config=config, producer=producer)
    for name in _CACHED_FROM_CONFIG:
        setattr(app.state, name, None)


def _masker_for(settings: Settings, config: GatewayConfig) -> SecretMasker:
    """The log filter for the config in use: every tenant key in clear, each line of a key file included, so keys
    a reload adds are masked too (defence in depth: keys are never logged)."""
    secrets = known_secrets(settings)
    for tenant in config.tenants.values():
        with contextlib.suppress(ValueError):  # a key file that became unreadable since the config loaded
            secrets += tenant.plain_keys()
    return SecretMasker(secrets)


def _use_secret_masker(masker: SecretMasker) -> None:
    for handler in logging.getLogger().handlers:
        handler.filters = [masker if isinstance(f, SecretMasker) else f for f in handler.filters]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _api_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.code, exc.param, status=exc.status_code),
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        message, code, param = validation_message(first)
        return JSONResponse(error_body(message, code, param), status_code=refusal_status(code, request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own refusals (no such route, method not allowed, a body it could not parse), in the same
        error shape as every other refusal."""
        if exc.status_code == 404:
            message = "no such endpoint: see the API's OpenAPI schema at /docs"
        elif exc.status_code == 405:
            allowed = next((v for k, v in (exc.headers or {}).items() if k.lower() == "allow"), "")
            message = f"this endpoint does not take that method: use {allowed or 'another method'}"
        elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            message = "the request body could not be read: send a JSON object encoded as UTF-8"
        else:
            message = str(exc.detail)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        return JSONResponse(error_body(message, code, status=exc.status_code), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.BusyLoadingError)
    async def _store_down(_: Request, exc: Exception) -> JSONResponse:
        message = "the job store is unreachable for a moment; retry shortly (nothing was changed)"
        return JSONResponse(error_body(message, "store_unavailable", status=503), status_code=503,
                            headers={"retry-after": "1"})

    @app.exception_handler(FedgateError)
    async def _fedgate(_: Request, exc: FedgateError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "error", status=500), status_code=500)


# Error types the request models raise on purpose (PydanticCustomError), with the status each is answered with: the
# error's code is its type, and its message says what to do. A value OpenAI answers 400 keeps that status here.
REFUSALS = {"unsupported": 400, "invalid_endpoint": 400, "invalid_completion_window": 400,
            "invalid_contract_name": 422, "invalid_group_by": 422}


# The OpenAI-compatible endpoints answer an invalid body as OpenAI does (400); fedgate's own endpoints say 422.
OPENAI_COMPATIBLE_PATHS = ("/v1/chat/completions", "/v1/files", "/v1/batches", "/v1/embeddings", "/v1/models")


def refusal_status(code: str, path: str) -> int:
    """A field we do not honour is a 400 that names it, everywhere; other invalid bodies 400 on the OpenAI-compatible
    endpoints and 422 on the rest."""
    if code in REFUSALS:
        return REFUSALS[code]
    if code == "unsupported_field" or path.startswith(OPENAI_COMPATIBLE_PATHS):
        return 400
    return 422


def validation_message(error: Any) -> tuple[str, str, str]:
    """(message, code, param) for the first problem pydantic found in a request: the field, what was wrong with
    it, and for an unknown field, that it is not supported (nothing is silently dropped)."""
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "header", "path")]
    where = ".".join(loc) or "body"
    kind = error.get("type")
    if kind == "json_invalid":
        return "request body is not valid JSON: send a JSON object", "invalid_request", "body"
    if kind == "unsupported":  # a value the model refuses on purpose (e.g. stream=true): its message says why
        return str(error.get("msg")), "unsupported", where
    if kind in REFUSALS:
        return f"{where}: {error.get('msg')}", str(kind), where
    if kind == "extra_forbidden":
        return f"{where}: this field is not supported here; remove it", "unsupported_field", where
    if kind == "missing":
        return f"{where}: this field is required", "invalid_request", where
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message}", "invalid_request", where
