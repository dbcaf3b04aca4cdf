"""Batch files in Redis stay bounded: content in encrypted pieces of at most FILE_CHUNK_CHARS characters, and a
batch's output file capped, the results past the cap in the error file naming the job that still holds each."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway_core.jobs.batches import FILE_CHUNK_CHARS, BatchStore, file_key
from gateway_core.jobs.models import JobStatus
from tests.integration.test_batches import Env


@pytest.fixture()
def env(redis_url: str) -> Iterator[Env]:
    environment = Env(redis_url)
    yield environment
    environment.run(environment.redis.aclose)
    environment.loop.close()


def test_a_large_file_is_stored_in_bounded_encrypted_pieces(env: Env) -> None:
    batches = BatchStore(env.store, env.producer, max_file_bytes=8 * FILE_CHUNK_CHARS)
    text = "".join(f"line {i} é\n" for i in range(3 * FILE_CHUNK_CHARS // 10))  # ~3 pieces, multi-byte characters
    info = env.run(lambda: batches.create_file("unit-tenant", "big.jsonl", "batch", text.encode()))
    stored: dict[str, str] = env.run(lambda: env.redis.hgetall(file_key(info.id)))  # type: ignore[arg-type,return-value]
    pieces = {name: value for name, value in stored.items() if name.startswith("content")}
    assert int(stored["parts"]) == len(pieces) >= 3
    # Fernet of at most 1 MiB of UTF-8: base64 of it, so well under 1.5 MB per value, whatever the file's size
    assert max(len(value) for value in pieces.values()) < 1.5 * 1024 * 1024
    assert all("line 1 " not in value for value in pieces.values())
    assert env.run(lambda: batches.file_content("unit-tenant", info.id)) == text.encode()
    assert env.run(lambda: batches.file_content("someone-else", info.id)) is None


def test_output_past_the_cap_goes_to_the_error_file_naming_the_job(env: Env) -> None:
    batches = BatchStore(env.store, env.producer, max_output_bytes=1500)
    job_ids = [f"job_{i:024d}" for i in range(4)]
    rows = [[JobStatus.SUCCEEDED.value, env.store.cipher.encrypt("answer " + "x" * 400).decode(), None, "p", None,
             "1.0", f"c{i}", "m", "1", PARTNER_FIELD, PARTNER_FIELD, "[]", None, None, None, None] for i in range(4)]
    output, errors, completed, failed = batches._build_results(job_ids, rows, [])
    lines = [json.loads(line) for line in output.decode().splitlines()]
    assert len(output) <= 1500 and completed == len(lines) >= 1
    refused = [json.loads(line) for line in errors.decode().splitlines()]
    assert failed == len(refused) == 4 - completed
    for entry in refused:
        assert entry["error"]["code"] == "output_too_large"
        job_id = job_ids[int(entry["custom_id"][1:])]
        assert f"GET /v1/jobs/{job_id}" in entry["error"]["message"]


PARTNER_FIELD = "unit-batch-partner"
