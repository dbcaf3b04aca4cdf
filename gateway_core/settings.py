"""Process settings from FEDGATE_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDGATE_", extra="ignore")

    home: Path = Field(default=Path("~/.fedgate"), description="Data directory for the embedded Redis and keys")
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FEDGATE_REDIS_URL", "REDIS_URL"),
        description="Existing Redis to use; unset starts a private embedded redis-server under FEDGATE_HOME. "
        "redis://, rediss://, unix://, or Sentinel: sentinel://[:password@]host:port[;sentinel://host2:port2...]",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", description="With a sentinel:// URL: the master name the sentinels monitor"
    )
    redis_sentinel_password: str | None = Field(
        default=None, description="With a sentinel:// URL: the sentinels' own password (the URL's is the master's)"
    )
    config: Path | None = Field(default=None, description="YAML file with partners and tenants")
    encryption_keys: str | None = Field(
        default=None,
        description="Comma-separated Fernet keys, newest first; unset uses (or creates) $FEDGATE_HOME/secret.key",
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8700
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str | None = Field(
        default=None, description="Flower's logins, user:password[,user2:password2]; read by the Flower process from "
        "its environment, never put on its command line. Unset: FEDGATE_FLOWER_AUTH_FILE"
    )
    flower_auth_file: Path | None = Field(
        default=None, description="File of Flower logins, one user:password a line; unset: $FEDGATE_HOME/flower-auth, "
        "generated (user operator, mode 0600) on Flower's first start"
    )
    simulator_host: str = "127.0.0.1"
    simulator_port: int = 8790
    embedded_redis_port: int = 6390

    worker_concurrency: int = Field(default=1000, ge=1, description="Partner calls in flight per worker process")
    max_partner_response_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest partner answer read (decoded); larger ones are fatal"
    )
    visibility_timeout_s: int = Field(
        default=300, ge=10, description="Broker redelivery time for unacked jobs; above every partner timeout"
    )
    # Webhook deliveries (gateway_core/webhooks/delivery.py), made by the webhook workers (`fedgate webhook-worker`)
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Total deadline of one webhook delivery attempt: resolving, "
        "connecting, sending and the answer's status line and headers together; a slower receiver is cut and retried"
    )
    webhook_max_in_flight_per_tenant: int = Field(
        default=20, ge=1, description="Webhook deliveries one tenant may have in flight across the fleet; more wait "
        "in the webhook delay queue (not in a worker) until one of the tenant's deliveries ends"
    )
    webhook_worker_concurrency: int = Field(
        default=200, ge=1, description="Webhook deliveries in flight per webhook worker process"
    )
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    max_prompt_chars: int = Field(default=200_000, ge=1)
    max_wait_s: float = Field(default=60.0, ge=0, description="Longest long-poll a client may ask for")
    chat_timeout_s: float = Field(default=120.0, gt=0, description="How long /v1/chat/completions waits for its job")

    # Request limits and quotas (gateway_api/limits.py, gateway_core/jobs/batches.py)
    max_json_body_bytes: int | None = Field(
        default=None, ge=1024, description="Largest JSON request body, refused with 413 before it is read; unset: "
        "8 bytes per FEDGATE_MAX_PROMPT_CHARS (JSON escapes included) plus 1 MiB for the rest of the request"
    )
    max_batch_file_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Largest uploaded file (POST /v1/files), counted as it streams"
    )
    max_files_per_tenant: int = Field(
        default=100, ge=1, description="Uploaded files a tenant may keep at once (until deleted or expired)"
    )
    max_file_bytes_per_tenant: int = Field(
        default=1024 * 1024 * 1024, ge=1024, description="Bytes of uploaded files a tenant may keep at once"
    )
    max_batch_output_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1024, description="Largest batch output file; results past it go to the "
        "error file naming the job that still holds them"
    )
    metrics_token: str | None = Field(
        default=None, description="Bearer token Prometheus must send to GET /metrics on the API port"
    )
    metrics_token_file: Path | None = Field(
        default=None, description="File holding the /metrics bearer token; unset (and no FEDGATE_METRICS_TOKEN): "
        "$FEDGATE_HOME/metrics-token, created on first start"
    )
    metrics_cache_s: float = Field(
        default=1.0, ge=0, le=60, description="How long a scrape's fleet state read from Redis is reused by the next "
        "scrapes (one read per period, however often /metrics is scraped)"
    )

    def json_body_limit(self) -> int:
        """Bytes a JSON request body may have (FEDGATE_MAX_JSON_BODY_BYTES, or derived from max_prompt_chars)."""
        if self.max_json_body_bytes is not None:
            return self.max_json_body_bytes
        return 8 * self.max_prompt_chars + 1024 * 1024

    # Logs and traces (gateway_core/fleet/logs.py, gateway_core/fleet/tracing.py)
    log_format: Literal["json", "text"] = Field(default="json", description="json lines, or text for humans")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where OpenTelemetry spans go; none installs no SDK and costs nothing"
    )
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP collector URL, e.g. http://collector:4318; unset: OTEL_EXPORTER_OTLP_*"
    )

    def home_dir(self) -> Path:
        path = self.home.expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()

