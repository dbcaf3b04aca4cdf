"""The per-job placeholder map: value <-> placeholder, numbered per entity type, serialisable for encrypted storage."""

from __future__ import annotations

import json
from typing import Any

from gateway_core.redaction.errors import RedactionError

_FORMAT_VERSION = 1


def format_placeholder(entity: str, number: int) -> str:
    return f"<{entity}_{number}>"


class PlaceholderMap:
    """Keeps every placeholder issued within one job, across all its messages.

    The same (entity type, value) always gets the same placeholder; numbering is per entity type and starts at 1.
    Holds raw PII: store it only encrypted (`to_json()` gives the plaintext to encrypt).
    """

    def __init__(self) -> None:
        self._placeholder_by_value: dict[tuple[str, str], str] = {}
        self._original_by_placeholder: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, int] = {}

    def placeholder_for(self, entity: str, value: str) -> str:
        key = (entity, value)
        placeholder = self._placeholder_by_value.get(key)
        if placeholder is None:
            number = self._counters.get(entity, 0) + 1
            self._counters[entity] = number
            placeholder = format_placeholder(entity, number)
            self._placeholder_by_value[key] = placeholder
            self._original_by_placeholder[placeholder] = key
        return placeholder

    def lookup(self, placeholder: str) -> tuple[str, str] | None:
        """(entity type, original value) for a placeholder issued by this map, else None."""
        return self._original_by_placeholder.get(placeholder)

    @property
    def counters(self) -> dict[str, int]:
        """How many distinct values were issued a placeholder, per entity type."""
        return dict(self._counters)

    def __len__(self) -> int:
        return len(self._original_by_placeholder)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlaceholderMap) and self._original_by_placeholder == other._original_by_placeholder

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Never print values: repr ends up in logs and tracebacks.
        return f"PlaceholderMap(counters={self._counters!r})"

    def to_json(self) -> str:
        entries = [
            {"placeholder": placeholder, "entity": entity, "value": value}
            for placeholder, (entity, value) in self._original_by_placeholder.items()
        ]
        return json.dumps({"version": _FORMAT_VERSION, "entries": entries}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> PlaceholderMap:
        try:
            document: Any = json.loads(data)
            if document.get("version") != _FORMAT_VERSION:
                raise ValueError("unsupported version")
            mapping = cls()
            for entry in document["entries"]:
                mapping._restore_entry(str(entry["placeholder"]), str(entry["entity"]), str(entry["value"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RedactionError(
                f"stored placeholder map is not readable ({type(exc).__name__}); it was not written by "
                "PlaceholderMap.to_json() or is damaged"
            ) from None
        return mapping

    def _restore_entry(self, placeholder: str, entity: str, value: str) -> None:
        prefix = f"<{entity}_"
        if not (placeholder.startswith(prefix) and placeholder.endswith(">")):
            raise ValueError("placeholder does not match its entity")
        number = int(placeholder[len(prefix) : -1])
        self._placeholder_by_value[(entity, value)] = placeholder
        self._original_by_placeholder[placeholder] = (entity, value)
        self._counters[entity] = max(self._counters.get(entity, 0), number)
