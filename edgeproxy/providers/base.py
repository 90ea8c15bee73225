"""What every provider translator offers.

Providers are translation code only: OpenAI request -> provider request, provider response or stream bytes ->
OpenAI response or chunks. They do no I/O; the upstream client sends `UpstreamRequest`s and feeds bytes back.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeproxy.config import Deployment


class CallType(enum.StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # True when counted by us (client left mid-stream, upstream sent no usage) rather than reported upstream.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cache_read_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cache_read_tokens}
        return usage


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token), used only when no usage is reported."""
    return math.ceil(len(text) / 4) if text else 0


# A chunk, and the JSON bytes it arrived as when they can be sent on unchanged (see StreamTranslator.feed_wire).
WireChunk = tuple[dict[str, Any], bytes | None]


class StreamTranslator(ABC):
    """Turns upstream stream bytes into OpenAI `chat.completion.chunk` (or `text_completion`) dicts.

    `feed` takes bytes exactly as they arrive (arbitrary splits, possibly mid-line) and returns the chunks
    completed by them. Usage chunks from upstream are not returned: they are kept in `usage`. `text` holds
    what was generated so far, so an estimate can be billed when no usage arrives.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.text_parts: list[str] = []
        self.finished = False  # the upstream signalled the end ([DONE], done: true, message_stop)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @abstractmethod
    def feed(self, data: bytes) -> list[dict[str, Any]]: ...

    def close(self) -> list[dict[str, Any]]:
        """The upstream closed the stream; return any chunk still buffered."""
        return []

    def feed_wire(self, data: bytes) -> list[WireChunk]:
        """`feed`, each chunk with its JSON as it arrived when that can go to the client as it is, else None.

        Only upstreams that already speak OpenAI's chunks have such bytes (OpenAIStreamTranslator); the relay
        sends them on instead of encoding the chunk again.
        """
        return [(chunk, None) for chunk in self.feed(data)]

    def close_wire(self) -> list[WireChunk]:
        return [(chunk, None) for chunk in self.close()]


class Provider(ABC):
    name: ClassVar[str]

    @abstractmethod
    def build_request(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], *, stream: bool
    ) -> UpstreamRequest:
        """The upstream request for an OpenAI-shaped `body`.

        Raises InvalidRequestError for what the provider cannot do (e.g. embeddings on Anthropic).
        For streams, always ask the upstream for usage.
        """

    @abstractmethod
    def parse_response(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], raw: bytes
    ) -> tuple[dict[str, Any], Usage | None]:
        """The OpenAI response object and the usage for a non-streamed 2xx upstream answer.

        Raises UpstreamProtocolError for a body that cannot be read.
        """

    @abstractmethod
    def stream_translator(self, deployment: Deployment, call: CallType, body: dict[str, Any]) -> StreamTranslator: ...

    @abstractmethod
    def probe_request(self, deployment: Deployment) -> UpstreamRequest:
        """A request that costs nothing and shows the upstream is up (model lists)."""

    def error_message(self, status: int, raw: bytes) -> str:
        """The human part of an upstream error body, for our own error message."""
        from edgeproxy.providers.wire import upstream_error_message

        return upstream_error_message(raw) or f"upstream answered HTTP {status}"

    def is_context_window_error(self, status: int, message: str) -> bool:
        text = message.lower()
        return status == 400 and any(
            hint in text
            for hint in ("context length", "context_length", "context window", "too many tokens", "prompt is too long")
        )
