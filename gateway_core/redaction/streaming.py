"""Placeholders restored in a stream of text deltas, even when one arrives split across deltas.

The partner writes `<EMAIL_ADDRESS_1>` in whatever pieces its tokenizer cuts (`<EMAIL`, `_ADDRESS`, `_1>`). Text
is let out up to the last `<` that could still open a placeholder (the redactor's format, `<TYPE_N>`); that tail is
held back until it either completes (and is restored) or can no longer be one (and goes out as it is). Restoring
each released piece gives the same text as restoring the whole answer at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A prefix of `<TYPE_N>` (gateway_core.redaction.anonymize's placeholder pattern), anchored at the end of the text.
_OPEN_PLACEHOLDER = re.compile(r"<(?:[A-Z][A-Z0-9_]*)?$")
# A placeholder longer than this is not one the redactor issues: stop holding it back.
MAX_PLACEHOLDER_CHARS = 96


class StreamRestorer:
    """`feed` each delta, get the restored text that can go out now; `flush` at the end for the rest."""

    def __init__(self, restore: Callable[[str], str]) -> None:
        self._restore = restore
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = _held_from(text)
        self._held = text[cut:]
        return self._restore(text[:cut]) if cut else ""

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._restore(text) if text else ""


def _held_from(text: str) -> int:
    """Where the tail that might be the start of a placeholder begins (len(text) when nothing is held)."""
    opening = text.rfind("<")
    if opening == -1 or len(text) - opening > MAX_PLACEHOLDER_CHARS:
        return len(text)
    tail = text[opening:]
    # `<TYPE_12` without its `>` yet: TYPE holds underscores and digits, so any such run can still grow into one.
    return opening if _OPEN_PLACEHOLDER.match(tail) else len(text)
