"""httpcore network streams that send a request in one write: what httpcore writes is held until it reads.

Only TLS upstreams go through httpcore now (plain-HTTP ones through `plainhttp`, which writes once itself).
httpcore writes an HTTP/1.1 request in two sends, the head and then the body. Each send on a connection with
TCP_NODELAY is a system call, a packet and a wake-up of the upstream, with trio's and httpcore's Python around
it. Holding the writes until httpcore first reads the response sends head and body together: measured with
callgrind (instructions per proxied call, master key, against nginx), 2 % fewer, and one send fewer of four.
Nothing waits longer for it: an HTTP/1.1 client reads as soon as it has written the whole request (our bodies
are bytes in memory, and httpcore sends no `Expect: 100-continue`).

"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore

# Past this, head and body go as they are: joining them would copy the body for a saving that no longer shows.
JOIN_MAX_BYTES = 64 * 1024


class CorkedStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._write_timeout: float | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._held.append(buffer)
            self._held_bytes += len(buffer)
            self._write_timeout = timeout

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:
            held, self._held, self._held_bytes = self._joined(), [], 0
            try:
                for data in held:
                    await self._stream.write(data, self._write_timeout)
            except httpcore.WriteError:
                # As httpcore does when a send fails: a server may answer (413, say) and close before reading
                # the whole request, so the answer is still read; a connection that is really gone fails there.
                pass
        return await self._stream.read(max_bytes, timeout)

    def _joined(self) -> Iterable[bytes]:
        if len(self._held) == 1 or self._held_bytes > JOIN_MAX_BYTES:
            return self._held
        return [b"".join(self._held)]

    async def aclose(self) -> None:
        self._held, self._held_bytes = [], 0
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        # The handshake comes before any request is written: nothing is held across it.
        return CorkedStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class CorkedBackend(httpcore.AsyncNetworkBackend):
    """trio's backend, its streams corked."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._backend = backend or httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return CorkedStream(await self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return CorkedStream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
