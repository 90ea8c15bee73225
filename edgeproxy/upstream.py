"""The network edge to LLM servers: a connection pool per deployment, errors mapped to ours.

Providers translate; this module sends. Plain-HTTP deployments (Ollama, MLX, vLLM on the LAN) go through our
own HTTP/1.1 pool (`plainhttp`), TLS ones through httpcore (httpx's transport) directly: the httpx client layer
(request and response models, header merging, cookies, auth, redirects, hooks) cost about 175 µs a call here
and we use none of it. Both speak httpcore's request, response and exceptions; every such exception is mapped
to an `UpstreamError` in `_mapped_errors`, the one place that knows httpcore's hierarchy. Messages name the
model group and the deployment id, never a URL with credentials or a provider key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx
import trio

from edgeproxy import __version__
from edgeproxy.config import Deployment
from edgeproxy.corked import CorkedBackend
from edgeproxy.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from edgeproxy.jsonwriter import writer
from edgeproxy.plainhttp import PlainPool
from edgeproxy.providers import get_provider
from edgeproxy.providers.base import CallType, Provider, StreamTranslator, UpstreamRequest, Usage, WireChunk
from edgeproxy.providers.mock import MockTransport

# Connecting should be quick even when generating is slow: a dead host must fail fast so retries can move on.
CONNECT_TIMEOUT_S = 10.0


DRAIN_TIMEOUT_S = 1.0
DRAIN_MAX_BYTES = 65536
# With Nagle's algorithm on, a small write waits for the upstream's delayed ACK of the one before (measured when
# httpcore still sent head and body apart: +4 ms per call on loopback). `corked` now sends a request in one write;
# a chunk of a long request body still must not wait. (PlainPool's connections have it from trio.)
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
KEEPALIVE_EXPIRY_S = 30.0
# What httpx sent by default, less Accept-Encoding: we read bodies raw, so we must not invite compression.
_DEFAULT_HEADERS = (("Accept", "*/*"), ("User-Agent", f"edgeproxy/{__version__}"))
_NETWORK = CorkedBackend()  # one write per request (corked.py)
_NETWORK_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException)

Headers = Sequence[tuple[bytes, bytes]]


# httpcore's pool bookkeeping grows with the requests and connections in one pool: each request and release
# rescans its queue against its connections. Measured here (CPU per call against a local nginx): 0.4 ms alone,
# 1.5 ms at 32 in flight in one pool, 0.47 ms over 8 pools. 16 pools cost 0.35 ms, but round-robin then
# keeps twice the idle keep-alive connections (and TLS handshakes) open on a quiet deployment. PlainPool's
# bookkeeping does not grow with its connections: one per deployment.
POOL_SHARDS = 8


class Pool(Protocol):
    """What we need of an httpcore connection pool; `MockTransport` offers the same."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response: ...

    async def aclose(self) -> None: ...


def _pool_for(deployment: Deployment, max_connections: int, tls: ssl.SSLContext) -> Pool:
    if deployment.provider == "mock":
        return MockTransport(deployment)
    if _plain(deployment):
        return PlainPool(max_connections, KEEPALIVE_EXPIRY_S)
    # No proxy argument: a proxy from the environment must not silently reroute LLM traffic.
    return httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
        socket_options=_SOCKET_OPTIONS,
        network_backend=_NETWORK,
    )


def _plain(deployment: Deployment) -> bool:
    return deployment.api_base.startswith("http://")


class _Lane:
    """One deployment's pools, taken in turn, and the timeouts its requests carry."""

    def __init__(self, deployment: Deployment, tls: ssl.SSLContext) -> None:
        # httpcore's: split the deployment's connection budget over a few pools (the mock needs none at all).
        sharded = deployment.provider != "mock" and not _plain(deployment)
        count = max(1, min(POOL_SHARDS, deployment.max_connections)) if sharded else 1
        per_pool = max(1, -(-deployment.max_connections // count))
        self.pools = [_pool_for(deployment, per_pool, tls) for _ in range(count)]
        self._turn = 0
        timeout = deployment.timeout_s
        connect = min(CONNECT_TIMEOUT_S, timeout)
        self.extensions = {"timeout": {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}}

    def pool(self) -> Pool:
        self._turn = (self._turn + 1) % len(self.pools)
        return self.pools[self._turn]


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL parsed once: where httpcore connects, and the headers httpx used to derive from it."""

    url: httpcore.URL
    host: str
    authorization: str | None  # Basic credentials from `user:password@` in the URL

    @classmethod
    def parse(cls, url: str) -> _Target:
        parsed = httpx.URL(url)  # IDNA hosts, default ports and percent-decoded userinfo, as before
        target = httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path)
        authorization = None
        if parsed.username or parsed.password:
            userpass = f"{parsed.username}:{parsed.password}".encode()
            authorization = "Basic " + base64.b64encode(userpass).decode("ascii")
        return cls(target, parsed.netloc.decode("ascii"), authorization)


def _request_headers(target: _Target, given: Mapping[str, str], body: bytes | None) -> list[tuple[str, str]]:
    """What httpx would have sent: the provider's headers, Host and a few defaults, the JSON body's framing."""
    names = {name.lower() for name in given}
    headers = [] if "host" in names else [("Host", target.host)]
    headers += [pair for pair in _DEFAULT_HEADERS if pair[0].lower() not in names]
    # Ours to set: the body's length, and no compression (bodies are read raw, even if extra_headers asked).
    skipped = ("content-length", "accept-encoding", *(() if target.authorization is None else ("authorization",)))
    headers += [pair for pair in given.items() if pair[0].lower() not in skipped]
    if target.authorization is not None:  # credentials in the URL win over an Authorization header, as with httpx
        headers.append(("Authorization", target.authorization))
    if body is not None:
        if "content-type" not in names:
            headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", str(len(body))))
    return headers


# As httpx encoded `json=`: compact, UTF-8, and NaN refused (it is not JSON).
_request_json = writer(allow_nan=False)


def _encode_json(obj: Any) -> bytes:
    return _request_json(obj).encode("utf-8")


class Upstreams:
    """The connection pools, created inside the trio run and closed at shutdown."""

    def __init__(self, deployments: tuple[Deployment, ...]) -> None:
        # One TLS context for every pool: each default one loads the whole CA bundle again (measured: 24 pools
        # cost 27 MiB and 0.8 s at start; shared, nothing). SSL_CERT_FILE / SSL_CERT_DIR are honoured.
        tls = httpx.create_ssl_context(trust_env=True)
        self._lanes = {d.deployment_id: _Lane(d, tls) for d in deployments}
        self._targets: dict[str, _Target] = {}  # bounded: api_base + a provider's fixed paths
        self.closed = False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for lane in self._lanes.values():
                for pool in lane.pools:
                    await pool.aclose()
            self.closed = True

    def _prepare(self, deployment: Deployment, request: UpstreamRequest) -> tuple[Pool, httpcore.Request]:
        lane = self._lanes[deployment.deployment_id]
        target = self._targets.get(request.url)
        if target is None:
            target = self._targets[request.url] = _Target.parse(request.url)
        body = None if request.json is None else _encode_json(request.json)
        headers = _request_headers(target, request.headers, body)
        http_request = httpcore.Request(
            request.method, target.url, headers=headers, content=body, extensions=lane.extensions
        )
        return lane.pool(), http_request

    async def call(
        self, deployment: Deployment, call: CallType, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Usage | None]:
        """A non-streamed call: the OpenAI-shaped response and its usage."""
        provider = get_provider(deployment.provider)
        pool, request = self._prepare(deployment, provider.build_request(deployment, call, body, stream=False))
        with _mapped_errors(deployment), trio.fail_after(deployment.timeout_s):
            status, content, headers = await _send(pool, request)
        _raise_for_status(provider, deployment, status, content, headers)
        return provider.parse_response(deployment, call, body, content)

    async def probe(self, deployment: Deployment) -> None:
        """A request that costs nothing; raises UpstreamError when the deployment is not serving."""
        provider = get_provider(deployment.provider)
        pool, request = self._prepare(deployment, provider.probe_request(deployment))
        with _mapped_errors(deployment):
            status, content, headers = await _send(pool, request)
        _raise_for_status(provider, deployment, status, content, headers)

    async def open_stream(self, deployment: Deployment, call: CallType, body: dict[str, Any]) -> UpstreamStream:
        """Start a streamed call and wait for its first chunk (within `stream_timeout_s`).

        Until this returns, a failure can still be retried elsewhere; afterwards bytes may reach the
        client, so the caller owns the stream and must `aclose()` it.
        """
        provider = get_provider(deployment.provider)
        pool, request = self._prepare(deployment, provider.build_request(deployment, call, body, stream=True))
        stream = UpstreamStream(pool, deployment, provider.stream_translator(deployment, call, body))
        try:
            with _mapped_errors(deployment), trio.fail_after(deployment.stream_timeout_s):
                await stream.start(provider, request)
        except BaseException:
            await stream.aclose()
            raise
        return stream


async def _send(pool: Pool, request: httpcore.Request) -> tuple[int, bytes, Headers]:
    response = await pool.handle_async_request(request)
    try:
        content = await response.aread()
    finally:
        await response.aclose()
    return response.status, content, response.headers


class UpstreamStream:
    """An open upstream stream translated to OpenAI chunks."""

    def __init__(self, pool: Pool, deployment: Deployment, translator: StreamTranslator) -> None:
        self._pool = pool
        self.deployment = deployment
        self.translator = translator
        self._response: httpcore.Response | None = None
        self._raw: AsyncIterator[bytes] | None = None
        self._pending: list[WireChunk] = []

    @property
    def usage(self) -> Usage | None:
        return self.translator.usage

    async def start(self, provider: Provider, request: httpcore.Request) -> None:
        with _mapped_errors(self.deployment):
            response = self._response = await self._pool.handle_async_request(request)
            if response.status >= 300:
                content = await response.aread()
                _raise_for_status(provider, self.deployment, response.status, content, response.headers)
            self._raw = response.aiter_stream()
        # Wait for the first chunk: an upstream that accepts and then stalls or fails is still retryable.
        while not self._pending:
            more = await self._read()
            if more is None:
                break
            self._pending.extend(more)

    async def _read(self) -> list[WireChunk] | None:
        """The chunks completed by the next bytes, or None at the end of the upstream stream."""
        assert self._raw is not None
        with _mapped_errors(self.deployment):
            try:
                data = await self._raw.__anext__()
            except StopAsyncIteration:
                chunks = self.translator.close_wire()
                if not self.translator.finished:
                    raise UpstreamProtocolError(
                        f"deployment {self.deployment.deployment_id} ended its stream before finishing"
                    ) from None
                return chunks or None
        return self.translator.feed_wire(data)

    async def chunks(self) -> AsyncIterator[WireChunk]:
        """Every chunk, starting with those read while opening, with the bytes it came as when they can be sent
        on unchanged (`StreamTranslator.feed_wire`)."""
        while True:
            pending, self._pending = self._pending, []
            for chunk in pending:
                yield chunk
            if self.translator.finished and not pending:
                await self._drain()
                return
            more = await self._read()
            if more is None:
                return
            self._pending = more

    async def _drain(self) -> None:
        """Read what follows the end marker (the chunked terminator, at most a little more): a fully read
        response lets httpcore keep the connection for the next call instead of opening a new one."""
        assert self._raw is not None
        with trio.move_on_after(DRAIN_TIMEOUT_S), contextlib.suppress(*_NETWORK_ERRORS):
            read = 0
            async for data in self._raw:
                read += len(data)
                if read > DRAIN_MAX_BYTES:
                    return

    async def aclose(self) -> None:
        # Shielded: a client disconnect cancels us, and the upstream connection must still be released.
        with trio.CancelScope(shield=True):
            if self._response is not None:
                await self._response.aclose()


def _header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of a header; `name` in lower case."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _retry_after_s(headers: Headers) -> float | None:
    value = _header(headers, b"retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; fall back to our own backoff


def _raise_for_status(
    provider: Provider, deployment: Deployment, status: int, content: bytes, headers: Headers
) -> None:
    if status < 300:
        return
    detail = provider.error_message(status, content)
    raise UpstreamHTTPError(
        f"model group {deployment.model_name!r} (deployment {deployment.deployment_id}): "
        f"upstream returned HTTP {status}: {detail}",
        upstream_status=status,
        retry_after_s=_retry_after_s(headers),
        context_window=provider.is_context_window_error(status, detail),
    )


@contextmanager
def _mapped_errors(deployment: Deployment) -> Iterator[None]:
    # httpcore's exceptions share no base class: each family is named here. The names in messages are the
    # ones httpx used for the same failures (it mirrored httpcore's).
    where = f"model group {deployment.model_name!r} (deployment {deployment.deployment_id})"
    try:
        yield
    except UpstreamError:
        raise
    except (trio.TooSlowError, httpcore.TimeoutException):
        raise UpstreamTimeoutError(f"{where}: the upstream did not answer in time") from None
    except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
        raise UpstreamConnectionError(f"{where}: could not reach the upstream ({type(exc).__name__})") from None
    except (
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
        httpcore.ProxyError,
        httpcore.ConnectionNotAvailable,
    ) as exc:
        raise UpstreamConnectionError(f"{where}: upstream request failed ({type(exc).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UpstreamProtocolError(f"{where}: the upstream sent a body that is not valid JSON") from None
