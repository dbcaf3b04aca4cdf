"""The interface every simulated partner dialect implements, and the JSON response they answer with."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from partner_simulator.answers import Completion, ParsedRequest
from partner_simulator.behaviour import PartnerKind, retry_after_seconds


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class WireFormat:
    """One partner API dialect: how it authenticates, parses, answers and fails."""

    kind: PartnerKind

    def auth_problem(self, request: Request) -> tuple[int, str] | None:
        raise NotImplementedError

    def route_problem(self, request: Request, served_model: str) -> Response | None:
        """An answer for a URL that names something this partner does not serve (a deployment, a model)."""
        return None

    def parse(self, body: bytes, default_model: str) -> ParsedRequest | str:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        raise NotImplementedError

    def reply(self, parsed: ParsedRequest, completion: Completion) -> Response:
        raise NotImplementedError

    def models(self, model: str) -> Response:
        raise NotImplementedError

    def rate_limited(self, wait_s: float) -> Response:
        return self.error(
            429, "Rate limit reached for requests per minute.", {"retry-after": str(retry_after_seconds(wait_s))}
        )

    def failure(self, status: int) -> Response:
        """Injected failure; a 429 carries retry-after so clients see a realistic throttle."""
        headers = {"retry-after": "1"} if status == 429 else None
        return self.error(status, "Simulated partner failure.", headers)
