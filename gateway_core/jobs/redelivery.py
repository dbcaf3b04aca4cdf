"""The broker's visibility timeout must outlast a job's longest run.

A message not acked within the visibility timeout is handed to another worker. If a run can last longer (a slow
partner call, then its contract repair calls), the partner is called twice for one job and bills twice; the job
store's run tokens keep only one result, but they cannot take the second call back. A worker refuses to start
with such settings.
"""

from __future__ import annotations

from gateway_core.config import GatewayConfig, PartnerConfig
from gateway_core.settings import Settings


def longest_calls_s(partner: PartnerConfig) -> float:
    """One attempt's partner calls at their timeouts: the call and every contract repair (retries and fallbacks are
    new messages, each with its own visibility timeout)."""
    return partner.timeout_s * (1 + partner.contract_repairs)


def visibility_timeout_problem(settings: Settings, config: GatewayConfig) -> str | None:
    """One line naming the first partner whose calls can outlast the visibility timeout, and the fixes; else None."""
    for name, partner in config.partners.items():
        longest = longest_calls_s(partner)
        if longest >= settings.visibility_timeout_s:
            return (f"partner {name!r}: one attempt can call it for {longest:g} s (timeout_s {partner.timeout_s:g} "
                    f"x (1 + contract_repairs {partner.contract_repairs})), not less than the broker's visibility "
                    f"timeout of {settings.visibility_timeout_s} s, so a slow call would be repeated by another "
                    "worker; raise FEDGATE_VISIBILITY_TIMEOUT_S or lower the partner's timeout_s")
    return None
