"""Adapter class per config `adapter:` value."""

from __future__ import annotations

from gateway_core.config import PartnerConfig
from gateway_core.partners.adapters.anthropic import AnthropicMessagesAdapter
from gateway_core.partners.adapters.azure_openai import AzureOpenAIChatAdapter
from gateway_core.partners.adapters.base import HttpPool, PartnerAdapter
from gateway_core.partners.adapters.gemini import GeminiAdapter
from gateway_core.partners.adapters.generic import GenericJSONAdapter
from gateway_core.partners.adapters.openai import OpenAIChatAdapter

ADAPTERS: dict[str, type[PartnerAdapter]] = {
    "openai": OpenAIChatAdapter,
    "anthropic": AnthropicMessagesAdapter,
    "generic": GenericJSONAdapter,
    "azure_openai": AzureOpenAIChatAdapter,
    "gemini": GeminiAdapter,
}


def adapter_for(config: PartnerConfig, http: HttpPool) -> PartnerAdapter:
    return ADAPTERS[config.adapter](config, http)
