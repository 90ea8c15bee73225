"""Helpers for the provider tests: deployments, recorded wire samples, feeding translators."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeproxy.config import Deployment
from edgeproxy.providers.base import StreamTranslator

SAMPLES = Path(__file__).parent / "samples"


Feed = Callable[[StreamTranslator, bytes], list[dict[str, Any]]]


def deployment(provider: str, model: str = "m", api_base: str = "http://upstream.test", **kw: Any) -> Deployment:
    params = kw.pop("params", {})
    return Deployment(
        model_name=kw.pop("model_name", "group"),
        provider=provider,
        model=model,
        api_base=api_base,
        api_key=kw.pop("api_key", None),
        deployment_id=kw.pop("deployment_id", "dep-1"),
        params=params,
        **kw,
    )


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_json(name: str) -> Any:
    return json.loads(sample(name))


def feed_whole(translator: StreamTranslator, data: bytes) -> list[dict[str, Any]]:
    return translator.feed(data) + translator.close()


def feed_bytewise(translator: StreamTranslator, data: bytes) -> list[dict[str, Any]]:
    """Feed one byte at a time: every split point, including inside UTF-8 sequences, must work."""
    chunks: list[dict[str, Any]] = []
    for i in range(len(data)):
        chunks += translator.feed(data[i : i + 1])
    return chunks + translator.close()


def strip_volatile(chunks: list[dict[str, Any]]) -> list[Any]:
    """Chunks without id/created, which differ between two translators of the same bytes."""
    return [{k: v for k, v in c.items() if k not in ("id", "created")} for c in chunks]
