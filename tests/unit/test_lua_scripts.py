"""The Lua scripts in gateway_core/lua: each reads like the Redis docs (a header naming its KEYS and ARGV, which the
body then names), each loads on the real redis-server the session starts, and each is used by the code. Then the
job settle scripts, one per outcome, against Redis: every side effect the outcome owes (and none it does not)."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys, lua
from gateway_core.fleet.embedded_redis import EmbeddedRedis
from gateway_core.jobs.models import JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.store import BATCH_KEY_PREFIX, PAYLOAD_FIELDS, JobRecord, JobStore, delayed_member
from tests.helpers import run_async_scenario

ROOT = Path(__file__).resolve().parents[2]
INCLUDED = sorted({included[: -len(".lua")] for name in lua.names() for included in lua.includes(name)})
SCRIPTS = [name for name in lua.names() if name not in INCLUDED]

# "-- KEYS[1] job_key  the job hash", "-- ARGV[4..] fields  field, value, ...", "-- KEYS[1..n] buckets  ..."
ENTRY = re.compile(r"^--\s+(KEYS|ARGV)\[(\d+)(\.\.\w*)?\]\s+(\w+)\s+\S")
REFERENCE = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
NAMING = re.compile(r"^local (\w+) = ")


@dataclass(frozen=True)
class Entry:
    kind: str  # KEYS or ARGV
    index: int
    open_ended: bool  # "ARGV[4..]": this and every later index
    name: str


@dataclass(frozen=True)
class Parsed:
    header: list[str]
    entries: list[Entry]
    body: list[str]  # code lines after the header, comments removed


def parse(name: str) -> Parsed:
    lines = (Path(lua.__file__).parent / f"{name}.lua").read_text().splitlines()
    header: list[str] = []
    while lines and lines[0].startswith("--"):
        header.append(lines.pop(0))
    entries = []
    for line in header:
        match = ENTRY.match(line)
        if match:
            kind, index, open_ended, entry_name = match.groups()
            entries.append(Entry(kind, int(index), open_ended is not None, entry_name))
    body = [line.split("--", 1)[0].rstrip() for line in lines]
    return Parsed(header, entries, [line for line in body if line])


def covering(entries: list[Entry], kind: str, index: int) -> Entry | None:
    for entry in entries:
        if entry.kind == kind and (entry.index == index or (entry.open_ended and index > entry.index)):
            return entry
    return None


# --- the files ---------------------------------------------------------------------------------------------------


def test_the_scripts_are_found() -> None:
    assert "job_settle_success" in SCRIPTS and "job_settle_failure" in SCRIPTS and "job_settle_move_on" in SCRIPTS
    assert INCLUDED == ["batch_counter"]
    assert len(SCRIPTS) >= 20


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_opens_with_what_it_does_its_keys_and_arguments_and_what_it_returns(name: str) -> None:
    parsed = parse(name)
    assert parsed.header, f"{name}.lua has no header comment"
    assert not ENTRY.match(parsed.header[0]) and len(parsed.header[0]) > 20, (
        f"{name}.lua: the header starts with what the script does"
    )
    assert any(line.startswith("-- Returns") for line in parsed.header), f"{name}.lua: the header says what it returns"
    assert any(e.kind == "KEYS" for e in parsed.entries), f"{name}.lua names no KEYS (a script touches a key)"
    for kind in ("KEYS", "ARGV"):
        declared = [e for e in parsed.entries if e.kind == kind]
        assert [e.index for e in declared] == list(range(1, len(declared) + 1)), (
            f"{name}.lua: {kind} are named in order from 1, without gaps"
        )
        assert all(not e.open_ended for e in declared[:-1]), f"{name}.lua: only the last {kind} entry may be open"
    names = [e.name for e in parsed.entries]
    assert len(names) == len(set(names)), f"{name}.lua names two entries alike"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_and_argument_the_body_uses_is_named_in_the_header_and_then_in_a_local(name: str) -> None:
    parsed = parse(name)
    named: set[Entry] = set()
    for line in parsed.body:
        for kind, index in REFERENCE.findall(line):
            entry = covering(parsed.entries, kind, int(index))
            assert entry is not None, f"{name}.lua uses {kind}[{index}], which its header does not name: {line!r}"
            assert not entry.open_ended, f"{name}.lua reads {kind}[{index}] of an open list by number: {line!r}"
            naming = NAMING.match(line)
            assert naming and naming.group(1) == entry.name, (
                f"{name}.lua: {kind}[{index}] is read only as `local {entry.name} = ...`, not in {line!r}"
            )
            named.add(entry)
    unused = [f"{e.kind}[{e.index}] {e.name}" for e in parsed.entries if not e.open_ended and e not in named]
    assert not unused, f"{name}.lua names {unused} in its header but never reads them"


@pytest.mark.parametrize("name", INCLUDED)
def test_included_files_take_what_they_need_as_parameters(name: str) -> None:
    parsed = parse(name)
    assert parsed.header and parsed.header[0].startswith("-- Included")
    assert not any(REFERENCE.search(line) or "KEYS" in line or "ARGV" in line for line in parsed.body)
    assert all(line.startswith(("local function", " ", "end")) for line in parsed.body), (
        f"{name}.lua only defines local functions"
    )


def test_an_include_is_replaced_by_the_file_and_nothing_is_left_to_fill_in() -> None:
    for name in SCRIPTS:
        text = lua.script(name)
        assert not lua.INCLUDE.search(text), name
        assert "@" not in text, f"{name}.lua looks templated"
        for included in lua.includes(name):
            assert (Path(lua.__file__).parent / included).read_text().rstrip("\n") in text
    counting = [name for name in SCRIPTS if "count_in_batch(" in lua.script(name)]
    assert sorted(counting) == ["dlq_replay", "job_cancel", "job_settle_failure", "job_settle_success"]
    assert all(lua.includes(name) == ["batch_counter.lua"] for name in counting)


def test_scripts_are_read_once_per_process() -> None:
    assert lua.script("job_cancel") is lua.script("job_cancel")


def test_an_unknown_script_is_an_error_that_names_it() -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_script\.lua"):
        lua.script("no_such_script")


def test_every_script_is_used_by_the_code_and_every_use_names_a_script() -> None:
    used: set[str] = set()
    for package in ("gateway_core", "workers", "gateway_api"):
        for path in (ROOT / package).rglob("*.py"):
            if path.parent.name == "lua":
                continue  # the loader's docstring shows a call
            used.update(re.findall(r"""\bscript\(["'](\w+)["']\)""", path.read_text()))
    assert used == set(SCRIPTS)


def test_the_package_ships_the_scripts() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch("lua/job_cancel.lua", pattern) for pattern in package_data.get("gateway_core", []))


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_loads_on_redis(redis_client: redis.Redis, name: str) -> None:
    text = lua.script(name)
    sha = redis_client.script_load(text)
    assert redis_client.script_exists(sha) == [True]


# --- the settle scripts, one per outcome ---------------------------------------------------------------------------

TTL_S = 3600


class Env:
    def __init__(self, client: aioredis.Redis, store: JobStore) -> None:
        self.redis = client
        self.store = store
        self.job_ids: list[str] = []
        self.batch_keys: list[str] = []
        self.members: list[tuple[str, str]] = []  # (sorted set, member) added by the test

    async def claimed(self, lane: str = keys.INTERACTIVE, batch_id: str | None = None) -> tuple[JobRecord, str]:
        record = JobRecord(
            id=new_job_id(), tenant="tenant-a", partner="p1", requested_partner="p1", status=JobStatus.QUEUED,
            attempt=1, created_at=now(), messages=[Message(role="user", content="hello")], lane=lane,
        )
        self.job_ids.append(record.id)
        await self.store.create(record)
        if batch_id is not None:
            await self.redis.hset(keys.job(record.id), "batch_id", batch_id)
            self.batch_keys.append(BATCH_KEY_PREFIX + batch_id)
            await self.redis.hset(BATCH_KEY_PREFIX + batch_id, "status", "in_progress")
        word, token, _ = await self.store.begin_run(record.id, "p1", 1)
        assert word == "ok"
        loaded = await self.store.get(record.id, with_payload=True)
        assert loaded is not None
        return loaded, token

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def cleanup(self) -> None:
        for zset, member in self.members:
            await self.redis.zrem(zset, member)
        for job_id in self.job_ids:
            await self.redis.zrem(keys.DEAD_LETTERS, job_id)
            await self.redis.zrem(keys.RETENTION, job_id)
        if self.job_ids or self.batch_keys:
            await self.redis.delete(*(keys.job(j) for j in self.job_ids), *self.batch_keys)


@pytest.fixture()
def run_env(redis_server: EmbeddedRedis) -> Callable[[Callable[[Env], Awaitable[Any]]], Any]:
    cipher = PayloadCipher([Fernet.generate_key()])

    def run(scenario: Callable[[Env], Awaitable[Any]]) -> Any:
        return run_async_scenario(redis_server.url, lambda c: Env(c, JobStore(c, cipher, TTL_S)), scenario)

    return run


Runner = Callable[[Callable[[Env], Awaitable[Any]]], Any]


async def announced(client: aioredis.Redis, channel: str, settle: Awaitable[bool]) -> list[str]:
    """What `settle` publishes on `channel` (waits for the first message, with a deadline)."""
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    try:
        assert await settle
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                return [str(message["data"])]
        return []
    finally:
        await pubsub.unsubscribe(channel)
        await pubsub.aclose()


def test_success_with_retention_schedules_the_payload_deletion(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(batch_id=f"b_{new_job_id()}")
        before = await env.now_ms()
        settle = env.store.publish_success(record, token, "the answer", Usage(), "p1", retention_s=600)
        assert await announced(env.redis, keys.DONE_CHANNEL, settle) == [record.id]
        after = await env.now_ms()
        raw = await env.redis.hgetall(keys.job(record.id))
        assert raw["status"] == "succeeded" and raw["output"] and raw["messages"] and "run_token" in raw
        score = await env.redis.zscore(keys.RETENTION, record.id)
        assert score is not None and before + 600_000 <= score <= after + 600_000
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S
        assert await env.redis.hgetall(env.batch_keys[0]) == {"status": "in_progress", "n_succeeded": "1"}
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is None

    run_env(scenario)


def test_success_with_no_retention_drops_the_payload_and_sends_the_output_only_to_waiters(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        settle = env.store.publish_success(record, token, "the answer", Usage(), "p1", retention_s=0,
                                           placeholder_map="{}")
        [message] = await announced(env.redis, keys.DONE_CHANNEL, settle)
        job_id, _, sealed = message.partition("|")
        assert job_id == record.id and env.store.cipher.decrypt(sealed.encode()) == "the answer"
        raw = await env.redis.hgetall(keys.job(record.id))
        assert raw["status"] == "succeeded" and raw["payload_retained"] == "0"
        assert not set(PAYLOAD_FIELDS) & set(raw)
        assert await env.redis.zscore(keys.RETENTION, record.id) is None

    run_env(scenario)


def test_a_batch_job_is_announced_on_the_batch_channel(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(lane=keys.BATCH)
        settle = env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up")
        assert await announced(env.redis, keys.done_channel(keys.BATCH), settle) == [record.id]

    run_env(scenario)


@pytest.mark.parametrize("status", [JobStatus.DEAD_LETTERED])
def test_failure_counts_in_the_batch_and_only_a_dead_letter_is_listed(run_env: Runner, status: JobStatus) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(batch_id=f"b_{new_job_id()}")
        record.cost_nanousd = 1234
        settle = env.store.finish_unsuccessful(record, token, status, "gave up")
        assert await announced(env.redis, keys.DONE_CHANNEL, settle) == [record.id]
        raw = await env.redis.hgetall(keys.job(record.id))
        assert (raw["status"], raw["error"], raw["cost_nanousd"]) == (status.value, "gave up", "1234")
        listed = await env.redis.zscore(keys.DEAD_LETTERS, record.id) is not None
        assert listed is (status is JobStatus.DEAD_LETTERED)
        assert 0 < await env.redis.ttl(keys.job(record.id)) <= TTL_S
        assert await env.redis.hget(env.batch_keys[0], "n_unsuccessful") == "1"
        assert await env.redis.zscore(keys.RETENTION, record.id) is None

    run_env(scenario)


def test_move_on_is_not_an_ending(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(lane=keys.BATCH, batch_id=f"b_{new_job_id()}")
        member = delayed_member(record.id, "p2", 2)
        env.members.append((keys.delayed(keys.BATCH), member))
        await env.redis.delete(keys.delayed_wake(keys.BATCH))
        assert await env.store.move_on(record, token, status=JobStatus.QUEUED, partner="p2", attempt=2,
                                       delay_s=600.0, reservation="p2:2")
        assert await env.redis.zscore(keys.delayed(keys.BATCH), member) is not None
        assert await env.redis.lrange(keys.delayed_wake(keys.BATCH), 0, -1) == ["1"]
        raw = await env.redis.hgetall(keys.job(record.id))
        assert (raw["status"], raw["partner"], raw["attempt"], raw["reservation"]) == ("queued", "p2", "2", "p2:2")
        assert await env.redis.ttl(keys.job(record.id)) > 0  # the record's TTL from creation, not a finished one's
        assert await env.redis.hgetall(env.batch_keys[0]) == {"status": "in_progress"}
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is None

    run_env(scenario)


def test_only_one_of_three_racing_outcomes_settles(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        results = await asyncio.gather(
            env.store.publish_success(record, token, "out", Usage(), "p1"),
            env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "gave up"),
            env.store.move_on(record, token, status=JobStatus.RETRYING, partner="p1", attempt=2, delay_s=600.0),
        )
        env.members.append((keys.DELAYED, delayed_member(record.id, "p1", 2)))
        assert sorted(results) == [False, False, True]

    run_env(scenario)
