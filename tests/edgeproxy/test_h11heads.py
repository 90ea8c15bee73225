"""Response heads checked once: the same headers, errors and bytes as h11's own checks, and used by the server."""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import h11
import h11._connection
import h11._events
import pytest
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import InformationalResponse, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.worker_context import WorkerContext

from edgeproxy import h11heads
from edgeproxy.h11heads import checked_headers, set_comma_header
from tests.e2e.conftest import make_config, openai_model, running_proxy
from tests.fakes import open_fake_upstream

H11_SET_COMMA_HEADER = h11heads._h11_set_comma_header  # h11's own, whether or not install() has run

# What a proxied answer sends: ours, Redis limits', the JSON framing and hypercorn's date.
TYPICAL = [
    (b"x-litellm-call-id", b"0193b2c4-1234-7abc-8def-0123456789ab"),
    (b"x-litellm-model-group", b"gpt-4o-mini"),
    (b"x-litellm-attempted-retries", b"0"),
    (b"x-ratelimit-remaining-requests", b"99999"),
    (b"x-ratelimit-reset-requests", b"1m0s"),
    (b"content-type", b"application/json"),
    (b"content-length", b"345"),
    (b"date", b"Mon, 30 Nov 2026 05:30:15 GMT"),
]

# Bytes around which h11's checks decide: what its value regex refuses, separators, case, non-ASCII.
ALPHABET = b'aZ09-_.,:;/ \t\x00\n\r\x0b\x0c\x7f\x80\xff"()'
NAMES: list[Any] = [
    b"x-a",
    b"X-Mixed-Case",
    b"content-length",
    b"Content-Length",
    b"transfer-encoding",
    b"Transfer-Encoding",
    b"connection",
    b"",
    b"bad name",
    b"bad:name",
    b"caf\xe9",
    b"tab\t",
    "x-str-name",
    bytearray(b"x-bytearray"),
]
LENGTHS = [b"0", b"12", b"012", b"12, 12", b"1,2", b"", b" 12", b"abc", b"9" * 20, b"9" * 21, b"\xd9"]
CODINGS = [b"chunked", b"Chunked", b"gzip", b"chunked, gzip"]


def outcome(check: Any, headers: Any) -> tuple[str, Any]:
    try:
        return "ok", check(headers)._full_items
    except (h11.LocalProtocolError, UnicodeError, TypeError) as exc:  # h11's, and its bytesify's on a str or int
        return "refused", repr(exc)


def random_value(rng: random.Random) -> Any:
    value = bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 6)))
    return value.decode("latin-1") if rng.random() < 0.03 else value


def random_headers(rng: random.Random) -> list[tuple[Any, Any]]:
    headers: list[tuple[Any, Any]] = []
    for _ in range(rng.randrange(0, 6)):
        name = rng.choice(NAMES)
        lowered = name.lower() if isinstance(name, (bytes, bytearray)) else b""
        if lowered == b"content-length" and rng.random() < 0.8:
            value: Any = rng.choice(LENGTHS)
        elif lowered == b"transfer-encoding" and rng.random() < 0.8:
            value = rng.choice(CODINGS)
        else:
            value = random_value(rng)
        headers.append((name, value))
    return headers


def test_generated_headers_get_h11s_result_or_h11s_error() -> None:
    rng = random.Random(20261130)
    results = set()
    for _ in range(20_000):
        headers = random_headers(rng)
        ours = outcome(checked_headers, headers)
        assert ours == outcome(_h11, headers), headers
        results.add(ours[0])
    assert results == {"ok", "refused"}  # both kinds were generated


def _h11(headers: Any) -> Any:
    return h11._headers.normalize_and_validate(headers)


@pytest.mark.parametrize("where", ["alone", "first", "middle", "last", "after an empty value", "before another"])
def test_every_byte_in_a_value_is_judged_as_h11_judges_it(where: str) -> None:
    for byte in range(256):
        b = bytes([byte])
        headers = {
            "alone": [(b"x-a", b"ok"), (b"x-b", b)],
            "first": [(b"x-a", b"ok"), (b"x-b", b + b"ab")],
            "middle": [(b"x-a", b"ok"), (b"x-b", b"a" + b + b"b")],
            "last": [(b"x-a", b"ok"), (b"x-b", b"ab" + b)],
            "after an empty value": [(b"x-a", b""), (b"x-b", b)],
            "before another": [(b"x-a", b"ab" + b), (b"x-b", b"ok")],
        }[where]
        assert outcome(checked_headers, headers) == outcome(_h11, headers), (where, b)


def test_typical_heads_are_not_handed_to_h11(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the module: an answer's usual headers are checked without h11's regular expressions."""
    expected = _h11(TYPICAL)._full_items

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("handed to h11")

    monkeypatch.setattr(h11heads, "normalize_and_validate", refuse)
    assert checked_headers(TYPICAL)._full_items == expected
    with pytest.raises(AssertionError, match="handed to h11"):  # what ours does not decide goes to h11
        checked_headers([(b"transfer-encoding", b"chunked")])


def test_the_memo_of_names_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h11heads, "_names", {})
    monkeypatch.setattr(h11heads, "NAME_MEMO_MAX", 3)
    headers = [(b"x-name-%d" % i, b"v") for i in range(10)]
    assert checked_headers(headers)._full_items == _h11(headers)._full_items
    assert len(h11heads._names) == 3


def test_set_comma_header_as_h11_calls_it_gives_h11s_result() -> None:
    rng = random.Random(7)
    calls: list[tuple[bytes, list[bytes]]] = [
        (b"content-length", []),
        (b"transfer-encoding", [b"chunked"]),
        (b"transfer-encoding", []),
        (b"connection", [b"close"]),
        (b"connection", [b"close", b"upgrade"]),
        (b"x-other", [b"a b"]),  # not a call h11 makes: goes to h11's own function
        (b"connection", [b"bad\r\nvalue"]),
        (b"content-length", [b"12"]),
        (b"content-length", [b"12, 12"]),  # h11 would make it 12
        (b"transfer-encoding", [b"gzip"]),  # h11 refuses it
    ]
    for _ in range(2_000):
        headers = random_headers(rng)
        result, checked = outcome(_h11, headers)
        if result != "ok":
            continue
        checked = h11._headers.Headers(checked)
        name, values = rng.choice(calls)
        ours = outcome(partial(set_comma_header, name=name, new_values=values), checked)
        theirs = outcome(partial(H11_SET_COMMA_HEADER, name=name, new_values=values), checked)
        assert ours == theirs, (headers, name, values)


def _wire(request: bytes, headers: list[tuple[bytes, bytes]], *, ours: bool, keep_alive: bool = True) -> bytes:
    """The bytes h11 writes for a response to `request`, with our checks or h11's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(h11._connection, "set_comma_header", set_comma_header if ours else H11_SET_COMMA_HEADER)
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(request)
        conn.next_event()
        if not keep_alive:
            conn._cstate.process_keep_alive_disabled()
        built = checked_headers(headers) if ours else headers
        return conn.send(h11.Response(status_code=200, headers=built)) or b""


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST"])
@pytest.mark.parametrize("framing", ["length", "streamed", "close"])
def test_the_bytes_on_the_wire_are_h11s(version: bytes, method: bytes, framing: str) -> None:
    headers = [h for h in TYPICAL if framing == "length" or h[0] != b"content-length"]
    if framing == "close":
        headers.append((b"Connection", b"keep-alive, Upgrade"))
    request = b"%s / HTTP/%s\r\nhost: x\r\n\r\n" % (method, version)
    keep_alive = framing != "close"
    ours = _wire(request, headers, ours=True, keep_alive=keep_alive)
    assert ours == _wire(request, headers, ours=False, keep_alive=keep_alive)
    assert ours.startswith(b"HTTP/1.1 200 \r\nx-litellm-call-id: 0193b2c4")


class Recorder:
    """What an H11Protocol sends, as bytes."""

    def __init__(self) -> None:
        self.sent = b""

    async def __call__(self, event: Any) -> None:
        self.sent += event.data


async def _protocol_sends(stream_send: Any, event: Any, *, served_before: int, ours: bool) -> bytes:
    """What hypercorn's H11Protocol writes for `event` after a request, through `stream_send`."""
    config = HypercornConfig()
    config.include_date_header = False  # a clock that may tick between the two sides
    config.keep_alive_max_requests = 3
    record = Recorder()
    protocol = H11Protocol(None, config, WorkerContext(None), None, None, False, None, None, record)  # type: ignore[arg-type]
    protocol.connection.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    protocol.connection.next_event()
    protocol.keep_alive_requests = served_before + 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(h11._connection, "set_comma_header", set_comma_header if ours else H11_SET_COMMA_HEADER)
        await stream_send(protocol, event)
    return record.sent


@pytest.mark.parametrize("served_before", [0, 2])  # 2: the connection's last request (`connection: close`)
@pytest.mark.parametrize("length", [True, False])
async def test_hypercorns_protocol_sends_the_same_bytes(served_before: int, length: bool) -> None:
    headers = [h for h in TYPICAL if length or h[0] != b"content-length"]
    event = Response(stream_id=1, headers=headers, status_code=200)
    ours = await _protocol_sends(h11heads.stream_send, event, served_before=served_before, ours=True)
    theirs = await _protocol_sends(h11heads._hypercorn_stream_send, event, served_before=served_before, ours=False)
    assert ours == theirs
    assert (b"\r\nconnection: close\r\n" in ours.lower()) == (served_before == 2)
    informational = InformationalResponse(stream_id=1, headers=[], status_code=103)  # hypercorn's own path
    assert await _protocol_sends(h11heads.stream_send, informational, served_before=0, ours=True) == b""


async def test_a_header_h11_refuses_is_refused() -> None:
    event = Response(stream_id=1, headers=[(b"x-injected", b"a\r\nset-cookie: b")], status_code=200)
    with pytest.raises(h11.LocalProtocolError, match="Illegal header value"):
        await _protocol_sends(h11heads.stream_send, event, served_before=0, ours=True)


async def test_a_served_answer_and_stream_skip_h11s_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real server: responses are built from headers checked here, and are well formed."""
    checked_by_h11: list[Any] = []
    original = h11._events.normalize_and_validate

    def counting(headers: Any, _parsed: bool = False) -> Any:
        # The proxy's answers as sent (not as httpx parses them, which h11 marks _parsed), not the client's
        # requests, the upstream calls or the fake upstream's answers.
        if not _parsed and any(name == b"x-litellm-call-id" for name, _ in headers):
            checked_by_h11.append(headers)
        return original(headers, _parsed=_parsed)

    monkeypatch.setattr(h11._events, "normalize_and_validate", counting)
    async with (
        open_fake_upstream(reply_text="Hi") as fake,
        running_proxy(make_config([openai_model("gpt-4o", fake)])) as proxy,
        proxy.client() as client,
    ):
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        answer = await client.post("/v1/chat/completions", json=body)
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            text = (await stream.aread()).decode()
        unknown = await client.post("/v1/chat/completions", json={**body, "model": "nope"})
    assert answer.json()["choices"][0]["message"]["content"] == "Hi"
    assert answer.headers["x-litellm-call-id"] and int(answer.headers["content-length"]) == len(answer.content)
    assert stream.headers["transfer-encoding"] == "chunked" and text.endswith("data: [DONE]\n\n")
    assert unknown.status_code in (400, 404) and unknown.json()["error"]["message"]
    assert checked_by_h11 == []
