"""The network edge to LLM servers: one httpx client per deployment, errors mapped to ours.

Providers translate; this module sends. Every httpx exception is mapped to an `UpstreamError` in
`_mapped_errors`, the one place that knows httpx's hierarchy. Messages name the model group and the
deployment id, never a URL with credentials or a provider key.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import trio

from edgeproxy.config import Deployment
from edgeproxy.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from edgeproxy.providers import get_provider
from edgeproxy.providers.base import CallType, Provider, StreamTranslator, UpstreamRequest, Usage
from edgeproxy.providers.mock import MockTransport

# Connecting should be quick even when generating is slow: a dead host must fail fast so retries can move on.
CONNECT_TIMEOUT_S = 10.0


DRAIN_TIMEOUT_S = 1.0
DRAIN_MAX_BYTES = 65536
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


# httpcore's pool bookkeeping grows with the requests and connections in one pool (measured here: 0.76 ms a
# call alone, 1.5 ms at 32 in flight). Several small pools per deployment keep each one short: 32 in flight
# over 8 pools cost 0.83 ms a call.
POOL_SHARDS = 8


def _client_for(deployment: Deployment, max_connections: int, tls: ssl.SSLContext) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=min(CONNECT_TIMEOUT_S, deployment.timeout_s),
        read=deployment.timeout_s,
        write=deployment.timeout_s,
        pool=deployment.timeout_s,
    )
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    transport: httpx.AsyncBaseTransport
    if deployment.provider == "mock":
        transport = MockTransport(deployment)
    else:
        # httpcore writes a request's headers and body in separate sends; with Nagle's algorithm on, the body
        # waits for the upstream's delayed ACK of the headers (measured: +4 ms per call on loopback).
        transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=_SOCKET_OPTIONS, verify=tls)
    # trust_env=False: a proxy or netrc from the environment must not silently reroute LLM traffic.
    return httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport, trust_env=False)


def _shards(deployment: Deployment, tls: ssl.SSLContext) -> list[httpx.AsyncClient]:
    """Split a deployment's connection budget over a few pools (the mock needs no pool at all)."""
    count = 1 if deployment.provider == "mock" else max(1, min(POOL_SHARDS, deployment.max_connections))
    per_pool = max(1, -(-deployment.max_connections // count))
    return [_client_for(deployment, per_pool, tls) for _ in range(count)]


class Upstreams:
    """The httpx clients, created inside the trio run and closed at shutdown."""

    def __init__(self, deployments: tuple[Deployment, ...]) -> None:
        # One TLS context for every pool: each default one loads the whole CA bundle again (measured: 24 pools
        # cost 27 MiB and 0.8 s at start; shared, nothing). SSL_CERT_FILE / SSL_CERT_DIR are honoured.
        tls = httpx.create_ssl_context(trust_env=True)
        self._clients = {d.deployment_id: _shards(d, tls) for d in deployments}
        self._next = dict.fromkeys(self._clients, 0)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for shards in self._clients.values():
                for client in shards:
                    await client.aclose()

    def _client(self, deployment: Deployment) -> httpx.AsyncClient:
        shards = self._clients[deployment.deployment_id]
        turn = self._next[deployment.deployment_id] = (self._next[deployment.deployment_id] + 1) % len(shards)
        return shards[turn]

    async def call(
        self, deployment: Deployment, call: CallType, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Usage | None]:
        """A non-streamed call: the OpenAI-shaped response and its usage."""
        provider = get_provider(deployment.provider)
        request = provider.build_request(deployment, call, body, stream=False)
        client = self._client(deployment)
        with _mapped_errors(deployment), trio.fail_after(deployment.timeout_s):
            response = await client.request(request.method, request.url, headers=request.headers, json=request.json)
        _raise_for_status(provider, deployment, response.status_code, response.content, response.headers)
        return provider.parse_response(deployment, call, body, response.content)

    async def probe(self, deployment: Deployment) -> None:
        """A request that costs nothing; raises UpstreamError when the deployment is not serving."""
        provider = get_provider(deployment.provider)
        request = provider.probe_request(deployment)
        with _mapped_errors(deployment):
            response = await self._client(deployment).request(request.method, request.url, headers=request.headers)
        _raise_for_status(provider, deployment, response.status_code, response.content, response.headers)

    async def open_stream(self, deployment: Deployment, call: CallType, body: dict[str, Any]) -> UpstreamStream:
        """Start a streamed call and wait for its first chunk (within `stream_timeout_s`).

        Until this returns, a failure can still be retried elsewhere; afterwards bytes may reach the
        client, so the caller owns the stream and must `aclose()` it.
        """
        provider = get_provider(deployment.provider)
        request = provider.build_request(deployment, call, body, stream=True)
        stream = UpstreamStream(
            self._client(deployment), deployment, provider.stream_translator(deployment, call, body)
        )
        try:
            with trio.fail_after(deployment.stream_timeout_s):
                await stream.start(provider, request)
        except BaseException:
            await stream.aclose()
            raise
        return stream


class UpstreamStream:
    """An open upstream stream translated to OpenAI chunks."""

    def __init__(self, client: httpx.AsyncClient, deployment: Deployment, translator: StreamTranslator) -> None:
        self._client = client
        self.deployment = deployment
        self.translator = translator
        self._response: httpx.Response | None = None
        self._raw: AsyncIterator[bytes] | None = None
        self._pending: list[dict[str, Any]] = []

    @property
    def usage(self) -> Usage | None:
        return self.translator.usage

    async def start(self, provider: Provider, request: UpstreamRequest) -> None:
        with _mapped_errors(self.deployment):
            http_request = self._client.build_request(
                request.method, request.url, headers=request.headers, json=request.json
            )
            self._response = await self._client.send(http_request, stream=True)
            if self._response.status_code >= 300:
                content = await self._response.aread()
                _raise_for_status(
                    provider, self.deployment, self._response.status_code, content, self._response.headers
                )
            self._raw = self._response.aiter_bytes()
        # Wait for the first chunk: an upstream that accepts and then stalls or fails is still retryable.
        while not self._pending:
            more = await self._read()
            if more is None:
                break
            self._pending.extend(more)

    async def _read(self) -> list[dict[str, Any]] | None:
        """The chunks completed by the next bytes, or None at the end of the upstream stream."""
        assert self._raw is not None
        with _mapped_errors(self.deployment):
            try:
                data = await self._raw.__anext__()
            except StopAsyncIteration:
                chunks = self.translator.close()
                if not self.translator.finished:
                    raise UpstreamProtocolError(
                        f"deployment {self.deployment.deployment_id} ended its stream before finishing"
                    ) from None
                return chunks or None
        return self.translator.feed(data)

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """Every chunk, starting with those read while opening."""
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
        with trio.move_on_after(DRAIN_TIMEOUT_S), contextlib.suppress(httpx.HTTPError):
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


def _retry_after_s(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; fall back to our own backoff


def _raise_for_status(
    provider: Provider, deployment: Deployment, status: int, content: bytes, headers: httpx.Headers
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
    where = f"model group {deployment.model_name!r} (deployment {deployment.deployment_id})"
    try:
        yield
    except UpstreamError:
        raise
    except (trio.TooSlowError, httpx.TimeoutException):
        raise UpstreamTimeoutError(f"{where}: the upstream did not answer in time") from None
    except (httpx.ConnectError, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise UpstreamConnectionError(f"{where}: could not reach the upstream ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise UpstreamConnectionError(f"{where}: upstream request failed ({type(exc).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UpstreamProtocolError(f"{where}: the upstream sent a body that is not valid JSON") from None
