"""One logging set-up for every fedgate process: JSON lines (or text for humans) with the job and trace in context.

Every line carries timestamp, level, logger, message and service, plus job_id, trace_id and span_id when known:
the worker binds a `LogContext` while it runs a job, the API for each request. A filter masks configured API keys,
`Bearer ...` tokens and `sk-...`/`whsec_...`-like secrets in any record that reaches the handler; it is defence in
depth, not a licence to log them, and it cannot recognise PII, which fedgate never logs (messages carry ids only).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

from gateway_core.fleet import tracing
from gateway_core.settings import Settings, get_settings

MASK = "***"
MIN_SECRET_CHARS = 6
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CHATTY = ("presidio-analyzer",)  # a line per recognizer per redactor at start-up: shown only at DEBUG
_PATTERNS = (
    r"(?P<bearer>\b[Bb]earer\s+)[^\s\"',;]+",
    r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{2,}",
    r"\bwhsec_[A-Za-z0-9+/=]+",
)
# Attributes every LogRecord has; anything else on a record came from `extra=` and is masked too.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@dataclass(slots=True)
class LogContext:
    """What the current job run or request knows; mutable, so a job span's ids reach lines logged after it."""

    job_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


_context: ContextVar[LogContext | None] = ContextVar("fedgate_log_context", default=None)


def bind(context: LogContext) -> Token[LogContext | None]:
    return _context.set(context)


def unbind(token: Token[LogContext | None]) -> None:
    _context.reset(token)


def current() -> LogContext | None:
    return _context.get()


class SecretMasker(logging.Filter):
    """Replace secrets in a record's message, arguments, traceback and extras before any formatter sees them."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        literals = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._pattern = re.compile("|".join([*(re.escape(s) for s in literals), *_PATTERNS]))

    def mask(self, text: str) -> str:
        return self._pattern.sub(self._replace, text)

    @staticmethod
    def _replace(match: re.Match[str]) -> str:
        return (match.group("bearer") or "") + MASK

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, self._mask_value(value))
        return True

    def _mask_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self._mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._mask_value(v) for v in value]
        return value


class ContextFields(logging.Filter):
    """Add service, and job_id / trace_id / span_id when known, to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        context = _context.get()
        ids = tracing.current_ids()
        if context is not None:
            if context.job_id:
                record.job_id = context.job_id
            if ids is None and context.trace_id:
                ids = (context.trace_id, context.span_id or "")
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(OrjsonFormatter):
    """{"timestamp", "level", "logger", "message", "service", "job_id", "trace_id", "span_id", ...extras}."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger"},
                         reserved_attrs=[*_STANDARD, "color_message"])

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = _timestamp(record)
        super().add_fields(log_data, record, message_dict)


class TextFormatter(logging.Formatter):
    """`2025-01-01T12:00:00.123Z INFO worker fedgate.worker [job_id=... trace_id=...] message`."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{name}={getattr(record, name)}" for name in ("job_id", "trace_id")
                           if getattr(record, name, None))
        head = f"{_timestamp(record)} {record.levelname} {getattr(record, 'service', '-')} {record.name}"
        line = f"{head} [{context}] {record.getMessage()}" if context else f"{head} {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure_logging(service: str, settings: Settings | None = None, *, level: int | str | None = None,
                      stream: TextIO | None = None) -> logging.Handler:
    """Route this process's logging (the root logger) through one handler; returns it. `level` overrides the
    setting unless FEDGATE_LOG_LEVEL is set (a worker passes Celery's --loglevel)."""
    settings = settings or get_settings()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(SecretMasker(known_secrets(settings)))
    handler.addFilter(ContextFields(service))
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    chosen = _level(settings.log_level if level is None or "log_level" in settings.model_fields_set else level)
    root.setLevel(chosen)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if chosen <= logging.DEBUG else max(chosen, logging.WARNING))
    return handler


def _level(value: int | str) -> int:
    if isinstance(value, int):
        return value
    name = value.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"FEDGATE_LOG_LEVEL={value!r}: use one of {', '.join(LEVELS)}")
    return int(logging.getLevelName(name))


def known_secrets(settings: Settings) -> list[str]:
    """Every secret this process could know: partner and tenant API keys, encryption and webhook secrets."""
    found: list[str] = []
    if settings.encryption_keys:
        found += [k.strip() for k in settings.encryption_keys.split(",")]
    home = settings.home.expanduser()
    found += [_read(home / name) for name in ("secret.key", "dev-api-key", "dev-webhook-secret")]
    from gateway_core.fleet.credentials import credential_secrets

    found += credential_secrets(settings)  # Redis passwords (embedded or in the URL) and Flower's logins
    try:
        from gateway_core.config import load_config

        config = load_config(settings.config, home=home)
    except Exception:  # a bad config stops the process elsewhere, with its own message
        return [s for s in found if s]
    found += [p.resolved_api_key() or "" for p in config.partners.values()]
    for tenant in config.tenants.values():
        found += [tenant.api_key or "", _read(Path(tenant.api_key_file)) if tenant.api_key_file else ""]
        found += tenant.webhook_secrets
        if tenant.api_key_env:
            found.append(os.environ.get(tenant.api_key_env, ""))
    return [s for s in found if s]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
