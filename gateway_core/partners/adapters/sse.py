"""Server-sent events, decoded incrementally as the bytes arrive (the HTML standard's event-stream rules).

Partners stream their answers this way (OpenAI and Azure `data:` lines ending with `data: [DONE]`, Anthropic's named
events, Gemini's `alt=sse`). Bytes come in whatever pieces the network cuts them into: a line, a UTF-8 character
or a CRLF pair may be split across two reads, so the decoder keeps the unfinished tail until the rest arrives.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "message" when the stream names none
    data: str
    id: str | None = None


class SseDecoder:
    """Feed bytes as they come; get back the events they complete."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._skip_lf = False  # the previous piece ended in CR: a LF starting this one is the same line break
        self._first = True
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        return self._lines(self._text.decode(chunk))

    def close(self) -> list[SseEvent]:
        """End of stream: a last line without its line break still counts; an event without its blank line does
        not (the standard drops it)."""
        events = self._lines(self._text.decode(b"", final=True))
        if self._pending:
            self._line(self._pending)
            self._pending = ""
        return events

    def _lines(self, text: str) -> list[SseEvent]:
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        events: list[SseEvent] = []
        buffer = self._pending + text
        start = 0
        length = len(buffer)
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, after = cr, cr + 1
                if after < length and buffer[after] == "\n":
                    after += 1
                elif after == length:
                    self._skip_lf = True
            else:
                end, after = lf, lf + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alives)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # "retry" and unknown fields are ignored

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data = "", []
        return event


def encode_event(data: str, event: str | None = None) -> bytes:
    """One event on the wire; each line of `data` becomes its own `data:` field."""
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (head + body + "\n").encode()
