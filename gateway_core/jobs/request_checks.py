"""Up-front checks of a chat request against the partner it names: every field the partner's adapter cannot
honour, an image its policy refuses, an inline schema that is not JSON Schema, is a 400 naming the field (a
fallback partner that cannot honour one fails its call instead, and the chain moves on)."""

from __future__ import annotations

from gateway_core.config import PartnerConfig
from gateway_core.contracts.models import InvalidSchema
from gateway_core.contracts.validate import check_schema
from gateway_core.errors import RequestError
from gateway_core.jobs.models import JobSubmission
from gateway_core.partners.adapters.capabilities import first_unhonoured

# Where a field that is not an option lives in the request.
_PARAMS = {"images": "messages[].content[].image_url", "tools": "messages[].tool_calls"}


def check_request_options(partner: PartnerConfig, submission: JobSubmission) -> None:
    messages = submission.conversation()
    options = submission.options
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
    if wanted is not None and wanted.json_schema is not None:
        try:
            check_schema(wanted.json_schema.schema_)
        except InvalidSchema as exc:
            raise RequestError(400, f"response_format.json_schema.schema: {exc}", "invalid_request",
                               "response_format.json_schema.schema") from None
