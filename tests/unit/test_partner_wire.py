"""Adapters against real sockets: every way a partner's answer can arrive (or not) ends in an outcome.

The partner is tests/wire_servers.py, a loopback HTTP server that misbehaves at the byte level. The client is the
worker's own HTTP stack (gateway_core.partners.adapters.base.HttpPool: httpx over aiohttp), not a mock transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_core.config import PartnerConfig
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters.base import CallRequest, HttpPool, Outcome, PartnerResponse
from gateway_core.partners.adapters.gemini import GeminiAdapter
from gateway_core.partners.adapters.openai import OpenAIChatAdapter
from gateway_core.partners.adapters.transport import ACCEPT_ENCODING
from tests import wire_servers as wire

REQUEST = CallRequest(messages=[Message(role="user", content="hello")])


def call(url: str, *, timeout_s: float = 5.0, max_response_bytes: int = 1 << 20, times: int = 1,
         ) -> list[PartnerResponse]:
    config = PartnerConfig(name="wire", adapter="openai", base_url=f"{url}/v1", model="wire-model",
                           api_key="sk-wire", timeout_s=timeout_s)

    async def go() -> list[PartnerResponse]:
        pool = HttpPool(16, max_response_bytes)
        try:
            adapter = OpenAIChatAdapter(config, pool)
            return [await adapter.call(REQUEST) for _ in range(times)]
        finally:
            await pool.aclose()

    return asyncio.run(go())


def one(url: str, **kwargs: Any) -> PartnerResponse:
    return call(url, **kwargs)[0]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_compressed_answers_are_read_once(encoding: str, chunked: bool) -> None:
    with wire.wire_server(wire.answer(encoding, chunked=chunked)) as server:
        result = one(server.url)
    assert (result.outcome, result.text, result.error) == (Outcome.OK, "wire says hi", None)
    assert result.usage.total_tokens == 8
    advertised = server.requests[0].headers["accept-encoding"]
    assert encoding in advertised and advertised == ACCEPT_ENCODING


def test_every_advertised_encoding_is_one_we_decode() -> None:
    assert {e.strip() for e in ACCEPT_ENCODING.split(",")} == {"gzip", "deflate", "br", "zstd"}


def test_a_server_closing_each_connection_after_its_answer() -> None:
    with wire.wire_server(wire.answer("gzip", close=True)) as server:
        results = call(server.url, times=5)
    assert [r.outcome for r in results] == [Outcome.OK] * 5
    assert server.connections == 5


def test_keep_alive_connections_are_reused() -> None:
    with wire.wire_server(wire.answer("gzip")) as server:
        results = call(server.url, times=5)
    assert [r.outcome for r in results] == [Outcome.OK] * 5
    assert server.connections == 1


def test_an_html_502_from_a_load_balancer_is_retryable() -> None:
    with wire.wire_server(wire.HTML_502) as server:
        result = one(server.url)
    assert (result.outcome, result.status_code) == (Outcome.RETRYABLE, 502)
    assert result.error == "HTTP 502: partner returned an error (text/html body)"


def test_a_429_with_retry_after_and_a_non_json_body() -> None:
    with wire.wire_server(wire.raw("429 Too Many Requests", b"slow down", "text/plain", {"Retry-After": "3"})) as s:
        result = one(s.url)
    assert (result.outcome, result.status_code, result.retry_after_s) == (Outcome.RETRYABLE, 429, 3.0)


@pytest.mark.parametrize(
    ("behaviour", "error_starts"),
    [
        (wire.reset_before_answer, "connection error: "),
        (wire.reset_mid_body, "connection error: ReadError"),
        (wire.truncated_body, "connection error: ReadError"),
        (wire.not_really_gzip, "undecodable response body"),
        (wire.raw("200 OK", b"{not json", "application/json"), "malformed response body (not JSON"),
        (wire.raw("200 OK", b"<html>maintenance</html>", "text/html"), "malformed response body (not JSON, "
                                                                       "content-type text/html)"),
        (wire.raw("200 OK", b"[" * 100_000, "application/json"), "malformed response body (not JSON"),
        (wire.raw("200 OK", b'{"choices": []}', "application/json"), "unreadable response: IndexError"),
    ],
    ids=["reset-before-answer", "reset-mid-body", "truncated", "bad-gzip", "invalid-json", "wrong-content-type",
         "json-nested-too-deep", "json-without-choices"],
)
def test_broken_answers_are_retryable(behaviour: wire.Behaviour, error_starts: str) -> None:
    with wire.wire_server(behaviour) as server:
        result = one(server.url)
    assert result.outcome is Outcome.RETRYABLE
    assert result.error is not None and result.error.startswith(error_starts), result.error


def test_connection_refused_is_retryable() -> None:
    result = one(f"http://127.0.0.1:{wire.closed_port()}")
    assert result.outcome is Outcome.RETRYABLE
    assert result.error is not None and result.error.startswith("connection error: ConnectError")


@pytest.mark.parametrize("encoding", ["identity", "gzip", "zstd"])
def test_an_answer_over_the_size_cap_is_fatal_and_not_read_to_the_end(encoding: str) -> None:
    # With gzip/zstd the wire carries a few kilobytes that expand to 8 MB: the cap applies to the decoded body.
    with wire.wire_server(wire.oversized(8 << 20, encoding)) as server:
        result = one(server.url, max_response_bytes=64 << 10)
    assert result.outcome is Outcome.FATAL
    assert result.error == "the answer is over the 65,536-byte cap"


def test_a_tls_error_is_fatal(tmp_path: Path) -> None:
    with wire.wire_server(wire.answer(), tls=wire.self_signed_tls(tmp_path)) as server:
        result = one(server.url)
    assert result.outcome is Outcome.FATAL
    assert result.error is not None and result.error.startswith("TLS error: "), result.error


def test_a_body_that_drips_is_cut_at_the_total_deadline() -> None:
    # Each byte arrives well inside any read timeout; the whole answer would take ~40 s.
    with wire.wire_server(wire.drip(0.2)) as server:
        started = time.monotonic()
        result = one(server.url, timeout_s=1.0)
        elapsed = time.monotonic() - started
    assert (result.outcome, result.error) == (Outcome.RETRYABLE, "timed out after 1s")
    assert elapsed < 10, f"the deadline did not hold: {elapsed:.1f}s"


def test_an_answer_that_never_starts_is_cut_at_the_deadline() -> None:
    with wire.wire_server(wire.slow(30)) as server:
        result = one(server.url, timeout_s=0.5)
    assert (result.outcome, result.error) == (Outcome.RETRYABLE, "timed out after 0.5s")


def content_filtered() -> bytes:
    return json.dumps({
        "id": "chatcmpl-cf", "object": "chat.completion", "created": 1, "model": "wire-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
    }).encode()


def test_an_answer_withheld_by_a_content_filter_is_fatal_not_retried() -> None:
    # Azure OpenAI's content filter: a 200 with no content. Asking the same partner again cannot help.
    with wire.wire_server(wire.raw("200 OK", content_filtered(), "application/json")) as server:
        result = one(server.url)
    assert (result.outcome, result.error) == (Outcome.FATAL, "partner refused: content filter (finish_reason "
                                                             "content_filter)")


def test_gemini_says_how_long_to_wait_in_the_error_body() -> None:
    body = json.dumps({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
                                 "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                              "retryDelay": "17s"}]}}).encode()
    config = PartnerConfig(name="gem", adapter="gemini", base_url="http://127.0.0.1:1", model="gemini-x")

    async def go() -> PartnerResponse:
        pool = HttpPool(1)
        try:
            return GeminiAdapter(config, pool).interpret(429, body, httpx.Headers({"content-type": "application/json"}))
        finally:
            await pool.aclose()

    result = asyncio.run(go())
    assert (result.outcome, result.retry_after_s) == (Outcome.RETRYABLE, 17.0)
