"""Partner adapters: one class per wire format; a new partner is config plus, at most, one adapter class."""

from gateway_core.partners.adapters.base import CallRequest, Outcome, PartnerAdapter, PartnerResponse
from gateway_core.partners.adapters.registry import adapter_for

__all__ = ["CallRequest", "Outcome", "PartnerAdapter", "PartnerResponse", "adapter_for"]
