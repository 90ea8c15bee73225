"""Fake upstream LLM servers for end-to-end tests: real sockets, real wire formats, injectable faults.

async with open_fake_upstream() as fake:
    fake.fail_next(2, status=503)
    ... point the gateway at fake.openai_base / fake.url ...
"""

from .upstream import DEFAULT_REPLY, FakeUpstream, Fault, open_fake_upstream
from .wire import EMBEDDING_DIM, RecordedRequest, embedding

__all__ = [
    "DEFAULT_REPLY",
    "EMBEDDING_DIM",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
    "embedding",
    "open_fake_upstream",
]
