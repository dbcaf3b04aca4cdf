"""A job's answer as it is generated: a Redis stream per job (keys.job_stream), written by the worker's run and read
by whichever API process holds the client's request (XREAD BLOCK), or by followers of GET /v1/jobs/{id}/stream.

Entries, in order:
- `delta`: restored output text (encrypted like every payload at rest), written only once the partner sent some,
  so a retry or a fallback before the first token leaves nothing behind;
- `error`: the run failed after its deltas went out (the job goes on with its normal routing);
- `finish`: the answer is complete (finish reason, usage, and the tool calls it asks for, restored and encrypted:
  they are not streamed piecemeal);
- `end`: the job reached its final status (written after it settled; the stream then lingers briefly).
Every entry but `end` is written through job_stream_append.lua, which checks the writer still holds the job's run,
so a superseded or cancelled run cannot write into the stream; a `False` answer tells the run to stop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import TypeAdapter

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs.chat_options import ToolCall
from gateway_core.jobs.models import Usage

EntryKind = Literal["delta", "error", "finish", "end"]
MAX_ENTRIES = 10_000  # approximate cap (XADD MAXLEN ~): a reader that fell this far behind lost the start
TTL_S = 900  # while the run writes; each entry renews it
LINGER_S = 60  # after the job ended, for a follower arriving late
_TOOL_CALLS = TypeAdapter(list[ToolCall])


@dataclass(frozen=True)
class StreamEntry:
    id: str
    kind: EntryKind
    attempt: int = 0
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    tool_calls: list[ToolCall] | None = None  # on `finish`
    run: str = ""  # which run wrote it (a digest of its token): a reader that saw one run's deltas stops at another's


def run_id(token: str) -> str:
    return hashlib.blake2s(token.encode(), digest_size=6).hexdigest()


class JobStream:
    def __init__(self, client: aioredis.Redis, cipher: PayloadCipher) -> None:
        self.redis = client
        self.cipher = cipher
        self._append = client.register_script(script("job_stream_append"))

    async def _write(self, job_id: str, token: str, fields: dict[str, str]) -> bool:
        flat = [item for pair in {**fields, "r": run_id(token)}.items() for item in pair]
        added = await self._append(keys=[keys.job(job_id), keys.job_stream(job_id)],
                                   args=[token, str(MAX_ENTRIES), str(TTL_S), *flat])
        return bool(added)

    async def delta(self, job_id: str, token: str, attempt: int, text: str) -> bool:
        return await self._write(job_id, token, {"k": "delta", "a": str(attempt),
                                                 "t": self.cipher.encrypt(text).decode()})

    async def failed(self, job_id: str, token: str, attempt: int, error: str) -> bool:
        return await self._write(job_id, token, {"k": "error", "a": str(attempt), "e": error})

    async def finish(self, job_id: str, token: str, attempt: int, finish_reason: str, usage: Usage,
                     tool_calls: list[ToolCall] | None = None) -> bool:
        fields = {"k": "finish", "a": str(attempt), "f": finish_reason, "u": usage.model_dump_json()}
        if tool_calls:
            fields["c"] = self.cipher.encrypt(_TOOL_CALLS.dump_json(tool_calls).decode()).decode()
        return await self._write(job_id, token, fields)

    async def end(self, job_id: str, linger_s: int = LINGER_S) -> None:
        """The job settled: wake its readers, and let the stream go `linger_s` seconds later."""
        stream = keys.job_stream(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"k": "end"}, maxlen=MAX_ENTRIES, approximate=True)
            pipe.expire(stream, max(1, linger_s))
            await pipe.execute()

    async def read(self, job_id: str, after: str = "0-0", block_ms: int | None = None) -> list[StreamEntry]:
        """Entries after the id `after`; with `block_ms`, wait up to that long for the first one."""
        reply: Any = await self.redis.xread({keys.job_stream(job_id): after}, count=1000, block=block_ms)
        entries: list[StreamEntry] = []
        for _stream, items in reply or []:
            for entry_id, fields in items:
                entries.append(self._decode(entry_id, fields))
        return entries

    def _decode(self, entry_id: str, fields: dict[str, str]) -> StreamEntry:
        kind = fields.get("k", "end")
        attempt, run = int(fields.get("a") or 0), fields.get("r", "")
        if kind == "delta":
            return StreamEntry(entry_id, "delta", attempt, text=self.cipher.decrypt(fields["t"].encode()), run=run)
        if kind == "finish":
            usage = Usage.model_validate_json(fields["u"]) if fields.get("u") else None
            calls = _TOOL_CALLS.validate_json(self.cipher.decrypt(fields["c"].encode())) if fields.get("c") else None
            return StreamEntry(entry_id, "finish", attempt, finish_reason=fields.get("f") or "stop", usage=usage,
                               tool_calls=calls, run=run)
        if kind == "error":
            return StreamEntry(entry_id, "error", attempt, error=fields.get("e") or "the partner call failed", run=run)
        return StreamEntry(entry_id, "end", attempt, run=run)
