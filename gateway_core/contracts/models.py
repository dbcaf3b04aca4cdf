"""What the contract registry stores and answers, its errors, and the rules for contract names and references."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_core.errors import FedgateError

NAME_RULE = "1-64 characters: lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Source = Literal["json_schema", "pydantic"]


class ContractVersion(BaseModel):
    """One stored version of a contract. In JSON the schema is under "schema"."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    version: int = Field(ge=1)
    schema_: dict[str, Any] = Field(alias="schema")
    created_at: float
    forced: bool = Field(default=False, description="Stored over a failed compatibility check (--force)")
    source: Source = "json_schema"
    problems: list[str] = Field(default_factory=list,
                                description="The compatibility problems a forced version was stored over")


class CompatibilityVerdict(BaseModel):
    """Whether a new version keeps the promises of the previous one; each problem names a schema path."""

    compatible: bool
    problems: list[str] = Field(default_factory=list)


class ContractSummary(BaseModel):
    name: str
    latest_version: int
    versions: int
    updated_at: float
    source: Source


class ContractError(FedgateError):
    code = "contract_error"


class InvalidContractName(ContractError, ValueError):
    code = "invalid_contract_name"

    def __init__(self, name: object) -> None:
        super().__init__(f"invalid contract name {name!r}: use {NAME_RULE}")


class InvalidSchema(ContractError):
    """The schema is not a usable JSON Schema (draft 2020-12); `path` is the JSON path of the problem in it."""

    code = "invalid_schema"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"invalid JSON Schema at {path}: {message}")
        self.path = path


class IncompatibleContract(ContractError):
    code = "incompatible_contract"

    def __init__(self, name: str, previous: int, verdict: CompatibilityVerdict, note: str = "") -> None:
        listed = "; ".join(verdict.problems)
        super().__init__(
            f"contract {name!r}: the new version breaks callers of version {previous}: {listed}. "
            f"{note}Keep the old promises, use a new contract name, or force it (--force / \"force\": true)"
        )
        self.name = name
        self.previous = previous
        self.verdict = verdict


class ContractNotFound(ContractError):
    code = "contract_not_found"

    def __init__(self, name: str, version: int | None = None, latest: int | None = None) -> None:
        if version is None or not latest:
            message = f"no contract named {name!r}: `fedgate contracts list` shows the registered ones"
        else:
            message = f"contract {name!r} has no version {version} (latest is {latest})"
        super().__init__(message)
        self.name = name
        self.version = version


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidContractName(name)
    return name


def parse_reference(ref: str) -> tuple[str, int | None]:
    """"invoice" -> ("invoice", None) (the latest version); "invoice@3" -> ("invoice", 3); "invoice@latest" too."""
    if not isinstance(ref, str) or not ref:
        raise ValueError("empty contract reference: use NAME or NAME@VERSION, e.g. 'invoice' or 'invoice@3'")
    name, sep, version = ref.partition("@")
    try:
        check_name(name)
    except InvalidContractName:
        raise ValueError(f"invalid contract reference {ref!r}: the name must be {NAME_RULE}") from None
    if not sep or version == "latest":
        return name, None
    if not version.isascii() or not version.isdigit() or int(version) < 1:
        raise ValueError(
            f"invalid contract reference {ref!r}: the version after '@' must be a whole number from 1 (or 'latest')"
        )
    return name, int(version)
