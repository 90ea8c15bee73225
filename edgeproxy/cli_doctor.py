"""`edgeproxy doctor`: check the config, the master key, the database, Redis and every upstream, and say how
to fix what is wrong.

Each check is a small function returning a `Check`; the command prints them as a table and exits 1 when
any failed, so it also works as a pre-flight step in scripts (`edgeproxy doctor && edgeproxy run`).
Nothing secret is printed: upstreams are shown by `public_api_base`, URLs without passwords, and every
line is scrubbed of the configured secrets as a last line of defence (an upstream may echo a key back).
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from urllib.parse import unquote, urlsplit

import click

from edgeproxy.cli_common import config_option
from edgeproxy.config import Config, ConfigError, Deployment, load_config

OK, WARN, FAIL = "ok", "warn", "FAIL"
REDIS_TIMEOUT_S = 2.0
MIN_MASTER_KEY_LENGTH = 16


@dataclass(frozen=True)
class Check:
    check: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str = ""


@click.command("doctor")
@config_option
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, help="Seconds to wait for each upstream.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(config_path: str, timeout_s: float, as_json: bool) -> None:
    """Check config, master key, database, Redis and each upstream; print what is wrong and how to fix it."""
    checks, secrets = run_checks(config_path, timeout_s)
    checks = [_scrubbed(check, secrets) for check in checks]
    if as_json:
        click.echo(json.dumps([asdict(check) for check in checks], indent=2))
    else:
        click.echo(_table(checks))
    failed = sum(check.status == FAIL for check in checks)
    if failed:
        if not as_json:
            click.echo(f"{failed} check(s) failed", err=True)
        click.get_current_context().exit(1)


def run_checks(config_path: str, probe_timeout_s: float) -> tuple[list[Check], list[str]]:
    """Every check in order, and the secrets the output must not contain. Stops after a broken config."""
    config, config_check = _check_config(config_path)
    if config is None:
        return [config_check], []
    checks = [config_check, _check_master_key(config), _check_database(config)]
    redis_check = _check_redis(config)
    if redis_check is not None:
        checks.append(redis_check)
    checks += _check_upstreams(config, probe_timeout_s)
    return checks, _secrets(config)


# ---------------------------------------------------------------- config and master key


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _config_warnings() -> Iterator[list[str]]:
    # The loader only logs unknown keys (LiteLLM configs carry many): collect them to show in the table.
    collector = _Collector()
    logger = logging.getLogger("edgeproxy.config")
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)


def _check_config(path: str) -> tuple[Config | None, Check]:
    with _config_warnings() as warnings:
        try:
            config = load_config(path)
        except ConfigError as error:
            return None, Check("config", FAIL, str(error), "fix that value; `edgeproxy config check` re-validates")
    summary = f"{config.source}: {len(config.deployments)} deployments in {len(config.model_groups)} model groups"
    if warnings:
        detail = summary + "; " + "; ".join(message.removeprefix("config: ") for message in warnings)
        return config, Check("config", WARN, detail, "rename or remove those keys (edgeproxy ignores them)")
    return config, Check("config", OK, summary)


def _check_master_key(config: Config) -> Check:
    key = config.general.master_key
    if not key:
        return Check(
            "master key",
            FAIL,
            "not set: `edgeproxy run` refuses to start",
            "set general_settings.master_key, or export LITELLM_MASTER_KEY=sk-...",
        )
    if len(key) < MIN_MASTER_KEY_LENGTH:
        return Check(
            "master key",
            WARN,
            f"set, but only {len(key)} characters: it is the admin password",
            "use a long random one: python3 -c 'import secrets; print(\"sk-\" + secrets.token_urlsafe(32))'",
        )
    return Check("master key", OK, "set")


# ---------------------------------------------------------------- database


def _check_database(config: Config) -> Check:
    from storage import Storage, StorageError
    from storage.engine import DEFAULT_SQLITE_FILE, describe_url

    url = config.general.database_url or f"sqlite:///{os.path.abspath(DEFAULT_SQLITE_FILE)}"
    where_to_fix = "general_settings.database_url (or DATABASE_URL)"
    try:
        name = describe_url(url)
    except Exception:
        return Check("database", FAIL, "the database URL is not a valid URL", f"correct {where_to_fix}")
    missing = _missing_sqlite_file(url)
    if missing:
        # Opening it would create it: a doctor only looks.
        return Check(
            "database", WARN, f"{missing} does not exist yet", "`edgeproxy run` or `edgeproxy db migrate` creates it"
        )
    try:
        storage = Storage.open(url, pool_size=1)
    except (ValueError, StorageError) as error:
        return Check("database", FAIL, str(error), f"correct {where_to_fix}")
    try:
        storage.ping()
        current = storage.current_revision()
    except StorageError as error:
        return Check("database", FAIL, str(error), f"start the database server, or correct {where_to_fix}")
    finally:
        storage.close()
    return _revision_check(name, current)


def _missing_sqlite_file(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = os.path.abspath(os.path.expanduser(parsed.database))
    return None if os.path.exists(path) else path


def _revision_check(name: str, current: str | None) -> Check:
    from alembic.script import ScriptDirectory

    from storage.migrate import MIGRATIONS_DIR, head_revision

    head = head_revision()
    if current == head:
        return Check("database", OK, f"{name}: connected, schema at the newest revision ({head})")
    if current is None:
        return Check(
            "database", WARN, f"{name}: connected, no schema yet", "`edgeproxy db migrate` (or `run`) creates it"
        )
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if current not in known:
        return Check(
            "database",
            FAIL,
            f"{name}: schema revision {current} is from a newer edgeproxy (this one knows up to {head})",
            "upgrade edgeproxy, or point it at another database",
        )
    return Check(
        "database",
        WARN,
        f"{name}: schema at revision {current}, this edgeproxy's newest is {head}",
        "`edgeproxy db migrate` (also done at every `run`)",
    )


# ---------------------------------------------------------------- Redis


_REDIS_FIXES = {
    "cache_params": "litellm_settings.cache_params (host, port, password, url, sentinel_nodes or redis_startup_nodes)",
    "router_settings": "router_settings.redis_host, redis_port and redis_password",
    "REDIS_URL": "the REDIS_URL environment variable",
    "REDIS_HOST": "the REDIS_HOST, REDIS_PORT and REDIS_PASSWORD environment variables",
    "REDIS_SENTINEL_NODES": "the REDIS_SENTINEL_NODES, REDIS_SERVICE_NAME and REDIS_SENTINEL_PASSWORD variables",
    "REDIS_CLUSTER_NODES": "the REDIS_CLUSTER_NODES and REDIS_PASSWORD environment variables",
}


def _check_redis(config: Config) -> Check | None:
    """PING the Redis the server would use (config.redis: cache_params, router_settings or the environment)."""
    settings = config.redis
    if settings is None:
        return None
    import redis

    from edgeproxy.redistopology import RedisConnection  # one server, Sentinel or a cluster, as `run` connects

    where = f"{settings.public_url} (from {settings.source})"
    settings_to_fix = _REDIS_FIXES.get(settings.source, settings.source)
    try:
        connection = RedisConnection(replace(settings, socket_timeout_s=REDIS_TIMEOUT_S), max_connections=1)
    except ValueError as error:
        return Check("redis", FAIL, f"{where}: {error}", f"correct {settings_to_fix}")
    try:
        connection.client().ping()
    except redis.AuthenticationError as error:
        return Check("redis", FAIL, f"{where}: {error}", f"check the password in {settings_to_fix}")
    except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
        return Check("redis", FAIL, f"{where}: {error}", f"start Redis there, or correct {settings_to_fix}")
    finally:
        connection.close()
    return Check("redis", OK, f"{where}: PING answered")


# ---------------------------------------------------------------- upstreams


def _check_upstreams(config: Config, timeout_s: float) -> list[Check]:
    import trio

    results = trio.run(_probe_all, config.deployments, timeout_s)
    return [
        _upstream_check(deployment, results.get(deployment.deployment_id), timeout_s)
        for deployment in config.deployments
    ]


async def _probe_all(deployments: tuple[Deployment, ...], timeout_s: float) -> dict[str, BaseException | float]:
    """Probe every non-mock deployment at once; each gets its error, or its latency in seconds."""
    import trio

    from edgeproxy.errors import ProxyError
    from edgeproxy.upstream import Upstreams

    results: dict[str, BaseException | float] = {}

    async def probe(deployment: Deployment) -> None:
        started = trio.current_time()
        try:
            with trio.fail_after(timeout_s):
                await upstreams.probe(deployment)
            results[deployment.deployment_id] = trio.current_time() - started
        except (ProxyError, trio.TooSlowError) as error:
            results[deployment.deployment_id] = error

    upstreams = Upstreams(deployments)
    try:
        async with trio.open_nursery() as nursery:
            for deployment in deployments:
                if deployment.provider != "mock":
                    nursery.start_soon(probe, deployment)
    finally:
        await upstreams.aclose()
    return results


def _upstream_check(deployment: Deployment, result: BaseException | float | None, timeout_s: float) -> Check:
    name = f"upstream {deployment.model_name} ({deployment.deployment_id})"
    base = deployment.public_api_base
    if deployment.provider == "mock":
        return Check(name, OK, "built-in mock provider (answers locally)")
    if isinstance(result, float):
        return Check(name, OK, f"{base}: answered in {result * 1000:.0f} ms")
    return _upstream_failure(name, deployment, result, timeout_s)


def _upstream_failure(name: str, deployment: Deployment, error: BaseException | None, timeout_s: float) -> Check:
    from edgeproxy.errors import ProxyError, UpstreamConnectionError, UpstreamHTTPError

    base = deployment.public_api_base
    entry = f"model_list entry {deployment.model_name!r}"
    if isinstance(error, UpstreamConnectionError):
        return Check(name, FAIL, f"{base}: nothing answers", f"start the server there, or fix api_base of {entry}")
    if not isinstance(error, ProxyError) or error.status == 504:  # our deadline, or httpx's own timeout
        return Check(
            name, FAIL, f"{base}: no answer within {timeout_s:g} s", "is the server up and reachable (firewall, VPN)?"
        )
    detail = f"{base}: {error.message}"
    if isinstance(error, UpstreamHTTPError):
        status = error.upstream_status
        if status in (401, 403):
            return Check(name, FAIL, detail, f"check api_key of {entry} (is its environment variable set?)")
        if status == 404:
            return Check(name, FAIL, detail, f"check api_base of {entry} (OpenAI-compatible servers need /v1)")
        if status == 429:
            return Check(name, WARN, detail, "it answers but is rate limiting: lower the load or raise its limit")
    return Check(name, FAIL, detail, f"check that {base} speaks the {deployment.provider} API and see its logs")


# ---------------------------------------------------------------- output


def _secrets(config: Config) -> list[str]:
    found = [deployment.api_key for deployment in config.deployments]
    found += [config.general.master_key, config.litellm.cache.password, *(config.redis.secrets if config.redis else ())]
    for url in (config.general.database_url, config.redis.url if config.redis else None):
        password = urlsplit(url).password if url else None
        found += [password, unquote(password)] if password else []
    # Very short values would blank out ordinary words; they are not worth hiding from one's own terminal.
    return [str(secret) for secret in found if secret and len(str(secret)) >= 4]


def _scrubbed(check: Check, secrets: list[str]) -> Check:
    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "****")
        return text

    return Check(scrub(check.check), check.status, scrub(check.detail), scrub(check.fix))


_HEADERS = ("check", "status", "detail", "how to fix")
_WRAP = (34, 6, 60, 48)


def _table(checks: list[Check]) -> str:
    """Columns, with long details wrapped inside their column."""
    rows = [_HEADERS] + [(c.check, c.status, c.detail, c.fix) for c in checks]
    cells = [[textwrap.wrap(text, width) or [""] for text, width in zip(row, _WRAP, strict=True)] for row in rows]
    widths = [max(max(len(line) for line in row[i]) for row in cells) for i in range(len(_HEADERS))]
    lines: list[str] = []
    for row in cells:
        for index in range(max(len(column) for column in row)):
            parts = [(column[index] if index < len(column) else "").ljust(widths[i]) for i, column in enumerate(row)]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
