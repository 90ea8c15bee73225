"""The per-request log line (text and JSON) and the prompts stored in spend logs."""

from __future__ import annotations

import json
import logging
import sys

from edgeproxy.auth import MASTER, Principal
from edgeproxy.calllog import CallLine, JsonFormatter, call_fields, response_text, stored_exchange
from edgeproxy.calls import CallRecord
from edgeproxy.providers.base import CallType, Usage

KEY_TOKEN = "f" * 64


def record(call: CallType = CallType.CHAT, body: dict[str, object] | None = None, **fields: object) -> CallRecord:
    principal = Principal(token=KEY_TOKEN, key_alias="my laptop", key_name="sk-...abcd", user_id="ann", team_id="t")
    return CallRecord(
        call_id="c1",
        call_type=call,
        principal=principal,
        model_group="m",
        requested_model="m",
        body=body or {"messages": [{"role": "user", "content": "hi"}]},
        **fields,  # type: ignore[arg-type]
    )


def test_text_line_names_the_key_by_alias_only() -> None:
    rec = record(usage=Usage(3, 4), cost=0.25, status="failure", error='upstream said "no"', ttft_s=0.5)
    text = str(CallLine(call_fields(rec)))
    assert text.startswith('call c1 chat key="my laptop" user=ann team=t group=m deployment=- status=failure')
    assert "ttft_ms=500.0 tokens=3+4 cost=0.250000 cache_hit=False" in text
    assert text.endswith('error="upstream said \\"no\\""')
    assert KEY_TOKEN not in text and "sk-...abcd" not in text
    master = CallRecord("c2", CallType.CHAT, MASTER, "m", "m", {})
    assert "key=master" in str(CallLine(call_fields(master)))


def test_json_lines() -> None:
    formatter = JsonFormatter()
    call = logging.LogRecord("edgeproxy.calls", logging.INFO, "f", 1, CallLine(call_fields(record())), None, None)
    entry = json.loads(formatter.format(call))
    assert entry["message"] == "call finished" and entry["level"] == "info" and entry["logger"] == "edgeproxy.calls"
    assert entry["key_alias"] == "my laptop" and entry["call_id"] == "c1" and entry["cost"] == 0.0
    try:
        raise ValueError("boom")
    except ValueError:
        plain = logging.LogRecord("x", logging.ERROR, "f", 1, "failed %s", ("here",), sys.exc_info())
    entry = json.loads(formatter.format(plain))
    assert entry["message"] == "failed here" and "ValueError: boom" in entry["exception"]


def test_stored_exchange_cuts_each_part() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:..."}}]
    body = {"messages": [{"role": "system", "content": "abc"}, {"role": "user", "content": parts}, "junk"]}
    rec = record(body=body, output={"choices": [{"message": {"content": "a long answer"}}]})
    assert stored_exchange(rec, 6) == {
        "messages": [{"role": "system", "content": "abc"}, {"role": "user", "content": "loo"}],
        "response": "a long",
        "truncated_to_chars": 6,
    }
    completion = record(CallType.COMPLETION, {"prompt": "p"}, output={"choices": [{"text": "t"}]})
    assert stored_exchange(completion, 10) == {"prompt": "p", "response": "t"}
    embedding = record(CallType.EMBEDDING, {"input": ["a", "b"]})
    assert stored_exchange(embedding, 100) == {"input": '["a", "b"]'}


def test_response_text_from_each_kind_of_output() -> None:
    class Translator:
        text = "streamed"

    chunks = [{"choices": [{"delta": {"content": "he"}}]}, {"choices": [{"delta": {"content": "llo"}}]}]
    assert response_text(Translator()) == "streamed"
    assert response_text(chunks) == "hello"
    assert response_text(None) is None
