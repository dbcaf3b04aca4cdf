"""The OpenAI embeddings request, as fedgate reads it: the HTTP API's /v1/embeddings body and each line of a batch
whose endpoint is /v1/embeddings (gateway_core.jobs.batches) are validated against the same model.

An embedding job stores its inputs as one user message each (so they are encrypted, redacted per partner and
dropped by retention exactly like a chat job's prompt) and its vectors packed in the job's output
(gateway_core.jobs.vectors)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway_core.config import GatewayConfig
from gateway_core.errors import RequestError
from gateway_core.jobs import vectors
from gateway_core.jobs.models import JobSubmission, Message, json_type
from gateway_core.partners.adapters.embeddings import embedding_refusal, embedding_wire

EMBEDDING_KIND = "embedding"
ENDPOINT = "/v1/embeddings"
MAX_INPUTS = 2048  # OpenAI's limit on one request's array
MAX_DIMENSIONS = 65_536

Text = Annotated[str, Field(min_length=1)]  # the constraints sit on each branch, so the schema states them
Dimensions = Annotated[int, Field(ge=1, le=MAX_DIMENSIONS), json_type("an integer")]


class EmbeddingRequest(BaseModel):
    """The fields fedgate honours; any other field is refused with a 400 that names it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description="A partner name or a route from the config")
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description=f"A text, or up to {MAX_INPUTS} texts; token arrays are not supported"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = Field(default=None, description="Passed to partners that can shorten vectors")
    user: str | None = Field(default=None, max_length=256, description="Passed to partners that take it")

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: Any) -> Any:
        tokens = isinstance(value, list) and value and all(
            isinstance(item, int) or (isinstance(item, list) and all(isinstance(t, int) for t in item))
            for item in value
        )
        if tokens:
            raise PydanticCustomError("unsupported", "input: token arrays are not supported by this gateway (it "
                                      "redacts text before a partner sees it): send the text as a string or a list "
                                      "of strings")
        if value == [] or value == "" or (isinstance(value, list) and "" in value):
            raise ValueError("give a non-empty text or a non-empty list of non-empty texts")
        if isinstance(value, list) and len(value) > MAX_INPUTS:
            raise PydanticCustomError("unsupported", f"input: {len(value)} texts is over the limit of {MAX_INPUTS} "
                                      "per request: split them across requests or use a batch")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def params(self) -> dict[str, Any]:
        """What the worker (dimensions, user) and a batch's output file (encoding_format) need besides the texts,
        stored in the job's params."""
        return {"encoding_format": self.encoding_format,
                **{k: v for k, v in {"dimensions": self.dimensions, "user": self.user}.items() if v is not None}}

    def submission(self, partner: str) -> JobSubmission:
        """The job for `partner`: one user message per input text. Built without JobSubmission's validation, which
        holds a conversation to MAX_MESSAGES (1,000): this request is already validated, up to MAX_INPUTS texts."""
        messages = [Message(role="user", content=text) for text in self.texts()]
        return JobSubmission.model_construct(partner=partner, messages=messages)


def encoded(packed: str, encoding_format: str) -> list[Any]:
    """Stored vectors as the request asked for them: float lists, or base64 of little-endian float32 (OpenAI's)."""
    return vectors.rows_base64(packed) if encoding_format == "base64" else list(vectors.rows_float(packed))


def embedding_list(vectors: list[Any], *, model: str, prompt_tokens: int) -> dict[str, Any]:
    """OpenAI's `CreateEmbeddingResponse`: the /v1/embeddings answer and each line of a batch's output file.
    `vectors` are float lists or base64 strings, per the request's encoding_format."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def embedding_partner(config: GatewayConfig, request: EmbeddingRequest) -> str:
    """The partner `request.model` names (a partner or a route), refused as OpenAI would when it cannot serve the
    request: 404 for an unknown model, 400 naming the field the partner cannot honour."""
    partner = config.routes.get(request.model, request.model)
    if partner not in config.partners:
        known = ", ".join(sorted(name for name in [*config.partners, *config.routes]
                                 if embedding_refusal(config.partners[config.routes.get(name, name)]) is None))
        raise RequestError(404, f"the model {request.model!r} does not exist here: use one of {known or 'none'} "
                           "(partners with an embedding_model)", "model_not_found", "model")
    partner_config = config.partners[partner]
    refusal = embedding_refusal(partner_config)
    if refusal is not None:
        raise RequestError(400, f"model: {refusal}, so it takes no embeddings: name a partner that has one",
                           "model_not_supported", "model")
    wire = embedding_wire(partner_config)
    if len(request.texts()) > wire.max_inputs:
        raise RequestError(400, f"input: partner {partner!r} takes at most {wire.max_inputs} texts per request; this "
                           f"one has {len(request.texts())}: split them", "too_many_inputs", "input")
    if request.user is not None and not wire.takes_user:
        raise RequestError(400, f"user: partner {partner!r} ({partner_config.adapter}) has no field for it: remove it",
                           "unsupported_field", "user")
    return partner
