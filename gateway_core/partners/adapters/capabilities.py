"""Which request options each adapter honours, declared once: the API refuses the others up front (a 400 naming
the field) and an adapter handed one anyway (a fallback partner that cannot honour it) fails the call as FATAL,
so the fallback chain moves on. Nothing is silently dropped."""

from __future__ import annotations

from gateway_core.jobs.chat_options import ChatOptions
from gateway_core.jobs.models import Message

# Options every adapter takes through the existing machinery: max_tokens and temperature are CallRequest fields,
# a json response_format is an inline output contract (validated by the worker whatever the partner).
_EVERYWHERE = frozenset({"response_format"})
_OPENAI = _EVERYWHERE | {"top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user", "logprobs",
                         "top_logprobs", "tools", "tool_choice", "images"}

HONOURED: dict[str, frozenset[str]] = {
    "openai": _OPENAI,
    "azure_openai": _OPENAI,
    # Anthropic: stop_sequences, top_p, metadata.user_id, tools; no seed, penalties or logprobs.
    "anthropic": _EVERYWHERE | {"top_p", "stop", "user", "tools", "tool_choice", "images"},
    # Gemini: generationConfig's topP, stopSequences, seed, penalties; functionDeclarations; no end-user field and
    # no OpenAI-shaped logprobs.
    "gemini": _EVERYWHERE | {"top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "tools",
                             "tool_choice", "images"},
    # The generic JSON partner has no tools, images or sampling options beyond temperature.
    "generic": _EVERYWHERE,
}


# Adapters whose structured output is itself a forced tool (Anthropic): with it, the request's own tools could never
# be called, so the two are refused together (up front by the API, as fatal by the adapter).
NO_TOOLS_WITH_STRUCTURED_OUTPUT = frozenset({"anthropic"})


class UnsupportedOption(ValueError):
    """A request option the partner's adapter cannot honour; the message names the field (never its value)."""

    def __init__(self, field: str, adapter: str) -> None:
        super().__init__(f"{field}: the {adapter} adapter does not support this field")
        self.field = field


def requested(messages: list[Message], options: ChatOptions | None) -> list[str]:
    """The honour-or-refuse fields a request uses: its options, and "images" when a message has an image part."""
    found = options.requested() if options is not None else []
    if any(message.images() for message in messages):
        found.append("images")
    if any(message.tool_calls or message.role == "tool" for message in messages) and "tools" not in found:
        found.append("tools")  # a conversation with tool turns needs an adapter that can express them
    return found


def first_unhonoured(adapter: str, messages: list[Message], options: ChatOptions | None) -> str | None:
    honoured = HONOURED.get(adapter, frozenset())
    return next((field for field in requested(messages, options) if field not in honoured), None)


def check_honoured(adapter: str, messages: list[Message], options: ChatOptions | None) -> None:
    """Raise UnsupportedOption for the first field `adapter` cannot honour."""
    field = first_unhonoured(adapter, messages, options)
    if field is not None:
        raise UnsupportedOption(field, adapter)
