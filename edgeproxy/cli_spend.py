"""`edgeproxy spend report|logs` and `edgeproxy prices`: spend and prices from the command line.

The spend commands open the configured database directly (no running proxy needed) and share their
queries with the HTTP API (`edgeproxy.api.spend`). `prices` needs no database at all.

Registered on the `edgeproxy` group by `edgeproxy.cli`; import that module, not this one, first.
Exit codes: 2 bad input (a `--since` like `3x`, a bad config), 3 the database is unavailable.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from edgeproxy.api.spend import key_filter, log_row, parse_day, spend_report
from edgeproxy.cli import CliError, load
from edgeproxy.config import Config, Deployment
from edgeproxy.errors import ProxyError
from edgeproxy.gateway import StartupError, open_storage
from edgeproxy.pricing import FREE, PER_MILLION, Price, Pricing, is_local
from storage import Months, Storage, StorageError, parse_duration
from storage.records import Record
from storage.spend import GroupBy

# --by names on the command line → storage's group_by.
BY: dict[str, GroupBy] = {"model": "model", "key": "api_key", "user": "user", "team": "team"}
NONE_LABEL = "(none)"
F = TypeVar("F", bound=Callable[..., Any])


def config_option(command: F) -> F:
    """`--config`, exactly as every other command takes it (looked up when applied: the modules import
    each other)."""
    from edgeproxy.cli import config_option as option

    return option(command)


# --------------------------------------------------------------------------- helpers


def since_day(raw: str, now: datetime) -> date:
    """`30d`, `12h`, `2w`, `1mo` back from now (the UTC day that moment falls on), or a YYYY-MM-DD day."""
    text = raw.strip()
    today = now.astimezone(UTC).date()
    try:
        duration = parse_duration(text)
    except ValueError:
        try:
            return parse_day("--since", text)
        except ProxyError:
            raise CliError(
                f"--since must be a duration such as 30d, 12h, 2w, 1mo or a date YYYY-MM-DD, got {raw!r}",
                exit_code=2,
            ) from None
    if isinstance(duration, Months):
        months = today.year * 12 + today.month - 1 - duration.count
        year, month = divmod(months, 12)
        return _clamped_day(year, month + 1, today.day)
    return (now.astimezone(UTC) - duration).date()


def _clamped_day(year: int, month: int, day: int) -> date:
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            day -= 1


def _until_day(raw: str | None, today: date) -> date:
    if raw is None:
        return today
    try:
        return parse_day("--until", raw)
    except ProxyError:
        raise CliError(f"--until must be a date YYYY-MM-DD, got {raw!r}", exit_code=2) from None


@contextmanager
def opened_storage(config_path: str) -> Iterator[tuple[Config, Storage]]:
    """The configured database, checked and migrated; database failures exit 3."""
    config = load(config_path)
    try:
        storage = open_storage(config)
    except StartupError as error:
        raise CliError(str(error), exit_code=3) from None
    except StorageError as error:  # Storage.open itself may refuse (an SQLite file that cannot be created)
        raise CliError(f"the database is not usable: {error}", exit_code=3) from None
    try:
        yield config, storage
    except StorageError as error:
        raise CliError(f"database {storage.describe()} is unavailable: {error}", exit_code=3) from None
    except ValueError as error:  # storage's own validation
        raise CliError(str(error), exit_code=2) from None
    finally:
        storage.close()


def group_totals(rows: list[Record], by: GroupBy) -> list[dict[str, Any]]:
    """Per-day report rows summed per group over the whole period, dearest first."""
    groups: dict[str | None, list[Record]] = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    totals = []
    for group, items in groups.items():
        total: dict[str, Any] = {"group": group}
        if by == "api_key":
            total["key_alias"] = items[0].get("key_alias")
            total["key_name"] = items[0].get("key_name")
        for name in ("requests", "successes", "failures", "prompt_tokens", "completion_tokens"):
            total[name] = sum(item[name] for item in items)
        total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
        total["spend"] = math.fsum(item["spend"] for item in items)
        totals.append(total)
    totals.sort(key=lambda t: (-t["spend"], t["group"] or ""))
    return totals


def _label(total: dict[str, Any]) -> str:
    group = total["group"]
    if group is None:
        return NONE_LABEL
    alias = total.get("key_alias") or total.get("key_name")
    if alias:
        return f"{alias} ({group[:8]})" if group != "master" else str(alias)
    return str(group)


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _usd(amount: float) -> str:
    return f"{amount:.6f}"


# --------------------------------------------------------------------------- spend


@click.group("spend")
def spend() -> None:
    """Spend per model, key, user or team, and the per-request log (read from the database)."""


@spend.command("report")
@config_option
@click.option("--by", "by", type=click.Choice(list(BY)), default="model", show_default=True, help="Group by.")
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="Start: a duration back from now (30d, 12h, 2w, 1mo) or YYYY-MM-DD.",
)
@click.option("--until", default=None, help="Last day included, YYYY-MM-DD (default: today, UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def spend_report_command(config_path: str, by: str, since: str, until: str | None, as_json: bool) -> None:
    """Spend, requests and tokens per group over a period (whole UTC days, both ends included)."""
    now = datetime.now(UTC)
    start, end = since_day(since, now), _until_day(until, now.date())
    if start > end:
        raise CliError(f"--since ({start}) is after --until ({end})", exit_code=2)
    group_by = BY[by]
    with opened_storage(config_path) as (_, storage):
        totals = group_totals(spend_report(storage, start, end, group_by), group_by)
    if as_json:
        click.echo(json.dumps(totals, indent=2))
        return
    click.echo(f"spend by {by}, {start} .. {end} (UTC)")
    if not totals:
        click.echo("no spend recorded in this period")
        return
    rows = [
        [
            _label(t),
            str(t["requests"]),
            str(t["prompt_tokens"]),
            str(t["completion_tokens"]),
            str(t["total_tokens"]),
            _usd(t["spend"]),
        ]
        for t in totals
    ]
    total = [
        "total",
        str(sum(t["requests"] for t in totals)),
        str(sum(t["prompt_tokens"] for t in totals)),
        str(sum(t["completion_tokens"] for t in totals)),
        str(sum(t["total_tokens"] for t in totals)),
        _usd(math.fsum(t["spend"] for t in totals)),
    ]
    lines = _table(
        [by.upper(), "REQUESTS", "PROMPT", "COMPLETION", "TOKENS", "SPEND_USD"], [*rows, total], {1, 2, 3, 4, 5}
    )
    for text in lines[:-1]:
        click.echo(text)
    click.echo("-" * len(lines[0]))
    click.echo(lines[-1])


@spend.command("logs")
@config_option
@click.option("--key", "key", default=None, help="A virtual key (sk-...) or its sha256 token.")
@click.option("--user", "user_id", default=None, help="Only this user's requests.")
@click.option("--team", "team_id", default=None, help="Only this team's requests.")
@click.option("--model", "model_group", default=None, help="Only this model group.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="Newest N requests.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def spend_logs_command(
    config_path: str,
    key: str | None,
    user_id: str | None,
    team_id: str | None,
    model_group: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The newest per-request spend rows, optionally filtered."""
    with opened_storage(config_path) as (config, storage):
        rows, total = storage.spend.logs(
            api_key=key_filter(key, config.general.master_key) if key else None,
            user_id=user_id,
            team_id=team_id,
            model_group=model_group,
            size=limit,
        )
    if as_json:
        click.echo(json.dumps([log_row(row) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no matching requests")
        return
    table = [
        [
            row["start_time"].strftime("%Y-%m-%d %H:%M:%S"),
            row["request_id"],
            row["model_group"] or "-",
            row["key_alias"] or (row["api_key"] or "-")[:8],
            row["user_id"] or "-",
            str(row["prompt_tokens"]),
            str(row["completion_tokens"]),
            _usd(row["cost"]),
            row["status"],
        ]
        for row in rows
    ]
    headers = ["TIME (UTC)", "REQUEST ID", "MODEL", "KEY", "USER", "PROMPT", "COMPLETION", "COST_USD", "STATUS"]
    for text in _table(headers, table, {5, 6, 7}):
        click.echo(text)
    click.echo(f"{len(rows)} of {total} matching requests, newest first")


# --------------------------------------------------------------------------- prices


def _per_million(price: Price) -> dict[str, float]:
    return {
        name: round(getattr(price, name) * PER_MILLION, 9) for name in ("input", "output", "cache_read", "cache_write")
    }


def effective_price(pricing: Pricing, deployment: Deployment) -> tuple[Price, str]:
    """What a deployment's calls cost and why: custom (config override), local (free), table, unknown (0)."""
    if deployment.input_cost_per_token is not None or deployment.output_cost_per_token is not None:
        return pricing.price(deployment), "custom"
    if is_local(deployment):
        return FREE, "local"
    found = pricing.lookup(deployment.provider, deployment.model)
    if found is not None:
        return found, "table"
    return FREE, "unknown"


def _config_for_prices(config_path: str) -> Config | None:
    explicit = click.get_current_context().get_parameter_source("config_path") is ParameterSource.COMMANDLINE
    if not explicit and not Path(config_path).is_file():
        return None
    return load(config_path)


@click.command("prices")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the prices as JSON.")
def prices(config_path: str, as_json: bool) -> None:
    """The built-in price table (USD per 1M tokens) and, with a config, each deployment's effective price."""
    pricing = Pricing()
    config = _config_for_prices(config_path)
    table: list[dict[str, Any]] = [
        {"model": name, **_per_million(price)} for name, price in sorted(pricing.table.items())
    ]
    deployments: list[dict[str, Any]] = []
    for deployment in config.deployments if config else ():
        price, source = effective_price(pricing, deployment)
        deployments.append(
            {
                "model_name": deployment.model_name,
                "deployment_id": deployment.deployment_id,
                "model": deployment.litellm_model,
                "source": source,
                **_per_million(price),
            }
        )
    if as_json:
        click.echo(
            json.dumps(
                {"table": table, "config": config.source if config else None, "deployments": deployments}, indent=2
            )
        )
        return
    headers = ["INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE"]
    names = ("input", "output", "cache_read", "cache_write")
    click.echo("built-in prices, USD per 1M tokens")
    rows = [[t["model"], *(f"{t[n]:g}" for n in names)] for t in table]
    for text in _table(["MODEL", *headers], rows, {1, 2, 3, 4}):
        click.echo(f"  {text}")
    if config is None:
        return
    click.echo(f"\ndeployments in {config.source}, USD per 1M tokens")
    rows = [[d["model_name"], d["model"], d["source"], *(f"{d[n]:g}" for n in names)] for d in deployments]
    for text in _table(["MODEL_NAME", "MODEL", "SOURCE", *headers], rows, {3, 4, 5, 6}):
        click.echo(f"  {text}")
    unknown = [d["model"] for d in deployments if d["source"] == "unknown"]
    if unknown:
        click.echo(
            f"warning: no price known for {', '.join(sorted(set(unknown)))}: their calls cost 0 "
            "(set input_cost_per_token / output_cost_per_token)",
            err=True,
        )
