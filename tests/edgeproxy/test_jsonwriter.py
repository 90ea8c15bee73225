"""The writers built once give json.dumps's text, refuse what it refuses, and do not build an encoder per call."""

from __future__ import annotations

import json
import math
from typing import Any
from unittest import mock

import pytest

from edgeproxy import jsonwriter
from edgeproxy.jsonwriter import writer

SAMPLES: list[Any] = [
    {"model": "m", "messages": [{"role": "user", "content": 'héllo ☃ "quoted" \\ \n\t\u0001'}], "temperature": 0.7},
    {"b": 1, "a": [1, 2.5, 1e16, -0.0, True, False, None], "c": {"z": {}, "y": []}},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    "a bare string",
    [],
    12345678901234567890,
    3.141592653589793,
]


@pytest.mark.parametrize("sort_keys", [False, True])
@pytest.mark.parametrize("sample", SAMPLES)
def test_same_text_as_json_dumps(sample: Any, sort_keys: bool) -> None:
    try:
        expected = json.dumps(sample, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    except TypeError:  # keys of mixed types cannot be sorted: the writer refuses them the same way
        with pytest.raises(TypeError):
            writer(sort_keys=sort_keys)(sample)
        return
    assert writer(sort_keys=sort_keys)(sample) == expected


def test_nan_refused_when_asked_and_written_otherwise() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        writer(allow_nan=False)({"x": math.nan})
    assert writer()({"x": math.inf}) == '{"x":Infinity}'


def test_what_json_cannot_encode_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        writer()({"x": object()})


def test_the_encoder_is_built_once() -> None:
    if jsonwriter.c_make_encoder is None:
        pytest.skip("this Python has no C JSON encoder")
    built = mock.Mock(wraps=jsonwriter.c_make_encoder)
    with mock.patch.object(jsonwriter, "c_make_encoder", built):
        write = writer(sort_keys=True)
        for n in range(5):
            assert write({"n": n}) == f'{{"n":{n}}}'
    assert built.call_count == 1
