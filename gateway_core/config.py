"""Partners and tenants from one YAML file (FEDGATE_CONFIG), or the bundled demo config."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from gateway_core.errors import ConfigError
from gateway_core.redaction.policy import RedactionPolicy
from gateway_core.webhooks import WebhookSettings

DEMO_CONFIG = Path(__file__).with_name("demo_config.yaml")
_PARTNER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    max_attempts: int = Field(default=4, ge=1, le=50, description="Calls to this partner before fallback")
    base_delay_s: float = Field(default=0.5, gt=0)
    max_delay_s: float = Field(default=30.0, gt=0)


class BreakerPolicy(_Strict):
    enabled: bool = True
    window_s: int = Field(default=30, ge=1, le=3600, description="Sliding window for the failure rate")
    min_calls: int = Field(default=10, ge=1, description="Calls in the window before the breaker may open")
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    cooldown_s: float = Field(default=15.0, gt=0, description="Open time before a probe call is let through")
    probe_timeout_s: float = Field(default=60.0, gt=0, description="How long one probe may hold the half-open state")


class RateLimits(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class Price(_Strict):
    input_per_million_usd: float = Field(ge=0, description="US dollars per million prompt tokens")
    output_per_million_usd: float = Field(ge=0, description="US dollars per million completion tokens")


class Budgets(_Strict):
    daily_usd: float | None = Field(default=None, gt=0, description="Hard cap per UTC day; unset = none")
    monthly_usd: float | None = Field(default=None, gt=0, description="Hard cap per UTC calendar month")
    soft_ratio: float = Field(default=0.8, gt=0, le=1, description="Share of a budget that raises a warning")


class PartnerConfig(_Strict):
    name: str = ""
    adapter: Literal["openai", "anthropic", "generic", "azure_openai", "gemini"]
    base_url: str
    model: str
    embedding_model: str | None = Field(default=None, description="The model /v1/embeddings jobs use (azure_openai: "
                                        "its deployment name); unset: this partner takes no embedding jobs")
    deployment: str | None = Field(default=None, description="azure_openai: the deployment name in the URL "
                                   "(default: `model`)")
    api_version: str | None = Field(default=None, description="azure_openai: the `api-version` query parameter "
                                    "(default: 2024-10-21); gemini: the version in the path (default: v1beta)")
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0, le=600)
    max_output_tokens: int = Field(default=1024, ge=1)
    contract_repairs: int = Field(default=1, ge=0, le=3, description="Repair calls after an off-contract answer")
    retry: RetryPolicy = RetryPolicy()
    limits: RateLimits = RateLimits()
    breaker: BreakerPolicy = BreakerPolicy()
    policy: RedactionPolicy = Field(default_factory=RedactionPolicy, description="What this partner may see")
    fallback: list[str] = Field(default_factory=list)
    prices: dict[str, Price] = Field(default_factory=dict, description="Model name -> price; `model` must be one")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def resolved_api_key(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or self.api_key
        return self.api_key


class TenantConfig(_Strict):
    name: str = ""
    api_key: str | None = Field(default=None, repr=False)
    api_key_sha256: list[str] = Field(
        default_factory=list, description="SHA-256 hex digest of a key, or a list of them (several during a rotation)"
    )
    api_key_file: str | None = Field(default=None, description="File holding the tenant's keys, one a line")
    api_key_env: str | None = None
    admin: bool = False
    webhook_secrets: list[str] = Field(default_factory=list, repr=False, description="whsec_... secrets, newest first")
    webhook_secret_file: str | None = Field(default=None, description="File holding the whsec_ secret")
    partners: list[str] | None = Field(default=None, description="Partners this tenant may use; unset = all")
    limits: RateLimits = Field(default_factory=RateLimits, description="The tenant's own budget across partners")
    budgets: Budgets = Field(default_factory=Budgets, description="Spend caps in US dollars (402 when reached)")
    _key_digests: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("api_key_sha256", mode="before")
    @classmethod
    def _one_digest_or_a_list(cls, value: object) -> object:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        # The message never repeats the value: a key pasted here by mistake must not reach a log.
        for number, digest in enumerate(digests, start=1):
            if not _SHA256_HEX.match(digest):
                which = f"entry {number} is not" if len(digests) > 1 else "not"
                raise ValueError(f"{which} a SHA-256 digest: give 64 lowercase hex characters, as "
                                 "`printf %s \"$KEY\" | sha256sum` prints them (never the key itself)")
        return digests

    @model_validator(mode="after")
    def _one_key_source(self) -> TenantConfig:
        if not (self.api_key or self.api_key_sha256 or self.api_key_file or self.api_key_env):
            raise ValueError("give one of api_key, api_key_sha256, api_key_file or api_key_env")
        return self

    @model_validator(mode="after")
    def _resolve_key_digests(self) -> TenantConfig:
        self._key_digests = frozenset([*self.api_key_sha256, *(sha256_hex(key) for key in self.plain_keys())])
        return self

    def plain_keys(self) -> list[str]:
        """The keys given in clear, read now: api_key, the api_key_env variable, each line of api_key_file.
        An unset variable or a missing file gives none. Never log them."""
        env_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        file_keys = _key_file_lines(self.api_key_file) if self.api_key_file else []
        return [key for key in (self.api_key, env_key, *file_keys) if key]

    @property
    def key_digests(self) -> frozenset[str]:
        """SHA-256 digests of every key this tenant may use: all its sources count (several during a rotation)."""
        return self._key_digests


def _key_file_lines(name: str) -> list[str]:
    path = Path(name)
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:  # the class only: a decode error would quote the key's bytes
        raise ValueError(f"api_key_file {name} cannot be read ({exc.__class__.__name__}): it must be a "
                         "readable UTF-8 file with one key a line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


class GatewayConfig(_Strict):
    partners: dict[str, PartnerConfig]
    tenants: dict[str, TenantConfig]
    routes: dict[str, str] = Field(default_factory=dict, description="Model names (OpenAI API) -> partner")
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    source: str = "<memory>"
    _tenant_by_digest: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> GatewayConfig:
        for name, partner in self.partners.items():
            if not _PARTNER_NAME.match(name):
                raise ValueError(f"partner name {name!r} must be lowercase letters, digits, '-' or '_'")
            for target in partner.fallback:
                if target not in self.partners:
                    raise ValueError(f"partners.{name}.fallback names unknown partner {target!r}")
            if partner.prices and partner.model not in partner.prices:
                raise ValueError(f"partners.{name}.prices has no entry for its model {partner.model!r}: add one "
                                 "(it prices every call that does not report another priced model)")
        for name in self.partners:
            _refuse_fallback_cycle(name, self.partners)
        for route, target in self.routes.items():
            if target not in self.partners:
                raise ValueError(f"routes.{route} names unknown partner {target!r}")
        for tname, tenant in self.tenants.items():
            for pname in tenant.partners or []:
                if pname not in self.partners:
                    raise ValueError(f"tenants.{tname}.partners names unknown partner {pname!r}")
            if tenant.budgets.daily_usd or tenant.budgets.monthly_usd:
                unpriced = sorted(p for p in self._reachable(tenant.partners) if not self.partners[p].prices)
                if unpriced:
                    raise ValueError(f"tenants.{tname}.budgets: partner {unpriced[0]!r} can serve this tenant "
                                     f"but has no prices, so its spend would not count: add "
                                     f"partners.{unpriced[0]}.prices, or limit tenants.{tname}.partners to priced "
                                     "partners with priced fallbacks")
        return self

    @model_validator(mode="after")
    def _one_tenant_per_key(self) -> GatewayConfig:
        self._tenant_by_digest = _index_keys_by_digest(self.tenants)
        return self

    def _reachable(self, allowed: list[str] | None) -> set[str]:
        """The partners a tenant's jobs can reach: its allowed partners and their fallback chains."""
        found: set[str] = set()
        todo = list(self.partners if allowed is None else allowed)
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(self.partners[name].fallback)
        return found

    def partner(self, name: str) -> PartnerConfig:
        return self.partners[name]

    def tenant_for_key(self, api_key: str) -> TenantConfig | None:
        name = self._tenant_by_digest.get(sha256_hex(api_key))
        return self.tenants[name] if name else None


def _index_keys_by_digest(tenants: dict[str, TenantConfig]) -> dict[str, str]:
    """Key digest -> tenant name; a key shared by two tenants is refused (whichever came last would win)."""
    table: dict[str, str] = {}
    for name, tenant in tenants.items():
        for digest in tenant.key_digests:
            owner = table.setdefault(digest, name)
            if owner != name:
                raise ValueError(f"tenants {owner!r} and {name!r} have the same API key: give each tenant its own "
                                 "key, so requests are billed and limited as the right tenant")
    return table


def _refuse_fallback_cycle(start: str, partners: dict[str, PartnerConfig]) -> None:
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise ValueError(f"fallback chain has a cycle: {cycle}; remove one of these fallback entries")
        path.append(name)
        for nxt in partners[name].fallback:
            visit(nxt)
        path.pop()

    visit(start)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _expand_env(value: object) -> object:
    """Expand ${VAR} and ${VAR:-default} (empty counts as unset, as in shells) in string values only."""

    def sub(match: re.Match[str]) -> str:
        return os.environ.get(match.group(1)) or (match.group(2) or "")

    if isinstance(value, str):
        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    return f"config error in {source}: {where}: {msg} (fix this field and start again)"


def load_config(path: Path | None = None, home: Path | None = None) -> GatewayConfig:
    """Parse and validate the YAML config; raise ConfigError with one line naming the field and the fix."""
    source = path or DEMO_CONFIG
    if not source.is_file():
        raise ConfigError(f"config file {source} does not exist: set FEDGATE_CONFIG to a readable YAML file")
    try:
        raw = _expand_env(yaml.safe_load(source.read_text()) or {})
    except yaml.YAMLError as exc:
        problem = exc.__class__.__name__
        raise ConfigError(f"config error in {source}: not valid YAML ({problem}); fix the syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {source}: top level must be a mapping with 'partners' and 'tenants'")
    for section in ("partners", "tenants"):
        if not isinstance(raw.get(section) or {}, dict):
            raise ConfigError(
                f"config error in {source}: {section} must be a mapping of name -> settings, not a list; "
                f"write '{section}:' then one indented 'name:' block each"
            )
        for name, body in (raw.get(section) or {}).items():
            if isinstance(body, dict):
                body.setdefault("name", name)
                key_file = body.get("api_key_file")
                if section == "tenants" and key_file and home and not Path(key_file).is_absolute():
                    body["api_key_file"] = str(home / key_file)
    raw["source"] = str(source)
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(source))) from None
