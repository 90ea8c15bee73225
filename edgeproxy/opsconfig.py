"""The operations part of `general_settings`: metrics, request logs, stored prompts and alerts.

Kept out of config.py so that section stays about serving; config.py calls `parse_ops` with the raw
`general_settings` mapping and stores the result as `config.general.ops`. Errors are `ConfigError`s naming the
path, like every other config error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# LiteLLM's names for what an alert is about (`general_settings.alert_types`); ours map onto three of them.
ALERT_TYPES = ("budget_alerts", "outage_alerts", "db_exceptions")
ALERT_CHANNELS = ("webhook", "slack")
DEFAULT_BUDGET_THRESHOLDS = (0.8, 1.0)


@dataclass(frozen=True, slots=True)
class OpsSettings:
    metrics_require_auth: bool = False  # /metrics open (LiteLLM's default) or behind the master key
    metrics_per_key: bool = False  # opt-in families labelled by key_alias (one series per key)
    log_format: str = "text"
    log_level: str | None = None  # None: --log-level, else info
    store_prompts_in_spend_logs: bool = False
    max_stored_prompt_chars: int = 10_000
    alerting: tuple[str, ...] = ()
    webhook_url: str | None = field(default=None, repr=False)  # Slack webhook URLs carry a secret token
    alert_types: tuple[str, ...] = ALERT_TYPES
    budget_thresholds: tuple[float, ...] = DEFAULT_BUDGET_THRESHOLDS
    alert_check_interval_s: float = 10.0  # how often deployments, the database and Redis are looked at
    alert_repeat_interval_s: float = 3600.0  # at most one reminder per interval while something stays down

    @property
    def alerts_enabled(self) -> bool:
        return bool(self.alerting) and self.webhook_url is not None


def parse_ops(raw: Mapping[str, Any], env: Mapping[str, str]) -> OpsSettings:
    """Read the operations keys of `general_settings` (already checked to be a mapping)."""
    from edgeproxy.config import ConfigError, as_bool, as_int, as_number, as_str, as_str_list

    def get(key: str, check: Any, default: Any) -> Any:
        value = raw.get(key)
        return default if value is None else check(value, f"general_settings.{key}")

    log_format = get("log_format", as_str, "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"general_settings.log_format: expected text or json, got {log_format!r}")
    log_level = get("log_level", as_str, None)
    if log_level is not None and log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"general_settings.log_level: expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    alerting = tuple(a.lower() for a in get("alerting", as_str_list, ()))
    for i, channel in enumerate(alerting):
        if channel not in ALERT_CHANNELS:
            raise ConfigError(f"general_settings.alerting[{i}]: {channel!r} is not supported; use webhook (or slack)")
    # LiteLLM's Slack alerting reads SLACK_WEBHOOK_URL; a URL in the config wins.
    url = get("alerting_webhook_url", as_str, None) or get("webhook_url", as_str, None)
    if url is None and "slack" in alerting:
        url = env.get("SLACK_WEBHOOK_URL") or None
    if alerting and not url:
        raise ConfigError(
            "general_settings.alerting_webhook_url: missing; alerting needs a webhook URL "
            "(or SLACK_WEBHOOK_URL in the environment with alerting: [slack])"
        )
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError("general_settings.alerting_webhook_url: expected an http:// or https:// URL")
    types = get("alert_types", as_str_list, ALERT_TYPES)
    args = raw.get("alerting_args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError("general_settings.alerting_args: expected a mapping")

    def arg(key: str, default: float) -> float:
        value = args.get(key)
        return default if value is None else as_number(value, f"general_settings.alerting_args.{key}", minimum=0.01)

    return OpsSettings(
        metrics_require_auth=get("metrics_require_auth", as_bool, False),
        metrics_per_key=get("metrics_per_key", as_bool, False),
        log_format=log_format,
        log_level=log_level.lower() if log_level else None,
        store_prompts_in_spend_logs=get("store_prompts_in_spend_logs", as_bool, False),
        max_stored_prompt_chars=get("max_stored_prompt_chars", lambda v, p: as_int(v, p, minimum=1), 10_000),
        alerting=alerting,
        webhook_url=url,
        alert_types=tuple(t for t in types if t in ALERT_TYPES),
        budget_thresholds=_thresholds(args.get("budget_thresholds")),
        alert_check_interval_s=arg("check_interval", 10.0),
        alert_repeat_interval_s=arg("repeat_interval", 3600.0),
    )


def _thresholds(value: Any) -> tuple[float, ...]:
    """Fractions of max_budget, e.g. [0.8, 1.0]; percentages (80, 100) are accepted too."""
    from edgeproxy.config import ConfigError, as_number

    if value is None:
        return DEFAULT_BUDGET_THRESHOLDS
    path = "general_settings.alerting_args.budget_thresholds"
    items = value if isinstance(value, list) else [value]
    fractions = []
    for i, item in enumerate(items):
        number = as_number(item, f"{path}[{i}]", minimum=0.0)
        fraction = number / 100 if number > 1.5 else number  # 80 means 80 %; 1.0 and 1.2 are fractions
        if not 0 < fraction <= 1.5 or not math.isfinite(fraction):
            raise ConfigError(f"{path}[{i}]: expected a fraction of max_budget like 0.8 (or 80), got {item!r}")
        fractions.append(fraction)
    return tuple(sorted(set(fractions)))
