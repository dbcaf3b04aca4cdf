"""Embedding calls, one small adapter per wire, registered alongside the chat adapters (`embedding_adapter_for`).

Each subclasses its wire's chat adapter, so authentication, error bodies and retry hints stay that wire's, and the
shared exchange (`PartnerAdapter.call` / `interpret`) maps every failure to the same outcomes as a chat call. The
texts to embed arrive as the CallRequest's messages (one user message per input, already redacted); `dimensions`
and `user` in its `extra`. `read_success` answers the vectors packed (gateway_core.jobs.vectors) as its text.

- OpenAI-style: `POST {base_url}/embeddings`, asking for `encoding_format: base64` (a quarter of the float JSON's
  size: 1,000 x 1,536 vectors are ~8 MB rather than ~30 MB, under the response size cap).
- Azure OpenAI: `POST {base_url}/openai/deployments/{embedding_model}/embeddings?api-version=...`, no `model`.
- Gemini: `POST {base_url}/{api_version}/models/{embedding_model}:batchEmbedContents`, one request per text
  (at most 100 per call, the API's limit).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar
from urllib.parse import quote

from gateway_core.config import PartnerConfig
from gateway_core.jobs import vectors
from gateway_core.jobs.models import Usage
from gateway_core.partners.adapters import azure_openai, gemini
from gateway_core.partners.adapters.base import CallRequest, Ending, HttpPool, PartnerAdapter
from gateway_core.partners.adapters.gemini import GeminiAdapter
from gateway_core.partners.adapters.openai import OpenAIChatAdapter


class EmbeddingAdapter(PartnerAdapter):
    """What every embedding adapter adds to its wire's chat adapter."""

    max_inputs: ClassVar[int] = 2048  # texts one call may carry
    takes_user: ClassVar[bool] = True  # the wire has a field for the end user's id (OpenAI's `user`)

    @property
    def embedding_model(self) -> str:
        if not self.config.embedding_model:
            raise ValueError(f"partner {self.config.name} has no embedding_model")
        return self.config.embedding_model


class OpenAIEmbeddingAdapter(OpenAIChatAdapter, EmbeddingAdapter):
    def endpoint(self) -> str:
        return f"{self.config.base_url}/embeddings"

    def body(self, request: CallRequest) -> dict[str, Any]:
        return {"model": self.embedding_model, "input": [m.text() for m in request.messages],
                "encoding_format": "base64", **request.extra}

    def read_ending(self, body: dict[str, Any]) -> Ending:
        return Ending()  # vectors: no finish reason, no tool calls

    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        rows = sorted(body["data"], key=lambda item: int(item["index"]))
        packed = _pack_openai_rows([row["embedding"] for row in rows])
        usage = body.get("usage") or {}
        return packed, Usage(prompt_tokens=int(usage.get("prompt_tokens", 0)))


def _pack_openai_rows(rows: list[Any]) -> str:
    """Rows as OpenAI answers them: base64 float32 (what we ask for) or float lists (servers that ignore it)."""
    if rows and all(isinstance(row, str) for row in rows):
        try:
            data = [base64.b64decode(row, validate=True) for row in rows]
        except binascii.Error as exc:
            raise ValueError("an embedding is not valid base64") from exc
        width = len(data[0])
        if width % vectors.FLOAT_BYTES or any(len(row) != width for row in data):
            raise ValueError("embeddings of different or partial sizes")
        return vectors.pack_bytes(len(data), width // vectors.FLOAT_BYTES, b"".join(data))
    return vectors.pack(rows)


class AzureOpenAIEmbeddingAdapter(OpenAIEmbeddingAdapter):
    def endpoint(self) -> str:
        deployment = quote(self.embedding_model, safe="")
        api_version = quote(self.config.api_version or azure_openai.DEFAULT_API_VERSION, safe="")
        return f"{self.config.base_url}/openai/deployments/{deployment}/embeddings?api-version={api_version}"

    def headers(self) -> dict[str, str]:
        return {"api-key": self.api_key} if self.api_key else {}

    def body(self, request: CallRequest) -> dict[str, Any]:
        body = super().body(request)
        body.pop("model")
        return body


class GeminiEmbeddingAdapter(GeminiAdapter, EmbeddingAdapter):
    max_inputs: ClassVar[int] = 100
    takes_user: ClassVar[bool] = False

    def _model(self) -> str:
        return self.embedding_model.removeprefix("models/")

    def endpoint(self) -> str:
        api_version = quote(self.config.api_version or gemini.DEFAULT_API_VERSION, safe="")
        return f"{self.config.base_url}/{api_version}/models/{quote(self._model(), safe='')}:batchEmbedContents"

    def body(self, request: CallRequest) -> dict[str, Any]:
        if len(request.messages) > self.max_inputs:
            raise ValueError(f"more than {self.max_inputs} texts in one call")
        dimensions = request.extra.get("dimensions")
        model = f"models/{self._model()}"
        return {"requests": [
            {"model": model, "content": {"parts": [{"text": m.text()}]},
             **({"outputDimensionality": dimensions} if dimensions else {})}
            for m in request.messages
        ]}

    def read_ending(self, body: dict[str, Any]) -> Ending:
        return Ending()  # vectors: no finish reason, no tool calls

    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        packed = vectors.pack([item["values"] for item in body["embeddings"]])
        usage = body.get("usageMetadata") or {}
        return packed, Usage(prompt_tokens=int(usage.get("promptTokenCount", 0)))


EMBEDDING_ADAPTERS: dict[str, type[EmbeddingAdapter]] = {
    "openai": OpenAIEmbeddingAdapter,
    "azure_openai": AzureOpenAIEmbeddingAdapter,
    "gemini": GeminiEmbeddingAdapter,
}


def embedding_refusal(config: PartnerConfig) -> str | None:
    """Why `config` cannot take embedding jobs (None: it can)."""
    if config.adapter not in EMBEDDING_ADAPTERS:
        return f"partner {config.name!r} ({config.adapter}) has no embeddings endpoint"
    if not config.embedding_model:
        return f"partner {config.name!r} has no embedding_model in the config"
    return None


def embedding_wire(config: PartnerConfig) -> type[EmbeddingAdapter]:
    """The adapter class for a partner `embedding_refusal` accepts (its limits are class attributes)."""
    return EMBEDDING_ADAPTERS[config.adapter]


def embedding_adapter_for(config: PartnerConfig, http: HttpPool) -> EmbeddingAdapter | None:
    """The partner's embedding adapter; None when it cannot take embedding jobs."""
    if embedding_refusal(config) is not None:
        return None
    return EMBEDDING_ADAPTERS[config.adapter](config, http)
