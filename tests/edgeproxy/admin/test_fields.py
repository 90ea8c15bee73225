"""Field validation: every refusal is a 400 naming the field in `param`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edgeproxy.admin import fields as f
from edgeproxy.errors import InvalidRequestError

from .conftest import MODELS


def refused(check: f.Check, value: Any, name: str = "field") -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        check(name, value)
    assert caught.value.status == 400
    assert caught.value.param == name
    return caught.value


@pytest.mark.parametrize("value", [-1, -0.01, float("nan"), float("inf"), "abc", "nan", "-5", True, [1], {}])
def test_budget_refuses_negative_non_finite_and_non_numbers(value: Any) -> None:
    refused(f.budget, value, "max_budget")


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (10, 10.0), (2.5, 2.5), ("7.25", 7.25), (None, None)])
def test_budget_accepts_numbers_and_numeric_text(value: Any, expected: float | None) -> None:
    assert f.budget("max_budget", value) == expected


@pytest.mark.parametrize("value", [-1, 1.5, "ten", float("inf"), False])
def test_limit_needs_a_whole_number(value: Any) -> None:
    refused(f.limit, value, "rpm_limit")


def test_limit_coerces_integral_values() -> None:
    assert f.limit("tpm_limit", "1000") == 1000
    assert f.limit("tpm_limit", 20.0) == 20
    assert f.limit("tpm_limit", None) is None


@pytest.mark.parametrize("value", ["30s", "30m", "30h", "30d", "2w", "1mo"])
def test_duration_accepts_litellm_forms(value: str) -> None:
    assert f.duration("duration", value) == value


@pytest.mark.parametrize("value", ["3x", "", "0d", "-1d", "d", 30, "1 day"])
def test_duration_refuses_anything_else(value: Any) -> None:
    error = refused(f.duration, value, "budget_duration")
    assert "budget_duration" in error.message


def test_models_must_be_known_and_the_error_lists_the_valid_ones() -> None:
    check = f.models(MODELS)
    error = refused(check, ["gpt-small", "gpt-5"], "models")
    assert "gpt-5" in error.message
    for name in [*MODELS, "all-proxy-models"]:
        assert name in error.message


def test_models_accepts_known_names_and_all_proxy_models() -> None:
    check = f.models(MODELS)
    assert check("models", ["gpt-small", "gpt-small", "local-llama"]) == ["gpt-small", "local-llama"]
    assert check("models", ["all-proxy-models"]) == ["all-proxy-models"]
    assert check("models", None) == []
    refused(check, "gpt-small", "models")  # a bare string is a common mistake: refuse, don't split it


def test_user_role_must_be_one_of_four() -> None:
    error = refused(f.user_role, "superuser", "user_role")
    assert "proxy_admin_viewer" in error.message
    assert f.user_role("user_role", "internal_user_viewer") == "internal_user_viewer"


def test_metadata_must_be_an_object() -> None:
    refused(f.obj, ["a"], "metadata")
    refused(f.obj, "x", "metadata")
    assert f.obj("metadata", {"team": "a"}) == {"team": "a"}


def test_bring_your_own_key_must_start_with_sk() -> None:
    refused(f.virtual_key, "pk-123456789", "key")
    refused(f.virtual_key, "sk-", "key")
    assert f.virtual_key("key", "sk-my-own-key-1") == "sk-my-own-key-1"


def test_moment_parses_iso_and_treats_naive_as_utc() -> None:
    assert f.moment("expires", "2030-01-02T03:04:05Z") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert f.moment("expires", "2030-01-02T03:04:05") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    refused(f.moment, "tomorrow", "expires")


def test_validate_names_the_first_unknown_field() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        f.validate({"max_budget": 1, "max_budgte": 2}, f.shared_checks(MODELS), "key")
    assert caught.value.param == "max_budgte"
    assert "max_budget" in caught.value.message  # the accepted fields are listed


def test_query_int_bounds() -> None:
    assert f.query_int("page", None, 1) == 1
    assert f.query_int("size", "20", 50) == 20
    with pytest.raises(InvalidRequestError) as caught:
        f.query_int("size", "5000", 50)
    assert caught.value.param == "size"
    with pytest.raises(InvalidRequestError):
        f.query_int("page", "one", 1)
