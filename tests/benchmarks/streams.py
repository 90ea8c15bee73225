"""Stream benchmarks: added time to first token, and many concurrent slow streams without stalls.

The client side uses raw trio sockets (no HTTP library), so its own cost hardly blurs what it measures.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import trio

from tests.benchmarks.harness import DRIP_PORT, ProxyProcess


def _request(host_port: str, key: str, model: str, keep_alive: bool = False) -> bytes:
    body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host_port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


async def _one_stream(port: int, key: str, model: str) -> tuple[float, float, bool]:
    """(seconds to the first event, worst gap between reads after it, completed) on a new connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        return await _exchange(stream, port, key, model, keep_alive=False)


async def _exchange(
    stream: trio.SocketStream, port: int, key: str, model: str, keep_alive: bool
) -> tuple[float, float, bool]:
    started = time.perf_counter()
    await stream.send_all(_request(f"127.0.0.1:{port}", key, model, keep_alive))
    first: float | None = None
    last = started
    worst = 0.0
    seen = b""
    head: bytes | None = b""  # the response head until its end has arrived
    while True:
        data = await stream.receive_some(65536)
        now = time.perf_counter()
        if not data:
            break
        # The first token is the first SSE event, not the response head: an upstream may send its head before
        # its first event (the drip does, in two writes) while the proxy sends its head with its first chunk.
        body = data
        if head is not None:
            head += data
            if b"\r\n\r\n" not in head:
                body = b""
            else:
                body, head = head.partition(b"\r\n\r\n")[2], None
        if first is None and b"data:" in body:
            first = now - started
        elif first is not None:
            worst = max(worst, now - last)
        last = now
        seen = (seen + data)[-64:]
        if b"[DONE]" in seen and seen.endswith(b"0\r\n\r\n"):
            break  # the chunked body is complete (not every server closes promptly on `connection: close`)
    return (first or 0.0), worst, b"[DONE]" in seen


def ttft(proxy: ProxyProcess, runs: int, per_run: int = 40) -> float:
    """Median time to first byte through the proxy minus direct to the drip upstream, in ms."""

    async def measure(port: int, key: str, model: str) -> float:
        # One keep-alive connection, as an SDK client keeps: connection set-up is not time to first token.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await _exchange(stream, port, key, model, keep_alive=True)  # warm the connections
            results = [await _exchange(stream, port, key, model, keep_alive=True) for _ in range(per_run)]
        return statistics.median(r[0] for r in results)

    direct, through = [], []
    for _ in range(runs):
        direct.append(trio.run(measure, DRIP_PORT, "x", "drip"))
        through.append(trio.run(measure, proxy.port, proxy.master_key, "bench-drip"))
    return (statistics.median(through) - statistics.median(direct)) * 1000


def many_slow_streams(proxy: ProxyProcess, count: int, ramp_s: float = 1.0) -> dict[str, Any]:
    """`count` concurrent streams of 20 chunks 50 ms apart through the proxy, started evenly over `ramp_s`
    (a thousand connections opened in the same millisecond measure the accept queue, not streaming)."""
    results: list[tuple[float, float, bool]] = []
    peak_rss = 0.0

    async def main() -> None:
        nonlocal peak_rss
        done = trio.Event()

        async def sample() -> None:
            nonlocal peak_rss
            while not done.is_set():
                peak_rss = max(peak_rss, proxy.rss_mib())
                await trio.sleep(0.1)

        async def one(index: int) -> None:
            await trio.sleep(ramp_s * index / count)
            results.append(await _one_stream(proxy.port, proxy.master_key, "bench-drip"))

        async with trio.open_nursery() as outer:
            outer.start_soon(sample)
            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(one, index)
            done.set()

    trio.run(main)
    return {
        "first_byte_p50_ms": statistics.median(r[0] for r in results) * 1000,
        "completed": sum(1 for r in results if r[2]),
        "worst_gap_ms": max(r[1] for r in results) * 1000,
        "rss_mib": peak_rss,
    }
