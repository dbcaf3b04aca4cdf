"""Redis clients from the configured URL, for every process: API, job store, workers' runtime, CLI.

A plain server (`redis://`, `rediss://`, `unix://`) is reached as redis-py's `from_url` reaches it. A Sentinel URL,
kombu's form `sentinel://[user:password@]host:port[/db][;sentinel://host2:port2...]`, lists the sentinels: every
new connection asks them for the master named by FEDGATE_REDIS_SENTINEL_MASTER, so connections that drop in a
failover come back on the promoted replica. The URL's credentials are the master's; the sentinels' own password is
FEDGATE_REDIS_SENTINEL_PASSWORD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis import sentinel as sync_sentinel
from redis.asyncio import sentinel as async_sentinel

from gateway_core.errors import ConfigError
from gateway_core.fleet.credentials import embedded_redis_password
from gateway_core.settings import Settings

DEFAULT_SENTINEL_PORT = 26379
# Sentinels answer in microseconds; one that is unreachable must not stall every connect for redis-py's 5 s.
SENTINEL_TIMEOUT_S = 2.0
URL_FORM = "sentinel://[:password@]host:26379[;sentinel://host2:26379...]"


def redis_url(settings: Settings) -> str:
    """The configured URL, else the embedded server's, with its password ($FEDGATE_HOME/redis-password) once one
    has been generated."""
    if settings.redis_url:
        return settings.redis_url
    password = embedded_redis_password(settings)
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{settings.embedded_redis_port}/0"


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith("sentinel://")


def redacted(url: str) -> str:
    """The URL without passwords, for messages."""
    return re.sub(r"//[^@/;]*@", "//", url)


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    username: str | None
    password: str | None
    db: int
    sentinel_password: str | None

    def sentinel_kwargs(self) -> dict[str, Any]:
        # retry None: no retries with backoff per sentinel (redis-py's default), as discovery moves on to the next
        # sentinel and a master connection that found none retries the whole discovery. Plain data (not a Retry
        # object), as kombu (sync) and Flower (asyncio) read these transport options too.
        kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S,
                                  "retry": None}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs

    def master_kwargs(self) -> dict[str, Any]:
        return {"db": self.db, "username": self.username, "password": self.password}


def sentinel_target(settings: Settings) -> SentinelTarget:
    """The sentinels, master and credentials a sentinel:// URL names; ConfigError, saying what is wrong, if bad."""
    url = redis_url(settings)
    parts = [part.strip() for part in url.split(";") if part.strip()]
    sentinels: list[tuple[str, int]] = []
    credentials: tuple[str | None, str | None] = (None, None)
    db = 0
    for index, part in enumerate(parts):
        split = urlsplit(part)
        shown = redacted(part)
        if split.scheme.lower() != "sentinel" or not split.hostname:
            raise ConfigError(f"FEDGATE_REDIS_URL: {shown!r} is not a sentinel URL; list the sentinels as {URL_FORM}")
        if split.query or split.fragment:
            raise ConfigError(f"FEDGATE_REDIS_URL: {shown!r}: sentinel URLs take no ?options; use FEDGATE_* settings")
        try:
            port = split.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ConfigError(f"FEDGATE_REDIS_URL: {shown!r} has a bad port; use {URL_FORM}") from None
        found = (unquote(split.username) if split.username else None,
                 unquote(split.password) if split.password else None)
        if index == 0:
            credentials, db = found, _db(split.path, shown)
        elif found != (None, None) and found != credentials:
            raise ConfigError("FEDGATE_REDIS_URL: the sentinel:// parts carry different passwords; the password is "
                              "the master's, give it once (on the first) or the same on every part")
        sentinels.append((split.hostname, port))
    return SentinelTarget(tuple(sentinels), settings.redis_sentinel_master, credentials[0], credentials[1], db,
                          settings.redis_sentinel_password)


def _db(path: str, shown: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ConfigError(f"FEDGATE_REDIS_URL: {shown!r}: the path must be a database number (/0)")
    return int(text)


def kombu_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's Sentinel transports need beyond the URL (nothing for a plain server)."""
    if not is_sentinel_url(redis_url(settings)):
        return {}
    target = sentinel_target(settings)
    return {"master_name": target.master, "sentinel_kwargs": target.sentinel_kwargs()}


def async_client(settings: Settings, *, max_connections: int | None = None, pool_timeout_s: float = 20.0,
                 **options: Any) -> aioredis.Redis:
    """An asyncio client for the configured Redis. With `max_connections`, a pool of at most that many connections
    where a caller waits up to `pool_timeout_s` for a free one instead of failing."""
    url = redis_url(settings)
    if not is_sentinel_url(url):
        if max_connections is None:
            return aioredis.Redis.from_url(url, **options)
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout_s,
                                                        **options)
        return aioredis.Redis.from_pool(pool)
    target = sentinel_target(settings)
    manager = async_sentinel.Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs())
    kwargs = {**options, **target.master_kwargs(), "connection_class": AsyncExplainedSentinelConnection}
    if max_connections is not None:
        kwargs.update(connection_pool_class=BlockingSentinelPool, max_connections=max_connections,
                      timeout=pool_timeout_s)
    return manager.master_for(target.master, redis_class=aioredis.Redis, **kwargs)


def sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A synchronous client for the configured Redis."""
    url = redis_url(settings)
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = sentinel_target(settings)
    manager = sync_sentinel.Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs())
    return manager.master_for(target.master, redis_class=redis.Redis, connection_class=ExplainedSentinelConnection,
                              **options, **target.master_kwargs())


def check_reachable(settings: Settings) -> None:
    """ConfigError in one line if the configured Redis (through Sentinel: its current master) does not answer."""
    url = redis_url(settings)
    client = sync_client(settings, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        hint = "" if is_sentinel_url(url) else "; start it, or set FEDGATE_REDIS_URL to a Redis that runs"
        raise ConfigError(f"cannot reach Redis at {redacted(url)}: {exc}{hint}") from None
    finally:
        client.close()


class BlockingSentinelPool(async_sentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's master discovery on a bounded pool where callers wait for a free connection: what the workers'
    runtime uses for a plain URL (BlockingConnectionPool), which redis-py does not offer for Sentinel."""


class ExplainedSentinelConnection(sync_sentinel.SentinelManagedConnection):
    """Says what each sentinel answered when none gives a master; redis-py's own message is a wall of reprs."""

    def _connect_retry(self) -> Any:
        try:
            return super()._connect_retry()
        except sync_sentinel.MasterNotFoundError:
            pool = self.connection_pool
            answers = [_answer(client, pool.service_name) for client in pool.sentinel_manager.sentinels]
            raise sync_sentinel.MasterNotFoundError(_no_master(pool.service_name, answers)) from None


class AsyncExplainedSentinelConnection(async_sentinel.SentinelManagedConnection):
    """ExplainedSentinelConnection for asyncio clients."""

    async def _connect_retry(self) -> Any:
        try:
            return await super()._connect_retry()
        except async_sentinel.MasterNotFoundError:
            pool = self.connection_pool
            answers = [await _answer_async(client, pool.service_name) for client in pool.sentinel_manager.sentinels]
            raise async_sentinel.MasterNotFoundError(_no_master(pool.service_name, answers)) from None


def _answer(client: redis.Redis, name: str) -> str:
    try:
        return _describe(client, _state_of(client.sentinel_masters(), name), name)
    except redis.RedisError as exc:
        return f"{_address(client)}: {type(exc).__name__}: {exc}"


async def _answer_async(client: aioredis.Redis, name: str) -> str:
    try:
        return _describe(client, _state_of(await client.sentinel_masters(), name), name)
    except redis.RedisError as exc:
        return f"{_address(client)}: {type(exc).__name__}: {exc}"


def _state_of(masters: dict[str, dict[str, Any]] | list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    if isinstance(masters, dict):
        return masters.get(name)
    return next((state for state in masters if state.get("name") == name), None)  # RESP3 answers a list


def _describe(client: redis.Redis | aioredis.Redis, state: dict[str, Any] | None, name: str) -> str:
    where = _address(client)
    if state is None:
        return f"{where}: monitors no master {name!r}"
    if state.get("is_sdown") or state.get("is_odown") or not state.get("is_master"):
        return f"{where}: reports {name!r} down (a failover may be under way)"
    return f"{where}: reports {name!r} up at {state.get('ip')}:{state.get('port')} now"


def _address(client: redis.Redis | aioredis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _no_master(name: str, answers: list[str]) -> str:
    return (f"no Redis master {name!r} through Sentinel ({'; '.join(answers)}): check that FEDGATE_REDIS_URL lists "
            f"the sentinels ({URL_FORM}), FEDGATE_REDIS_SENTINEL_MASTER the name they monitor, and "
            "FEDGATE_REDIS_SENTINEL_PASSWORD their password if they have one")
