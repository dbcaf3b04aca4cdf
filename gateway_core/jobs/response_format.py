"""OpenAI's `response_format` on the contract machinery: json_schema is an inline contract (the output is parsed,
validated against the schema, repaired once where configured, and `parsed` filled, as for a registered contract),
json_object is the contract "any JSON object". Partners get it the way they take structured output."""

from __future__ import annotations

from gateway_core.contracts import ContractVersion
from gateway_core.jobs.chat_options import ChatOptions
from gateway_core.partners.adapters.base import OutputSchema

INLINE_CONTRACT = "response_format"  # the name metrics and history use: never the client's schema name
ANY_JSON_OBJECT = {"type": "object"}


def inline_contract(options: ChatOptions | None) -> ContractVersion | None:
    wanted = options.response_format if options is not None else None
    if wanted is None or wanted.type == "text":
        return None
    schema = wanted.json_schema.schema_ if wanted.json_schema is not None else None
    return ContractVersion(name=INLINE_CONTRACT, version=1, schema=schema or ANY_JSON_OBJECT, created_at=0.0)


def output_schema(contract: ContractVersion | None, options: ChatOptions | None) -> OutputSchema | None:
    """What to ask the partner for: the job's contract, or its response_format under the client's schema name."""
    if contract is None:
        return None
    wanted = options.response_format if options is not None else None
    if contract.name != INLINE_CONTRACT or wanted is None:
        return OutputSchema(contract.name, contract.schema_)
    if wanted.json_schema is None:
        return OutputSchema("json_object", contract.schema_, json_object=True)
    return OutputSchema(wanted.json_schema.name, contract.schema_, strict=wanted.json_schema.strict)
