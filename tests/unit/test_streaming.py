"""Streaming, below the fleet: the SSE decoder, the split-placeholder restorer, the simulator's streams as the
official SDKs read them, and each adapter's streamed call against the simulator served in-process on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import uvicorn

from gateway_core.config import PartnerConfig
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.base import CallRequest, HttpPool, Outcome
from gateway_core.partners.adapters.sse import SseDecoder, SseEvent, encode_event
from gateway_core.partners.adapters.streamed import StreamedResponse, call_streamed
from gateway_core.redaction.anonymize import restore_placeholders
from gateway_core.redaction.mapping import PlaceholderMap
from gateway_core.redaction.streaming import StreamRestorer
from partner_simulator import PartnerBehaviour, SimulatorConfig, create_app
from tests.helpers import free_port, wait_for

# --- SSE decoding ------------------------------------------------------------------------------------------------

WIRE = (
    "\ufeff: keep-alive comment\r\n"
    "event: message_start\r\n"
    'data: {"a": "é€😀"}\r\n'
    "\r\n"
    "data: line one\n"
    "data: line two\n"
    "id: 7\n"
    "retry: 100\n"
    "\n"
    "data:no-space\r"
    "\r"
    "event: lonely\n\n"
    "data: [DONE]\n\n"
).encode()
EXPECTED = [
    SseEvent("message_start", '{"a": "é€😀"}'),
    SseEvent("message", "line one\nline two", "7"),
    SseEvent("message", "no-space", "7"),
    SseEvent("message", "[DONE]", "7"),
]


def _decode(pieces: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def test_sse_events_are_decoded_as_the_standard_says() -> None:
    assert _decode([WIRE]) == EXPECTED


def test_sse_events_are_the_same_however_the_bytes_are_cut() -> None:
    for cut in range(1, len(WIRE)):  # a UTF-8 character, a CRLF pair, a field name: every cut
        assert _decode([WIRE[:cut], WIRE[cut:]]) == EXPECTED, cut
    assert _decode([bytes([b]) for b in WIRE]) == EXPECTED


def test_an_event_without_its_blank_line_is_dropped_at_the_end() -> None:
    assert _decode([b"data: complete\n\ndata: cut short"]) == [SseEvent("message", "complete")]


def test_encoded_events_decode_back() -> None:
    wire = encode_event('{"x": 1}\nsecond', "delta") + encode_event("[DONE]")
    assert _decode([wire]) == [SseEvent("delta", '{"x": 1}\nsecond'), SseEvent("message", "[DONE]")]


# --- restoring placeholders in a stream --------------------------------------------------------------------------


def _mapping() -> PlaceholderMap:
    mapping = PlaceholderMap()
    assert mapping.placeholder_for("EMAIL_ADDRESS", "bob@example.org") == "<EMAIL_ADDRESS_1>"
    assert mapping.placeholder_for("PERSON", "Ada") == "<PERSON_1>"
    return mapping


def _restore(mapping: PlaceholderMap) -> Any:
    return lambda text: restore_placeholders(text, mapping, {"EMAIL_ADDRESS", "PERSON"})


def _streamed(text: str, cuts: list[int], mapping: PlaceholderMap) -> str:
    restorer = StreamRestorer(_restore(mapping))
    bounds = [0, *cuts, len(text)]
    out = [restorer.feed(text[a:b]) for a, b in itertools.pairwise(bounds)]
    return "".join(out) + restorer.flush()


PARTNER_TEXT = "Hi <PERSON_1>, mail <EMAIL_ADDRESS_1> (not <EMAIL_ADDRESS_9>, 1 < 2 <b>ok</b>) <PERSON_1>"


def test_a_placeholder_split_anywhere_is_restored() -> None:
    mapping = _mapping()
    whole = _restore(mapping)(PARTNER_TEXT)
    assert whole == "Hi Ada, mail bob@example.org (not <EMAIL_ADDRESS_9>, 1 < 2 <b>ok</b>) Ada"
    for cut in range(1, len(PARTNER_TEXT)):
        assert _streamed(PARTNER_TEXT, [cut], mapping) == whole, cut
    for size in (1, 2, 3, 5):
        cuts = list(range(size, len(PARTNER_TEXT), size))
        assert _streamed(PARTNER_TEXT, cuts, mapping) == whole, size


def test_no_delta_ever_shows_part_of_a_placeholder() -> None:
    restorer = StreamRestorer(_restore(_mapping()))
    shown = [restorer.feed(ch) for ch in "mail <EMAIL_ADDRESS_1> now"] + [restorer.flush()]
    assert not any("<" in piece or "_1" in piece for piece in shown)
    assert "".join(shown) == "mail bob@example.org now"


def test_text_that_cannot_be_a_placeholder_is_not_held_back() -> None:
    restorer = StreamRestorer(_restore(_mapping()))
    assert restorer.feed("a < b") == "a < b"
    assert restorer.feed(" <b") == " <b"  # lower case: no placeholder starts so
    assert restorer.feed(" <") == " "  # could still open one
    assert restorer.feed("i>") == "<i>"
    assert restorer.feed(" <PERSON_1") == " "
    assert restorer.feed("2>") == "<PERSON_12>"  # not issued: left as it is
    assert restorer.feed("<" + "A" * 200) == "<" + "A" * 200  # longer than any placeholder the redactor issues


# --- the simulator's streams, read by the official SDKs ----------------------------------------------------------


class _Served:
    def __init__(self, config: SimulatorConfig) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port,
                                                    log_level="warning", log_config=None, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Served:
        self.thread.start()
        wait_for(lambda: self.server.started, 10, 0.01, what="the simulator to start")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with _Served(SimulatorConfig.demo()) as server:
        yield server.url


@pytest.fixture()
def sim(served: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served, timeout=10) as client:
        for name in ("sim-openai", "sim-anthropic", "sim-azure", "sim-gemini"):
            client.put(f"/_sim/partners/{name}", json={**PartnerBehaviour().model_dump(), "stream_chunk_chars": 3})
        client.post("/_sim/reset")
        yield client


def test_the_openai_sdk_reads_the_simulators_stream(served: str, sim: httpx.Client) -> None:
    client = openai.OpenAI(base_url=f"{served}/sim-openai/v1", api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "hello"}],
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated reply from sim-openai: hello"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    with client.chat.completions.stream(model="sim-gpt", messages=[{"role": "user", "content": "hello"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == text


def test_the_azure_sdk_reads_the_simulators_stream(served: str, sim: httpx.Client) -> None:
    client = openai.AzureOpenAI(azure_endpoint=f"{served}/sim-azure", api_key="x", api_version="2024-10-21",
                                max_retries=0)
    chunks = list(client.chat.completions.create(model="sim-gpt-deployment", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Simulated reply from sim-azure: hi"


def test_the_anthropic_sdk_reads_the_simulators_stream(served: str, sim: httpx.Client) -> None:
    client = anthropic.Anthropic(base_url=f"{served}/sim-anthropic", api_key="x", max_retries=0)
    with client.messages.stream(model="sim-claude", max_tokens=50,
                                messages=[{"role": "user", "content": "hello"}]) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(pieces) == "Simulated reply from sim-anthropic: hello" and len(pieces) > 5
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


def test_the_gemini_stream_is_server_sent_generate_content_responses(served: str, sim: httpx.Client) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    answer = httpx.post(f"{served}/sim-gemini/v1beta/models/sim-gemini-flash:streamGenerateContent?alt=sse",
                        json=body, headers={"x-goog-api-key": "x"})
    assert answer.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(event.data) for event in _decode([answer.content])]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == \
        "Simulated reply from sim-gemini: hello"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and len(chunks) > 5


# --- each adapter's streamed call --------------------------------------------------------------------------------

PARTNERS = {
    "sim-openai": {"adapter": "openai", "base_url": "{url}/sim-openai/v1", "model": "sim-gpt"},
    "sim-anthropic": {"adapter": "anthropic", "base_url": "{url}/sim-anthropic", "model": "sim-claude"},
    "sim-azure": {"adapter": "azure_openai", "base_url": "{url}/sim-azure", "model": "sim-gpt-deployment"},
    "sim-gemini": {"adapter": "gemini", "base_url": "{url}/sim-gemini", "model": "sim-gemini-flash"},
}


async def _stream(served: str, partner: str, prompt: str = "hello", fail_in_sink: bool = False,
                  timeout_s: float = 5) -> tuple[StreamedResponse, list[str]]:
    spec = {**PARTNERS[partner], "name": partner, "api_key": "k", "timeout_s": timeout_s}
    spec["base_url"] = spec["base_url"].format(url=served)
    pool = HttpPool(10)
    adapter = adapter_for(PartnerConfig.model_validate(spec), pool)
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)
        if fail_in_sink and len(deltas) == 2:
            raise LookupError("the reader went away")

    try:
        request = CallRequest(messages=[Message(role="user", content=prompt)])
        return await call_streamed(adapter, adapter.stream_body(request), sink), deltas
    finally:
        await pool.aclose()


@pytest.mark.parametrize("partner", list(PARTNERS))
def test_each_adapter_relays_its_partners_stream(served: str, sim: httpx.Client, partner: str) -> None:
    result, deltas = asyncio.run(_stream(served, partner))
    assert result.response.outcome is Outcome.OK, result.response.error
    assert result.response.text == "".join(deltas) == f"Simulated reply from {partner}: hello"
    assert len(deltas) > 5 and result.streamed_chars == len(result.response.text)
    assert result.finish_reason == "stop"
    assert result.response.usage.prompt_tokens > 0 and result.response.usage.completion_tokens > 0


@pytest.mark.parametrize("partner", ["sim-openai", "sim-anthropic", "sim-gemini"])
def test_a_stream_that_stops_before_its_end_is_retryable(served: str, sim: httpx.Client, partner: str) -> None:
    sim.put(f"/_sim/partners/{partner}", json={"stream_cut_after_chars": 9})
    result, deltas = asyncio.run(_stream(served, partner))
    assert result.response.outcome is Outcome.RETRYABLE
    assert "".join(deltas) == f"Simulated reply from {partner}: hello"[:9]
    assert result.streamed_chars == 9


def test_an_error_before_the_stream_is_the_partners_status(served: str, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 529})
    result, deltas = asyncio.run(_stream(served, "sim-anthropic"))
    assert (result.response.outcome, result.response.status_code, deltas) == (Outcome.RETRYABLE, 529, [])
    sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 400})
    assert asyncio.run(_stream(served, "sim-anthropic"))[0].response.outcome is Outcome.FATAL


def test_a_sink_that_gives_up_stops_the_partners_stream(served: str, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-openai", json={"stream_token_delay_ms": 20, "stream_chunk_chars": 1})
    with pytest.raises(LookupError):
        asyncio.run(_stream(served, "sim-openai", prompt="x" * 200, fail_in_sink=True))

    def cut() -> dict[str, Any]:
        stats: dict[str, Any] = sim.get("/_sim/stats").json()["partners"]["sim-openai"]
        return stats

    wait_for(lambda: cut()["streams_cut"] == 1, 5, 0.02, what="the partner's stream to be cut")
    assert cut()["streams_open"] == 0


def test_the_deadline_holds_for_a_slow_stream(served: str, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-openai", json={"stream_token_delay_ms": 100, "stream_chunk_chars": 1})
    started = time.monotonic()
    result, deltas = asyncio.run(_stream(served, "sim-openai", prompt="x" * 100, timeout_s=0.5))
    assert result.response.outcome is Outcome.RETRYABLE and "timed out" in (result.response.error or "")
    assert time.monotonic() - started < 2 and 0 < len(deltas) < 20
