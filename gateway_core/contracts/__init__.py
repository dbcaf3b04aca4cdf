"""Output contracts: named, versioned JSON Schemas that a succeeded job's output conforms to.

- models.py: what is stored and answered, the errors, names and references ("invoice", "invoice@3")
- validate.py: checking a schema (draft 2020-12) and validating an output strictly, without echoing its values
- parse.py: finding the JSON in a model's output (code fences, leading prose)
- compat.py: whether a new version keeps the previous version's promises (the rules are in its docstring)
- registry.py: the Redis registry, and pydantic models registered in code
"""

from gateway_core.contracts.compat import check_compatibility
from gateway_core.contracts.models import (
    NAME_RULE,
    CompatibilityVerdict,
    ContractError,
    ContractNotFound,
    ContractSummary,
    ContractVersion,
    IncompatibleContract,
    InvalidContractName,
    InvalidSchema,
    check_name,
    parse_reference,
)
from gateway_core.contracts.parse import parse_lenient
from gateway_core.contracts.registry import (
    ContractRegistry,
    register_model,
    registered_models,
    unregister_model,
)
from gateway_core.contracts.validate import check_schema, is_valid, validation_errors

__all__ = [
    "NAME_RULE",
    "CompatibilityVerdict",
    "ContractError",
    "ContractNotFound",
    "ContractRegistry",
    "ContractSummary",
    "ContractVersion",
    "IncompatibleContract",
    "InvalidContractName",
    "InvalidSchema",
    "check_compatibility",
    "check_name",
    "check_schema",
    "is_valid",
    "parse_lenient",
    "parse_reference",
    "register_model",
    "registered_models",
    "unregister_model",
    "validation_errors",
]
