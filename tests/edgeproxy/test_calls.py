"""calls.py: the model rename of chunks sent on as their upstream wrote them."""

from __future__ import annotations

import json

from edgeproxy.calls import ModelRename


def test_the_model_is_renamed_in_compact_and_spaced_json() -> None:
    rename = ModelRename("mine")
    compact = b'{"id":"c1","model":"gpt-4o","choices":[]}'
    spaced = b'{"id": "c1", "model": "gpt-4o", "choices": []}'
    assert rename(compact, "gpt-4o") == b'{"id":"c1","model":"mine","choices":[]}'
    assert rename(spaced, "gpt-4o") == b'{"id": "c1", "model": "mine", "choices": []}'


def test_the_same_model_needs_no_rename_and_names_are_json_escaped() -> None:
    assert ModelRename("m")(b'{"model":"m"}', "m") == b'{"model":"m"}'
    quoted = 'my "best" model'
    wire = json.dumps({"model": "up/stream"}).encode()
    assert json.loads(ModelRename(quoted)(wire, "up/stream") or b"") == {"model": quoted}


def test_a_chunk_whose_model_cannot_be_found_once_gets_none() -> None:
    rename = ModelRename("mine")
    assert rename(b'{"choices":[]}', None) is None  # no model: the re-encoded chunk gains one
    assert rename(b'{"model" : "gpt"}', "gpt") is None  # written some other way
    twice = b'{"model":"gpt","choices":[{"delta":{"x":{"model":"gpt"}}}]}'
    assert rename(twice, "gpt") is None
    # A longer name that starts with the same letters is not the model.
    assert rename(b'{"model":"gpt-4o-mini"}', "gpt-4o") is None


def test_a_new_upstream_model_midway_is_renamed_too() -> None:
    rename = ModelRename("mine")
    assert rename(b'{"model":"a"}', "a") == b'{"model":"mine"}'
    assert rename(b'{"model":"b"}', "b") == b'{"model":"mine"}'
