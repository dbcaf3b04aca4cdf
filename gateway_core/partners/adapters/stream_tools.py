"""Tool calls put together from a partner's stream: each partner sends a call's id and name first, then its arguments
in fragments (OpenAI `delta.tool_calls[]` by `index`, Anthropic `input_json_delta` by content block index) or the
whole call in one part (Gemini `functionCall`). The calls are assembled in the order they started, as the
non-streamed answer lists them."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway_core.jobs.chat_options import FunctionCall, ToolCall


@dataclass
class _Building:
    id: str
    name: str
    fragments: list[str] = field(default_factory=list)


@dataclass
class ToolCallAssembler:
    _calls: dict[int, _Building] = field(default_factory=dict)

    def start(self, key: int, call_id: str, name: str, arguments: str = "") -> None:
        """A new call, under the partner's key for it (its index, or its content block)."""
        self._calls[key] = _Building(call_id, name, [arguments] if arguments else [])

    def holds(self, key: int) -> bool:
        return key in self._calls

    def append(self, key: int, fragment: str, call_id: str = "", name: str = "") -> None:
        """More of a call's arguments; an id or a name sent late fills in what the start left empty."""
        building = self._calls[key]
        if fragment:
            building.fragments.append(fragment)
        building.id = building.id or call_id
        building.name = building.name or name

    def __len__(self) -> int:
        return len(self._calls)

    def assembled(self) -> list[ToolCall] | None:
        """The calls (None when there are none); raises ValueError for a call that never got its id or name."""
        calls = [ToolCall(id=b.id, function=FunctionCall(name=b.name, arguments="".join(b.fragments) or "{}"))
                 for b in self._calls.values()]
        return calls or None
