"""A webhook receiver for alert tests: records every JSON body POSTed to it (Slack's `{"text": ...}`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from tests.fakes.http11 import HttpConnection


class WebhookReceiver:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/hooks/T000/B000/secret-token"
        self.bodies: list[Any] = []
        self.status = 200  # what it answers; set 500 to test failed deliveries
        self._changed = trio.Event()

    @property
    def texts(self) -> list[str]:
        return [body.get("text", "") for body in self.bodies if isinstance(body, dict)]

    def matching(self, *words: str) -> list[str]:
        return [text for text in self.texts if all(word in text for word in words)]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        with trio.fail_after(timeout_s):
            while not predicate():
                await self._changed.wait()

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            http = HttpConnection(stream)
            while True:
                request = await http.read_request()
                if request is None:
                    return
                self.bodies.append(json.loads(request.body) if request.body else None)
                self._changed.set()
                self._changed = trio.Event()
                await http.respond(self.status, [("content-type", "text/plain")], b"ok")
                if not http.next_cycle():
                    return


@asynccontextmanager
async def open_webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    async with trio.open_nursery() as nursery:
        receiver = WebhookReceiver(0)
        handler = receiver.serve_connection
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        receiver.url = receiver.url.replace(":0/", f":{listeners[0].socket.getsockname()[1]}/")
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()
