"""The contract registry: named, versioned output schemas in Redis.

Keys: hash `fg:contract:{name}` (field "1", "2", ... -> the ContractVersion as JSON; versions are 1..N with no
gaps and never change) and sorted set `fg:contracts` (name -> time of its latest version). A version is stored by
a Lua script that sets field N+1 only if it is still free, so two concurrent adds never share a version, and each
new version is compared with the version it really follows."""

from __future__ import annotations

import builtins
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from gateway_core.contracts.compat import check_compatibility
from gateway_core.contracts.models import (
    CompatibilityVerdict,
    ContractError,
    ContractNotFound,
    ContractSummary,
    ContractVersion,
    IncompatibleContract,
    InvalidSchema,
    Source,
    check_name,
    parse_reference,
)
from gateway_core.contracts.validate import canonical, check_schema
from gateway_core.fleet.lua import script

PREFIX = "fg:contract:"
INDEX = "fg:contracts"
MAX_ATTEMPTS = 100  # optimistic retries when other adds to the same contract keep winning the next version

_MODELS: dict[str, type[BaseModel]] = {}


def contract_key(name: str) -> str:
    return f"{PREFIX}{name}"


def register_model(name: str, model: type[BaseModel]) -> None:
    """Register a pydantic model as the contract `name`; ContractRegistry.sync_models() stores its JSON Schema."""
    check_name(name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"contract {name!r}: register a pydantic BaseModel subclass, not {model!r}")
    existing = _MODELS.get(name)
    if existing is not None and _qualified(existing) != _qualified(model):
        raise ValueError(f"contract {name!r} is already registered for the model {_qualified(existing)}")
    _MODELS[name] = model


def unregister_model(name: str) -> None:
    _MODELS.pop(name, None)


def registered_models() -> dict[str, type[BaseModel]]:
    return dict(_MODELS)


def _qualified(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


class ContractRegistry:
    def __init__(self, client: aioredis.Redis) -> None:
        """`client` must decode responses (decode_responses=True)."""
        self.redis = client
        self._store = client.register_script(script("contract_store"))

    async def add(
        self, name: str, schema: dict[str, Any], *, force: bool = False, source: Source = "json_schema"
    ) -> tuple[ContractVersion, CompatibilityVerdict]:
        """Store `schema` as the next version of `name` (version 1 for a new name).

        Raises InvalidContractName, InvalidSchema, or IncompatibleContract when the new version breaks callers of
        the previous one (unless `force`: then it is stored with forced=True and the problems it was forced over)."""
        return await self._add(name, schema, force=force, source=source, unless_unchanged=False)

    async def _add(
        self, name: str, schema: dict[str, Any], *, force: bool, source: Source, unless_unchanged: bool,
        note: str = "",
    ) -> tuple[ContractVersion, CompatibilityVerdict]:
        check_name(name)
        check_schema(schema)
        key = contract_key(name)
        for _ in range(MAX_ATTEMPTS):
            latest = await self._latest(name)
            verdict = CompatibilityVerdict(compatible=True, problems=[])
            if latest is not None:
                if unless_unchanged and canonical(latest.schema_) == canonical(schema):
                    return latest, verdict
                verdict = check_compatibility(latest.schema_, schema)
                if not verdict.compatible and not force:
                    raise IncompatibleContract(name, latest.version, verdict, note)
            forced = not verdict.compatible
            version = ContractVersion(
                name=name, version=(latest.version if latest else 0) + 1, schema=schema, created_at=time.time(),
                forced=forced, source=source, problems=verdict.problems if forced else [],
            )
            payload = version.model_dump_json(by_alias=True)
            if await self._store(keys=[key, INDEX], args=[str(version.version), payload, version.created_at, name]):
                return version, verdict
        raise ContractError(f"contract {name!r}: too many concurrent changes, the new version was not stored; retry")

    async def get(self, name: str, version: int | None = None) -> ContractVersion:
        """The given version of `name`, or its latest. Raises ContractNotFound."""
        check_name(name)
        if version is None:
            latest = await self._latest(name)
            if latest is None:
                raise ContractNotFound(name)
            return latest
        raw = await self.redis.hget(contract_key(name), str(version)) if version >= 1 else None
        if raw is None:
            raise ContractNotFound(name, version, await self.redis.hlen(contract_key(name)))
        return ContractVersion.model_validate_json(raw)

    async def resolve(self, ref: str) -> ContractVersion:
        """A job's contract reference ("invoice" or "invoice@3") as the version it names."""
        name, version = parse_reference(ref)
        return await self.get(name, version)

    async def list(self) -> builtins.list[ContractSummary]:
        """Every contract with its latest version, by name."""
        names = sorted(str(n) for n in await self.redis.zrange(INDEX, 0, -1))
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hlen(contract_key(name))
            counts = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, count in zip(names, counts, strict=True):
                pipe.hget(contract_key(name), str(count))
            latest = await pipe.execute()
        summaries = []
        for name, count, raw in zip(names, counts, latest, strict=True):
            if raw is None:
                continue
            found = ContractVersion.model_validate_json(raw)
            summaries.append(ContractSummary(name=name, latest_version=found.version, versions=count,
                                             updated_at=found.created_at, source=found.source))
        return summaries

    async def versions(self, name: str) -> builtins.list[ContractVersion]:
        """Every version of `name`, oldest first. Raises ContractNotFound."""
        check_name(name)
        stored = await self.redis.hgetall(contract_key(name))
        if not stored:
            raise ContractNotFound(name)
        return [ContractVersion.model_validate_json(stored[k]) for k in sorted(stored, key=int)]

    async def sync_models(self) -> builtins.list[ContractVersion]:
        """Store every registered pydantic model's JSON Schema as a new version of its contract, unless the latest
        version already has that schema (so starting many workers adds one version, not one each). Checked, never
        forced: a model that breaks its contract's callers raises IncompatibleContract naming the model."""
        synced = []
        for name, model in sorted(_MODELS.items()):
            try:
                schema = model.model_json_schema()
            except Exception as exc:  # pydantic raises several types for models it cannot describe
                raise InvalidSchema("$", f"model {_qualified(model)} has no JSON Schema: {exc}") from None
            note = (f"The model {_qualified(model)} changed this contract; change it back, or register a contract "
                    "under a new name. ")
            version, _ = await self._add(name, schema, force=False, source="pydantic", unless_unchanged=True,
                                         note=note)
            synced.append(version)
        return synced

    async def _latest(self, name: str) -> ContractVersion | None:
        key = contract_key(name)
        count = await self.redis.hlen(key)
        if not count:
            return None
        raw = await self.redis.hget(key, str(count))
        return ContractVersion.model_validate_json(raw) if raw is not None else None
