"""Typed, validated configuration from a LiteLLM-style `config.yaml`.

Loading happens once at startup: environment references are resolved, every value is checked against the
schema below, and the result is a tree of frozen dataclasses. A wrong value raises `ConfigError` with one
line naming the path (`model_list[2].litellm_params.api_base`) and what is expected; an unknown key only
warns, with the closest known name, because LiteLLM configs carry many settings we do not act on.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeproxy.opsconfig import OpsSettings, parse_ops
from edgeproxy.redisconfig import RedisSettings, resolve_redis

log = logging.getLogger("edgeproxy.config")

DEFAULT_TIMEOUT_S = 600.0
# Ollama may need minutes to load a model before the first byte: the stream deadline must allow for it.
DEFAULT_STREAM_TIMEOUT_S = 300.0
DEFAULT_MAX_CONNECTIONS = 1000
PROVIDERS = ("openai", "ollama", "ollama_chat", "anthropic", "moonshot", "deepseek", "mock")
DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://localhost:11434",
    "ollama_chat": "http://localhost:11434",
    "anthropic": "https://api.anthropic.com",
    "moonshot": "https://api.moonshot.ai/v1",
    "deepseek": "https://api.deepseek.com",
    "mock": "http://mock.invalid/v1",
}
ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "usage-based-routing",
    "usage-based-routing-v2",
    "latency-based-routing",
    "cost-based-routing",
)


class ConfigError(Exception):
    """A config value is wrong. The message is one line: path, problem, fix."""


# --------------------------------------------------------------------------- environment references

_ENV_WHOLE = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")
_ENV_INLINE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def resolve_env(value: Any, env: Mapping[str, str]) -> Any:
    """Replace `os.environ/VAR`, `${VAR}` and `${VAR:-default}` in every string of a YAML tree.

    A value that is only a reference to an unset variable becomes None (as LiteLLM does), so an optional
    secret that is not set simply stays unset; a reference inside a longer string becomes "".
    """
    if isinstance(value, dict):
        return {k: resolve_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, env) for v in value]
    if not isinstance(value, str):
        return value
    whole = _ENV_WHOLE.match(value.strip())
    if whole:
        return env.get(whole.group(1))
    only = _ENV_INLINE.fullmatch(value.strip())
    if only:
        found = env.get(only.group(1))
        if found is None or (found == "" and only.group(2) is not None):
            return only.group(2)
        return found

    def substitute(match: re.Match[str]) -> str:
        found = env.get(match.group(1))
        if found is None or (found == "" and match.group(2) is not None):
            return match.group(2) or ""
        return found

    return _ENV_INLINE.sub(substitute, value)


def mask_secret(secret: str | None) -> str | None:
    """What may be shown of a secret: a hint of its start and its last 4 characters."""
    if not secret:
        return secret
    if len(secret) <= 8:
        return "****"
    return f"{secret[:3]}...{secret[-4:]}"


# --------------------------------------------------------------------------- typed settings


@dataclass(frozen=True, slots=True)
class Deployment:
    """One entry of `model_list`: a model group name and where to send its calls."""

    model_name: str
    provider: str
    model: str
    api_base: str
    api_key: str | None = field(repr=False)
    deployment_id: str
    rpm: int | None = None
    tpm: int | None = None
    weight: float | None = None
    order: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S
    max_tokens: int | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    # Streams hold a connection for their whole length: a pool of 100 made the 101st concurrent stream wait.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Other litellm_params (keep_alive, api_version, mock_response, extra headers...), passed to providers.
    params: Mapping[str, Any] = field(default_factory=dict)
    model_info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def litellm_model(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def public_api_base(self) -> str:
        """api_base without credentials, safe for /health, logs and errors."""
        return strip_credentials(self.api_base)

    def describe(self) -> dict[str, Any]:
        """The deployment as `config check` shows it: secrets masked."""
        return {
            "model_name": self.model_name,
            "deployment_id": self.deployment_id,
            "model": self.litellm_model,
            "api_base": self.public_api_base,
            "api_key": mask_secret(self.api_key),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "timeout_s": self.timeout_s,
            "stream_timeout_s": self.stream_timeout_s,
        }


@dataclass(frozen=True, slots=True)
class RouterSettings:
    routing_strategy: str = "simple-shuffle"
    allowed_fails: int = 3
    cooldown_time_s: float = 60.0
    num_retries: int = 2
    timeout_s: float | None = None
    stream_timeout_s: float | None = None
    retry_backoff_base_s: float = 0.5
    retry_backoff_max_s: float = 8.0
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_fallbacks: tuple[str, ...] = ()
    context_window_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    model_group_alias: Mapping[str, str] = field(default_factory=dict)
    hidden_aliases: frozenset[str] = frozenset()


# LiteLLM's default: chat, text completions and embeddings (sync and async names mean the same route here).
DEFAULT_CACHED_CALL_TYPES = (
    "acompletion", "completion", "atext_completion", "text_completion", "aembedding", "embedding",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = False
    type: str = "local"
    host: str | None = None
    port: int | None = None
    password: str | None = field(default=None, repr=False)
    url: str | None = field(default=None, repr=False)
    ttl_s: float = 600.0
    namespace: str | None = None
    supported_call_types: tuple[str, ...] = DEFAULT_CACHED_CALL_TYPES
    track_keys: bool = True  # Redis key tracking (edgeproxy/cache/tracking.py)
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LitellmSettings:
    cache: CacheSettings = field(default_factory=CacheSettings)
    drop_params: bool = False
    request_timeout_s: float | None = None
    num_retries: int | None = None


@dataclass(frozen=True, slots=True)
class GeneralSettings:
    master_key: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    database_connection_pool_limit: int = 10
    background_health_checks: bool = False
    health_check_interval_s: float = 300.0
    health_check_timeout_s: float = 10.0
    max_request_size_mb: float = 32.0
    proxy_batch_write_at_s: float = 1.0
    budget_exceeded_status_code: int = 422
    track_cost: bool = True
    track_spend: bool = True
    key_cache_ttl_s: float = 30.0
    shutdown_grace_s: float = 30.0
    spend_journal: str | None = None  # default: beside the SQLite file, else in the working directory
    budget_reset_interval_s: float = 60.0
    ops: OpsSettings = field(default_factory=OpsSettings)  # metrics, logs, alerts (opsconfig.py)


@dataclass(frozen=True, slots=True)
class Config:
    deployments: tuple[Deployment, ...]
    router: RouterSettings = field(default_factory=RouterSettings)
    litellm: LitellmSettings = field(default_factory=LitellmSettings)
    general: GeneralSettings = field(default_factory=GeneralSettings)
    source: str | None = None
    redis: RedisSettings | None = None  # the Redis for the cache, limits and shared state (redisconfig.py)

    @property
    def model_groups(self) -> dict[str, tuple[Deployment, ...]]:
        groups: dict[str, list[Deployment]] = {}
        for d in self.deployments:
            groups.setdefault(d.model_name, []).append(d)
        return {name: tuple(ds) for name, ds in groups.items()}


def strip_credentials(url: str) -> str:
    """Drop `user:password@` from a URL."""
    return re.sub(r"//[^/@]*@", "//", url, count=1)


# --------------------------------------------------------------------------- checking values


class _Checker:
    """Reads one mapping of the YAML tree, checking types and noting unknown keys."""

    def __init__(self, raw: Any, path: str, known: tuple[str, ...]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_kind(raw)}")
        self.raw: dict[str, Any] = raw
        self.path = path
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else " and is ignored"
                log.warning("config: unknown key %s.%s%s", path, key, hint)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, check: Callable[[Any, str], Any], default: Any = None) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default
        return check(value, self.at(key))


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def as_str(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
    return str(value)


def as_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"{path}: expected true or false, got {value!r}")


def as_number(value: Any, path: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise ConfigError(f"{path}: expected a finite number >= {minimum:g}, got {value!r}")
    return number


def as_int(value: Any, path: str, *, minimum: int = 0) -> int:
    number = as_number(value, path, minimum=minimum)
    if number != int(number):
        raise ConfigError(f"{path}: expected a whole number, got {value!r}")
    return int(number)


def as_str_list(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of model names, got {_kind(value)}")
    return tuple(as_str(v, f"{path}[{i}]") for i, v in enumerate(value))


def as_fallbacks(value: Any, path: str) -> dict[str, tuple[str, ...]]:
    """LiteLLM writes fallbacks as a list of one-key mappings: [{"a": ["b", "c"]}]."""
    items = value if isinstance(value, list) else [value]
    result: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f'{path}[{i}]: expected a mapping like {{"model-a": ["model-b"]}}, got {_kind(item)}')
        for group, targets in item.items():
            result[str(group)] = as_str_list(targets, f"{path}[{i}].{group}")
    return result


# --------------------------------------------------------------------------- sections

_DEPLOYMENT_PARAMS = (
    "model", "api_base", "base_url", "api_key", "rpm", "tpm", "weight", "order", "timeout", "stream_timeout",
    "max_tokens", "input_cost_per_token", "output_cost_per_token", "max_connections", "keep_alive",
    "api_version", "mock_response", "extra_headers", "organization", "temperature", "top_p",
    "max_parallel_requests", "num_ctx", "custom_llm_provider", "dimensions",
)  # fmt: skip
_TOP = ("model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables")


def _deployment(raw: Any, index: int, router: RouterSettings) -> Deployment:
    path = f"model_list[{index}]"
    entry = _Checker(raw, path, ("model_name", "litellm_params", "model_info"))
    model_name = entry.get("model_name", as_str)
    if not model_name:
        raise ConfigError(f"{path}.model_name: missing; every deployment needs the name clients will send")
    params = _Checker(entry.raw.get("litellm_params"), entry.at("litellm_params"), _DEPLOYMENT_PARAMS)
    full_model = params.get("model", as_str)
    if not full_model:
        raise ConfigError(f"{params.at('model')}: missing; write it as provider/model, e.g. ollama/llama3.2")
    provider, _, model = full_model.partition("/")
    provider = params.get("custom_llm_provider", as_str, provider)
    if provider not in PROVIDERS or not model:
        raise ConfigError(
            f"{params.at('model')}: {full_model!r} needs a provider prefix, one of: {', '.join(PROVIDERS)}"
        )
    api_base = params.get("api_base", as_str) or params.get("base_url", as_str) or DEFAULT_API_BASES[provider]
    if not re.match(r"^https?://[^/]", api_base):
        raise ConfigError(f"{params.at('api_base')}: expected an http:// or https:// URL, got {api_base!r}")
    model_info = entry.raw.get("model_info") or {}
    if not isinstance(model_info, dict):
        raise ConfigError(f"{entry.at('model_info')}: expected a mapping, got {_kind(model_info)}")
    typed = set(_DEPLOYMENT_PARAMS[:15])
    return Deployment(
        model_name=model_name,
        provider=provider,
        model=model,
        api_base=api_base.rstrip("/"),
        api_key=params.get("api_key", as_str),
        deployment_id=str(model_info.get("id") or f"{model_name}-{index}"),
        rpm=params.get("rpm", as_int),
        tpm=params.get("tpm", as_int),
        weight=params.get("weight", as_number),
        order=params.get("order", as_int),
        timeout_s=params.get("timeout", as_number, router.timeout_s or DEFAULT_TIMEOUT_S),
        stream_timeout_s=params.get("stream_timeout", as_number, router.stream_timeout_s or DEFAULT_STREAM_TIMEOUT_S),
        max_tokens=params.get("max_tokens", as_int),
        input_cost_per_token=params.get("input_cost_per_token", as_number),
        output_cost_per_token=params.get("output_cost_per_token", as_number),
        max_connections=params.get("max_connections", lambda v, p: as_int(v, p, minimum=1), DEFAULT_MAX_CONNECTIONS),
        params={k: v for k, v in params.raw.items() if k not in typed and v is not None},
        model_info=model_info,
    )


def _aliases(value: Any, path: str) -> tuple[dict[str, str], frozenset[str]]:
    if not isinstance(value, dict):
        raise ConfigError(f'{path}: expected a mapping like {{"gpt-4o": "qwen-dell"}}, got {_kind(value)}')
    aliases: dict[str, str] = {}
    hidden: set[str] = set()
    for alias, target in value.items():
        if isinstance(target, dict):
            aliases[str(alias)] = as_str(target.get("model"), f"{path}.{alias}.model")
            if as_bool(target.get("hidden", False), f"{path}.{alias}.hidden"):
                hidden.add(str(alias))
        else:
            aliases[str(alias)] = as_str(target, f"{path}.{alias}")
    return aliases, frozenset(hidden)


def _router(raw: Any) -> RouterSettings:
    known = (
        "routing_strategy", "allowed_fails", "cooldown_time", "num_retries", "timeout", "stream_timeout",
        "retry_after", "fallbacks", "default_fallbacks", "context_window_fallbacks", "model_group_alias",
        "redis_host", "redis_port", "redis_password", "enable_pre_call_checks", "retry_policy",
        "allowed_fails_policy", "content_policy_fallbacks", "routing_strategy_args", "cache_responses",
    )  # fmt: skip
    c = _Checker(raw, "router_settings", known)
    strategy = c.get("routing_strategy", as_str, "simple-shuffle")
    if strategy not in ROUTING_STRATEGIES:
        raise ConfigError(
            f"router_settings.routing_strategy: {strategy!r} is not one of {', '.join(ROUTING_STRATEGIES)}"
        )
    aliases, hidden = c.get("model_group_alias", _aliases, ({}, frozenset()))
    return RouterSettings(
        routing_strategy=strategy,
        allowed_fails=c.get("allowed_fails", as_int, 3),
        cooldown_time_s=c.get("cooldown_time", as_number, 60.0),
        num_retries=c.get("num_retries", as_int, 2),
        timeout_s=c.get("timeout", as_number),
        stream_timeout_s=c.get("stream_timeout", as_number),
        retry_backoff_base_s=c.get("retry_after", as_number, 0.5) or 0.5,
        fallbacks=c.get("fallbacks", as_fallbacks, {}),
        default_fallbacks=c.get("default_fallbacks", as_str_list, ()),
        context_window_fallbacks=c.get("context_window_fallbacks", as_fallbacks, {}),
        model_group_alias=aliases,
        hidden_aliases=hidden,
    )


def _cache(enabled: bool, raw: Any, env: Mapping[str, str]) -> CacheSettings:
    known = (
        "type", "host", "port", "password", "url", "ttl", "namespace", "supported_call_types", "ssl",
        "service_name", "sentinel_nodes", "sentinel_password", "redis_startup_nodes", "max_size_bytes",
        "max_entries", "mode", "default_in_memory_ttl", "default_in_redis_ttl", "track_keys",
    )  # fmt: skip
    c = _Checker(raw, "litellm_settings.cache_params", known)
    cache_type = c.get("type", as_str, "redis" if (raw or {}).get("host") else "local")
    if cache_type not in ("local", "redis", "redis-semantic") or cache_type == "redis-semantic":
        raise ConfigError(f"litellm_settings.cache_params.type: {cache_type!r} is not supported; use redis or local")
    for bound in ("max_entries", "max_size_bytes"):  # the local cache's limits (edgeproxy/cache/local.py)
        c.get(bound, lambda v, p: as_int(v, p, minimum=1))
    return CacheSettings(
        enabled=enabled,
        type=cache_type,
        host=c.get("host", as_str),
        port=c.get("port", as_int),
        password=c.get("password", as_str),
        url=c.get("url", as_str),
        ttl_s=c.get("ttl", as_number, 600.0),
        namespace=c.get("namespace", as_str),
        supported_call_types=c.get("supported_call_types", as_str_list, DEFAULT_CACHED_CALL_TYPES),
        track_keys=c.get("track_keys", as_bool, True),
        params={k: v for k, v in c.raw.items() if v is not None},
    )


def _litellm(raw: Any, env: Mapping[str, str]) -> LitellmSettings:
    known = (
        "cache", "cache_params", "drop_params", "request_timeout", "num_retries", "set_verbose", "json_logs",
        "success_callback", "failure_callback", "callbacks", "telemetry", "max_budget", "modify_params",
        "default_max_internal_user_budget", "max_internal_user_budget", "turn_off_message_logging",
    )  # fmt: skip
    c = _Checker(raw, "litellm_settings", known)
    enabled = c.get("cache", as_bool, False)
    return LitellmSettings(
        cache=_cache(enabled, c.raw.get("cache_params"), env),
        drop_params=c.get("drop_params", as_bool, False),
        request_timeout_s=c.get("request_timeout", as_number),
        num_retries=c.get("num_retries", as_int),
    )


def _general(raw: Any, env: Mapping[str, str]) -> GeneralSettings:
    known = (
        "master_key", "database_url", "database_connection_pool_limit", "background_health_checks",
        "health_check_interval", "health_check_timeout", "max_request_size_mb", "proxy_batch_write_at",
        "budget_exceeded_status_code", "track_cost", "track_spend", "key_cache_ttl", "shutdown_grace",
        "alerting", "alerting_threshold", "alert_types", "store_model_in_db", "disable_spend_logs",
        "database_connection_timeout", "allow_requests_on_db_unavailable", "max_response_size_mb",
        "proxy_budget_rescheduler_min_time", "proxy_budget_rescheduler_max_time", "disable_reset_budget",
        "ui_access_mode", "litellm_key_header_name", "alerting_args", "store_prompts_in_spend_logs",
        "metrics_require_auth", "log_format", "log_level", "webhook_url", "spend_journal",
        "budget_reset_interval", "alerting_webhook_url", "max_stored_prompt_chars", "metrics_per_key",
    )  # fmt: skip
    c = _Checker(raw, "general_settings", known)
    master_key = c.get("master_key", as_str) or env.get("EDGEPROXY_MASTER_KEY") or env.get("LITELLM_MASTER_KEY")
    database_url = c.get("database_url", as_str) or env.get("DATABASE_URL") or None
    status = c.get("budget_exceeded_status_code", as_int, 422)
    if not 400 <= status <= 499:
        raise ConfigError(f"general_settings.budget_exceeded_status_code: expected a 4xx status, got {status}")
    return GeneralSettings(
        master_key=master_key or None,
        database_url=database_url,
        database_connection_pool_limit=c.get(
            "database_connection_pool_limit", lambda v, p: as_int(v, p, minimum=1), 10
        ),
        background_health_checks=c.get("background_health_checks", as_bool, False),
        health_check_interval_s=c.get("health_check_interval", lambda v, p: as_number(v, p, minimum=0.01), 300.0),
        health_check_timeout_s=c.get("health_check_timeout", lambda v, p: as_number(v, p, minimum=0.01), 10.0),
        max_request_size_mb=c.get("max_request_size_mb", as_number, 32.0),
        proxy_batch_write_at_s=c.get("proxy_batch_write_at", lambda v, p: as_number(v, p, minimum=0.01), 1.0),
        budget_exceeded_status_code=status,
        track_cost=c.get("track_cost", as_bool, True),
        track_spend=c.get("track_spend", as_bool, True),
        key_cache_ttl_s=c.get("key_cache_ttl", as_number, 30.0),
        shutdown_grace_s=c.get("shutdown_grace", as_number, 30.0),
        spend_journal=c.get("spend_journal", as_str),
        budget_reset_interval_s=c.get("budget_reset_interval", lambda v, p: as_number(v, p, minimum=0.01), 60.0),
        ops=parse_ops(c.raw, env),
    )


def _check_model_references(config: Config) -> None:
    groups = config.model_groups
    router = config.router
    references: list[tuple[str, str]] = []
    for source, mapping in (
        ("fallbacks", router.fallbacks),
        ("context_window_fallbacks", router.context_window_fallbacks),
    ):
        for group, targets in mapping.items():
            references.append((f"router_settings.{source}.{group}", group))
            references += [(f"router_settings.{source}.{group}", t) for t in targets]
    references += [("router_settings.default_fallbacks", t) for t in router.default_fallbacks]
    references += [(f"router_settings.model_group_alias.{a}", t) for a, t in router.model_group_alias.items()]
    for path, name in references:
        if name not in groups:
            close = difflib.get_close_matches(name, list(groups), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(groups))}"
            raise ConfigError(f"{path}: model group {name!r} is not in model_list{hint}")


def parse_config(raw: Any, env: Mapping[str, str] | None = None, source: str | None = None) -> Config:
    """Build a Config from a parsed YAML document."""
    env = os.environ if env is None else env
    top = _Checker(raw, "", _TOP)
    extra_env = top.raw.get("environment_variables") or {}
    if not isinstance(extra_env, dict):
        raise ConfigError(f"environment_variables: expected a mapping, got {_kind(extra_env)}")
    # LiteLLM exports these before reading the rest; a real environment variable wins.
    env = {**{str(k): str(v) for k, v in extra_env.items() if v is not None}, **env}
    resolved = resolve_env(top.raw, env)
    models = resolved.get("model_list")
    if not isinstance(models, list) or not models:
        raise ConfigError("model_list: expected a non-empty list of deployments (model_name + litellm_params)")
    router = _router(resolved.get("router_settings"))
    deployments = tuple(_deployment(m, i, router) for i, m in enumerate(models))
    ids = [d.deployment_id for d in deployments]
    for i, d in enumerate(deployments):
        if ids.index(d.deployment_id) != i:
            raise ConfigError(
                f"model_list[{i}].model_info.id: {d.deployment_id!r} is already used by another deployment"
            )
    litellm = _litellm(resolved.get("litellm_settings"), env)
    try:
        redis = resolve_redis(litellm.cache, resolved.get("router_settings") or {}, env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config = Config(
        deployments=deployments,
        router=router,
        litellm=litellm,
        general=_general(resolved.get("general_settings"), env),
        source=source,
        redis=redis,
    )
    _check_model_references(config)
    return config


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and check a config file; raises ConfigError with one line on any problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file; pass --config PATH or create config.yaml") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from None
    return parse_config(raw, env, source=str(file))
