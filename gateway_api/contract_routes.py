"""Operator endpoints for output contracts: add a version, list, show. Admin tenants only."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from gateway_api.deps import Services, error_body, require_admin
from gateway_api.openapi import ErrorResponse, errors
from gateway_core.contracts import (
    CompatibilityVerdict,
    ContractError,
    ContractNotFound,
    ContractRegistry,
    ContractSummary,
    ContractVersion,
    IncompatibleContract,
    InvalidContractName,
    InvalidSchema,
)
from gateway_core.errors import RequestError

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # gateway_core.contracts.NAME_RULE
router = APIRouter(
    prefix="/v1/admin/contracts", tags=["contracts"], responses=errors(403),
    dependencies=[Depends(require_admin("managing output contracts"))],
)


class ContractCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN},
                      description="Contract name: lowercase letters, digits, '-', '_', '.'; 1-64 characters")
    schema_: dict[str, Any] = Field(alias="schema", description="A JSON Schema (draft 2020-12) object")
    force: StrictBool = Field(
        default=False, description="Store the version even if it breaks callers of the previous one"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:  # the schema's pattern, with the registry's own message
        if not re.fullmatch(NAME_PATTERN, value):
            raise PydanticCustomError("invalid_contract_name", "{message}",
                                      {"message": str(InvalidContractName(value))})
        return value


class IncompatibleResponse(ErrorResponse):
    problems: list[str] = Field(description="What breaks callers of the previous version")
    previous_version: int


class ContractCreated(BaseModel):
    name: str
    version: int
    forced: bool
    compatibility: CompatibilityVerdict


class ContractList(BaseModel):
    object: str = "list"
    data: list[ContractSummary]


class ContractVersionList(BaseModel):
    object: str = "list"
    data: list[ContractVersion]


async def registry(request: Request) -> ContractRegistry:
    """One ContractRegistry per app, on the running services' Redis client."""
    state = request.app.state
    found: ContractRegistry | None = getattr(state, "contracts", None)
    if found is None:
        svc: Services = state.services
        found = ContractRegistry(svc.redis)
        state.contracts = found
    return found


Registry = Annotated[ContractRegistry, Depends(registry)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="Contract name")]


def _api_error(exc: ContractError) -> RequestError:
    if isinstance(exc, InvalidContractName):
        return RequestError(422, str(exc), exc.code, "name")
    if isinstance(exc, InvalidSchema):
        param = "schema" + exc.path[1:] if exc.path.startswith("$") else "schema"
        return RequestError(422, str(exc), exc.code, param)
    if isinstance(exc, ContractNotFound):
        return RequestError(404, str(exc), exc.code, "version" if exc.version is not None else "name")
    return RequestError(409, str(exc), getattr(exc, "code", "contract_error"))


@router.post(
    "",
    status_code=201,
    response_model=ContractCreated,
    summary="Add a contract, or a new version of one (checked for compatibility with the previous one)",
    responses={
        **errors(409, 422),
        409: {
            "model": IncompatibleResponse,
            "description": "The new version breaks callers of the previous one; the body lists "
            "the problems next to the error",
        },
        422: {**errors(422)[422], "description": "Invalid name or schema; the message names the JSON path"},
    },
)
async def add_contract(body: ContractCreate, contracts: Registry) -> ContractCreated | JSONResponse:
    try:
        version, verdict = await contracts.add(body.name, body.schema_, force=body.force)
    except IncompatibleContract as exc:
        content = {
            **error_body(str(exc), exc.code, "schema"),
            "problems": exc.verdict.problems,
            "previous_version": exc.previous,
        }
        return JSONResponse(content, status_code=409)
    except ContractError as exc:
        raise _api_error(exc) from None
    return ContractCreated(name=version.name, version=version.version, forced=version.forced, compatibility=verdict)


@router.get("", response_model=ContractList, summary="List contracts with their latest version")
async def list_contracts(contracts: Registry) -> ContractList:
    return ContractList(data=await contracts.list())


@router.get("/{name}", response_model=ContractVersion, summary="One contract: its latest version, or ?version=N",
            responses=errors(404))
async def show_contract(
    name: Name,
    contracts: Registry,
    version: Annotated[int | None, Query(ge=1, le=2**31, description="A version number; default: the latest")] = None,
) -> ContractVersion:
    try:
        return await contracts.get(name, version)
    except ContractError as exc:
        raise _api_error(exc) from None


@router.get("/{name}/versions", response_model=ContractVersionList, summary="Every version of a contract, oldest first",
            responses=errors(404))
async def contract_versions(name: Name, contracts: Registry) -> ContractVersionList:
    try:
        return ContractVersionList(data=await contracts.versions(name))
    except ContractError as exc:
        raise _api_error(exc) from None


def install(app: FastAPI) -> None:
    """Add the contract endpoints to the app (called from create_app)."""
    app.include_router(router)
