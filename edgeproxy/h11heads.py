"""Response heads checked as h11 checks them, without h11's two regular expressions per header.

hypercorn hands every final response's headers to `h11.Response`, whose `normalize_and_validate` matches each
name and each value against a regular expression (and builds a dict of the match's groups for each); a streamed
answer's headers are checked twice more when h11 sets its framing headers (`set_comma_header` rebuilds the list
and checks all of it again). Measured on a 2-core VM: 51 µs for an answer's 17 headers, 15 µs with the checks
below (6 µs of it the `h11.Response` itself); side by side at c=8, -1.5 % of a proxied call's CPU with the
master key and -2.2 % on the Redis side, which sends seven headers more (the `x-ratelimit-*` ones).

`checked_headers` returns what `normalize_and_validate` returns, found more cheaply:
- a name is checked once per process with h11's own regex and remembered with its lower-case form (a bounded
  memo: past `NAME_MEMO_MAX` names, new ones go to h11);
- the values are checked together, in one `translate` and a few `in` tests over their join, for exactly what
  h11's value regex refuses: NUL, LF, CR, VT and FF anywhere, a space or a tab at either end;
- `content-length` is taken as is when it is one plain number, as h11 would normalise it to itself.
Anything else (a name not remembered and not checked, a refused value, a `content-length` h11 would rewrite or
refuse, `transfer-encoding`, a header list that is not bytes) goes to h11's `normalize_and_validate` itself, so
the result and the error are h11's. tests/edgeproxy/test_h11heads.py compares both on generated headers.

`install()` makes hypercorn's H11Protocol build final responses' `h11.Response` from `checked_headers`, and
h11's `set_comma_header` keep the headers it was given (checked already) and check only what it adds. The bytes
on the wire are the same. It replaces a method of hypercorn and a function of h11, both pinned in
pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any

import h11
import h11._connection
from h11._headers import CONTENT_LENGTH_MAX_DIGITS, Headers, normalize_and_validate
from h11._headers import _field_name_re as h11_field_name_re
from hypercorn.protocol.events import Event, Response
from hypercorn.protocol.h11 import H11Protocol

NAME_MEMO_MAX = 1024  # distinct header names remembered as checked; ours are a few dozen
_names: dict[bytes, bytes] = {}  # name as sent -> its lower-case form, for names h11's regex accepts
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
# What h11's field-value regex refuses anywhere in a value (besides a space or a tab at either end).
_REFUSED_ANYWHERE = b"\x00\r\x0b\x0c"  # and LF, which separates the values in their join

RawHeaders = list[tuple[bytes, bytes]]


def checked_headers(headers: RawHeaders) -> Headers:
    """h11's `normalize_and_validate(headers)`: the same `Headers`, or the same `LocalProtocolError`."""
    items: list[tuple[bytes, bytes, bytes]] = []
    length_seen = False
    for name, value in headers:
        lowered = _names.get(name) if type(name) is bytes else None
        if lowered is None:
            lowered = _remember(name)
        if lowered is None or type(value) is not bytes:
            return normalize_and_validate(headers)
        if lowered == _CONTENT_LENGTH:
            if length_seen or not _plain_length(value):
                return normalize_and_validate(headers)
            length_seen = True
        elif lowered == _TRANSFER_ENCODING:
            return normalize_and_validate(headers)
        items.append((name, lowered, value))
    if items and not values_acceptable([value for _, _, value in items]):
        return normalize_and_validate(headers)
    return Headers(items)


def values_acceptable(values: list[bytes]) -> bool:
    """Whether h11's field-value regex accepts every one of `values` (at least one, all `bytes`)."""
    joined = b"\n".join(values)
    return (
        len(joined.translate(None, _REFUSED_ANYWHERE)) == len(joined)
        and joined.count(b"\n") == len(values) - 1  # no LF inside a value
        and joined[:1] not in (b" ", b"\t")
        and joined[-1:] not in (b" ", b"\t")
        and b"\n " not in joined
        and b"\n\t" not in joined
        and b" \n" not in joined
        and b"\t\n" not in joined
    )


def _remember(name: Any) -> bytes | None:
    """Check a name not seen before with h11's regex; its lower-case form if accepted and there is room."""
    if type(name) is not bytes or len(_names) >= NAME_MEMO_MAX or not h11_field_name_re.fullmatch(name):
        return None
    lowered = _names[name] = name.lower()
    return lowered


def _plain_length(value: bytes) -> bool:
    """A content-length that h11 keeps as it is: digits only (no list, no spaces), not too long."""
    return value.isdigit() and len(value) <= CONTENT_LENGTH_MAX_DIGITS


_h11_set_comma_header = h11._connection.set_comma_header


def set_comma_header(headers: Headers, name: bytes, new_values: list[bytes]) -> Headers:
    """h11's `set_comma_header`, which h11 calls with headers it has checked: only what it adds is checked.

    h11 sets `connection` (tokens of a checked value, and `close`), removes `content-length` and sets or removes
    `transfer-encoding` (`chunked`); anything else, or a value ours refuses, goes to h11's own function.
    """
    simple = name == b"connection" or not new_values or (name == _TRANSFER_ENCODING and new_values == [b"chunked"])
    checkable = all(type(value) is bytes for value in new_values)
    if not simple or not checkable or (new_values and not values_acceptable(new_values)):
        return _h11_set_comma_header(headers, name, new_values)
    title = name.title()
    items = [item for item in headers._full_items if item[1] != name]
    items += [(title, name, value) for value in new_values]
    return Headers(items)


_hypercorn_stream_send: Callable[[H11Protocol, Event], Awaitable[None]] = H11Protocol.stream_send


async def stream_send(protocol: Any, event: Event) -> None:
    """hypercorn's `H11Protocol.stream_send`, with `checked_headers` in place of h11's check for a final response."""
    if not isinstance(event, Response) or event.status_code < 200:
        await _hypercorn_stream_send(protocol, event)
        return
    headers = list(chain(event.headers, protocol.config.response_headers("h11")))
    if protocol.keep_alive_requests >= protocol.config.keep_alive_max_requests:
        headers.append((b"connection", b"close"))
    await protocol._send_h11_event(h11.Response(headers=checked_headers(headers), status_code=event.status_code))


def install() -> None:
    """Replace hypercorn's `H11Protocol.stream_send` and h11's `set_comma_header` with ours (the originals were
    read at import, so calling it again changes nothing)."""
    H11Protocol.stream_send = stream_send  # type: ignore[method-assign,assignment]
    h11._connection.set_comma_header = set_comma_header
