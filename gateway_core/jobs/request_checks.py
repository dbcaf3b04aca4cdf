"""Up-front checks of a chat request against the partner it names: every field the partner's adapter cannot
honour, an image its policy refuses, an inline schema that is not JSON Schema, is a 400 naming the field (a
fallback partner that cannot honour one fails its call instead, and the chain moves on)."""

from __future__ import annotations

from gateway_core.config import PartnerConfig
from gateway_core.contracts.models import InvalidSchema
from gateway_core.contracts.validate import check_schema
from gateway_core.errors import RequestError
from gateway_core.jobs.chat_options import NamedToolChoice
from gateway_core.jobs.models import JobSubmission
from gateway_core.partners.adapters.capabilities import NO_TOOLS_WITH_STRUCTURED_OUTPUT, first_unhonoured


def check_tool_names(submission: JobSubmission) -> None:
    """What the published schema cannot state: names that must refer to something in the request. A name that
    refers to nothing is a 404 (as an unknown model is), two tools of one name a 409."""
    options = submission.options
    declared = [tool.function.name for tool in (options.tools if options and options.tools else [])]
    if len(set(declared)) != len(declared):
        raise RequestError(409, "tools: two tools have the same name; give each function its own name",
                           "duplicate_tool_name", "tools")
    if options is not None and isinstance(options.tool_choice, NamedToolChoice) and (
            options.tool_choice.function.name not in declared):
        raise RequestError(404, f"tool_choice names the function {options.tool_choice.function.name!r}, which is "
                           "not in tools", "tool_not_found", "tool_choice")
    called: set[str] = set()
    for index, message in enumerate(submission.conversation()):
        called.update(call.id for call in message.tool_calls or [])
        if message.tool_call_id is not None and message.tool_call_id not in called:
            raise RequestError(404, f"messages.{index}.tool_call_id: no earlier assistant message made the tool call "
                               f"{message.tool_call_id!r}", "tool_call_not_found", f"messages.{index}.tool_call_id")


# Where a field that is not an option lives in the request.
_PARAMS = {"images": "messages[].content[].image_url", "tools": "messages[].tool_calls"}


def check_request_options(partner: PartnerConfig, submission: JobSubmission) -> None:
    messages = submission.conversation()
    options = submission.options
    check_tool_names(submission)
    field = first_unhonoured(partner.adapter, messages, options)
    if field is not None:
        param = field if options is not None and field in options.requested() else _PARAMS[field]
        raise RequestError(400, f"{param}: the partner {partner.name!r} ({partner.adapter} adapter) does not support "
                           "this field; remove it or use another model", "unsupported_field", param)
    if not partner.policy.allow_images and any(m.images() for m in messages):
        param = _PARAMS["images"]
        raise RequestError(400, f"{param}: the partner {partner.name!r} does not take images (its policy refuses "
                           "them)", "unsupported_field", param)
    wanted = options.response_format if options is not None else None
    structured = submission.contract is not None or (wanted is not None and wanted.type != "text")
    if partner.adapter in NO_TOOLS_WITH_STRUCTURED_OUTPUT and structured and options is not None and options.tools:
        param = "contract" if submission.contract is not None else "response_format"
        raise RequestError(400, f"{param}: the partner {partner.name!r} ({partner.adapter} adapter) cannot give "
                           "structured output and call tools in one answer; send one of the two",
                           "unsupported_field", param)
    if wanted is not None and wanted.json_schema is not None:
        try:
            check_schema(wanted.json_schema.schema_)
        except InvalidSchema as exc:
            raise RequestError(400, f"response_format.json_schema.schema: {exc}", "invalid_request",
                               "response_format.json_schema.schema") from None
