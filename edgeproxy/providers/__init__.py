"""Provider translators by `litellm_params.model` prefix.

Providers are stateless, so one instance of each serves every deployment and request.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from edgeproxy.providers.anthropic import AnthropicProvider
from edgeproxy.providers.base import CallType, Provider, StreamTranslator, UpstreamRequest, Usage, estimate_tokens
from edgeproxy.providers.mock import MockProvider, MockTransport
from edgeproxy.providers.ollama import OllamaChatProvider, OllamaProvider
from edgeproxy.providers.openai import DeepSeekProvider, MoonshotProvider, OpenAIProvider

# Read-only: the registry is fixed at import and shared, so nothing may add to it at runtime.
PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        provider.name: provider
        for provider in (
            OpenAIProvider(),
            MoonshotProvider(),
            DeepSeekProvider(),
            OllamaProvider(),
            OllamaChatProvider(),
            AnthropicProvider(),
            MockProvider(),
        )
    }
)


def get_provider(name: str) -> Provider:
    """The translator for a provider prefix; ValueError for one we do not know (config checks prefixes first)."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None


__all__ = [
    "PROVIDERS",
    "CallType",
    "MockTransport",
    "Provider",
    "StreamTranslator",
    "UpstreamRequest",
    "Usage",
    "estimate_tokens",
    "get_provider",
]
