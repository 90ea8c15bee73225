"""A slow-drip OpenAI-compatible SSE upstream for stream benchmarks: one chunk every DRIP_MS milliseconds.

Run: python drip.py PORT [CHUNKS] [DRIP_MS]. Raw trio sockets, HTTP/1.1 keep-alive, no framework, so the
upstream costs next to nothing.
"""

from __future__ import annotations

import json
import sys

import trio

CHUNK = {"id": "chatcmpl-drip", "object": "chat.completion.chunk", "created": 1764000000, "model": "drip"}


def event(delta: dict[str, object], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body = {**CHUNK, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    data = json.dumps(body).encode()
    return b"%x\r\ndata: %s\n\n\r\n" % (len(data) + 8, data)


async def handle(stream: trio.SocketStream, chunks: int, drip_s: float) -> None:
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                if name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            buffer = buffer[length:]
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            await stream.send_all(event({"role": "assistant", "content": ""}))
            for i in range(chunks):
                await trio.sleep(drip_s)
                await stream.send_all(event({"content": f"w{i} "}))
            usage = {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}
            await stream.send_all(event({}, "stop", usage))
            await stream.send_all(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            if close:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def main(port: int, chunks: int, drip_s: float) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await handle(stream, chunks, drip_s)

    await trio.serve_tcp(handler, port, host="127.0.0.1", backlog=4096)


if __name__ == "__main__":
    trio.run(
        main,
        int(sys.argv[1]),
        int(sys.argv[2]) if len(sys.argv) > 2 else 20,
        float(sys.argv[3] if len(sys.argv) > 3 else 50) / 1000,
    )
