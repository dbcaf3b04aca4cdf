"""Embeddings as each simulated wire takes and answers them: OpenAI (`POST /v1/embeddings`), Azure OpenAI (the
deployment's `/embeddings?api-version=`) and Gemini (`models/{model}:batchEmbedContents`).

Vectors are deterministic, derived from each text (SHA-256 in counter mode, scaled to unit length), so a test can
compute what the partner answers for the text it received: `vector_for(text, dimensions)`. As the real APIs do, an
unknown field, an empty input or a token array this simulator does not model is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from partner_simulator.answers import estimate_tokens, load_json_object
from partner_simulator.behaviour import PartnerKind
from partner_simulator.wire import OrjsonResponse

DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 4096
_OPENAI_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
_GEMINI_REQUEST_FIELDS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})


def vector_for(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The simulator's embedding of `text`: a unit vector of float32 values, the same for the same text."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw += [value / 2**31 - 1.0 for value in struct.unpack("<8I", digest)]
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    # Rounded through float32, as real embeddings are, so a client decoding either encoding gets the same numbers.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in raw))))


@dataclass(frozen=True)
class EmbeddingCall:
    model: str
    texts: list[str]
    dimensions: int
    base64: bool = False


def _dimensions(value: Any, field: str) -> int | str:
    if value is None:
        return DEFAULT_DIMENSIONS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSIONS:
        return f"Invalid value for '{field}': expected an integer from 1 to {MAX_DIMENSIONS}."
    return value


class OpenAIEmbeddingWire:
    kind: PartnerKind = "openai"
    model_required = True

    def parse(self, body: bytes, default_model: str) -> EmbeddingCall | str:
        payload = load_json_object(body)
        if payload is None:
            return "We could not parse the JSON body of your request."
        unknown = sorted(set(payload) - _OPENAI_FIELDS)
        if unknown:
            return f"Unrecognized request argument supplied: {unknown[0]}"
        model = payload.get("model")
        if self.model_required and (not isinstance(model, str) or not model):
            return "you must provide a model parameter"
        texts = payload.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return "'input' must be a non-empty string or a list of non-empty strings."
        encoding = payload.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return "Invalid value for 'encoding_format': expected 'float' or 'base64'."
        dimensions = _dimensions(payload.get("dimensions"), "dimensions")
        if isinstance(dimensions, str):
            return dimensions
        return EmbeddingCall(model if isinstance(model, str) and model else default_model, texts, dimensions,
                             encoding == "base64")

    def reply(self, call: EmbeddingCall) -> Response:
        data = []
        for index, text in enumerate(call.texts):
            vector = vector_for(text, call.dimensions)
            encoded: Any = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if call.base64
                            else vector)
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(estimate_tokens(len(text)) for text in call.texts)
        return OrjsonResponse({"object": "list", "data": data, "model": call.model,
                               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class AzureEmbeddingWire(OpenAIEmbeddingWire):
    """OpenAI's body without `model`: the deployment in the URL picks it (any deployment name embeds here)."""

    kind: PartnerKind = "azure_openai"
    model_required = False


class GeminiEmbeddingWire:
    kind: PartnerKind = "gemini"

    def parse(self, body: bytes, default_model: str) -> EmbeddingCall | str:
        payload = load_json_object(body)
        if payload is None:
            return "Invalid JSON payload received."
        unknown = sorted(set(payload) - {"requests"})
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        requests = payload.get("requests")
        if not isinstance(requests, list) or not requests:
            return "* BatchEmbedContentsRequest.requests: contents is not specified"
        if len(requests) > 100:
            return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
        texts: list[str] = []
        dimensions: set[int] = set()
        for number, item in enumerate(requests):
            if not isinstance(item, dict) or set(item) - _GEMINI_REQUEST_FIELDS:
                return f"Invalid JSON payload received. Unknown name in requests[{number}]: Cannot find field."
            parts = (item.get("content") or {}).get("parts") if isinstance(item.get("content"), dict) else None
            if not isinstance(parts, list) or not parts:
                return f"* BatchEmbedContentsRequest.requests[{number}].content: contents is not specified"
            texts.append("".join(p.get("text", "") for p in parts if isinstance(p, dict)))
            found = _dimensions(item.get("outputDimensionality"), "outputDimensionality")
            if isinstance(found, str):
                return found
            dimensions.add(found)
        if len(dimensions) != 1:
            return "Every request in a batch must ask for the same outputDimensionality."
        return EmbeddingCall(default_model, texts, dimensions.pop())

    def reply(self, call: EmbeddingCall) -> Response:
        return OrjsonResponse({"embeddings": [{"values": vector_for(text, call.dimensions)} for text in call.texts]})


EMBEDDING_WIRES: dict[PartnerKind, OpenAIEmbeddingWire | GeminiEmbeddingWire] = {
    "openai": OpenAIEmbeddingWire(),
    "azure_openai": AzureEmbeddingWire(),
    "gemini": GeminiEmbeddingWire(),
}


def azure_route_problem(request: Request) -> tuple[int, str] | None:
    """Azure's gateway wants an api-version on every call."""
    if not request.query_params.get("api-version"):
        return 404, "Resource not found"
    return None
