"""general_settings for metrics, logs and alerts: defaults, LiteLLM spellings, one-line errors."""

from __future__ import annotations

from typing import Any

import pytest

from edgeproxy.config import Config, ConfigError, parse_config

MODELS = [{"model_name": "demo", "litellm_params": {"model": "mock/demo"}}]


def config(env: dict[str, str] | None = None, **general: Any) -> Config:
    return parse_config({"model_list": MODELS, "general_settings": general}, env=env or {})


def test_defaults_keep_everything_off() -> None:
    ops = config().general.ops
    assert (ops.metrics_require_auth, ops.metrics_per_key, ops.store_prompts_in_spend_logs) == (False, False, False)
    assert (ops.log_format, ops.log_level, ops.max_stored_prompt_chars) == ("text", None, 10_000)
    assert not ops.alerts_enabled and ops.budget_thresholds == (0.8, 1.0)


def test_alerting_settings() -> None:
    ops = config(
        alerting=["webhook"],
        alerting_webhook_url="https://hooks.example/x",
        alert_types=["budget_alerts", "llm_too_slow"],
        alerting_args={"budget_thresholds": [50, 90, 100], "check_interval": 2, "repeat_interval": 60},
    ).general.ops
    assert ops.alerts_enabled and ops.webhook_url == "https://hooks.example/x"
    assert ops.alert_types == ("budget_alerts",)  # LiteLLM types we do not send are ignored
    assert ops.budget_thresholds == (0.5, 0.9, 1.0)
    assert (ops.alert_check_interval_s, ops.alert_repeat_interval_s) == (2.0, 60.0)
    assert "hooks.example" not in repr(ops)  # a webhook URL is a secret
    slack = config({"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}, alerting=["slack"]).general.ops
    assert slack.webhook_url == "https://hooks.slack.com/services/T/B/x"


@pytest.mark.parametrize(
    ("general", "message"),
    [
        ({"log_format": "xml"}, "general_settings.log_format: expected text or json, got 'xml'"),
        ({"log_level": "loud"}, "general_settings.log_level: expected one of debug, info, warning, error"),
        ({"alerting": ["email"], "webhook_url": "https://h/x"}, "general_settings.alerting[0]: 'email'"),
        ({"alerting": ["webhook"]}, "general_settings.alerting_webhook_url: missing"),
        ({"alerting": ["webhook"], "webhook_url": "hooks/x"}, "expected an http:// or https:// URL"),
        ({"alerting_args": {"budget_thresholds": [0.8, 0]}}, "alerting_args.budget_thresholds[1]"),
        ({"max_stored_prompt_chars": 0}, "general_settings.max_stored_prompt_chars"),
        ({"metrics_require_auth": "maybe"}, "general_settings.metrics_require_auth: expected true or false"),
    ],
)
def test_wrong_values_name_the_field(general: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        config(**general)
    assert message in str(raised.value)
