"""The `edgeproxy` command. Errors carry their exit code and are rendered in one place (`main`)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys

import click

from edgeproxy import __version__
from edgeproxy.cli_common import CliError, config_option, load


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # httpx logs every request URL at INFO: URLs may carry credentials, and it is noise at our volume.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeproxy", message="%(prog)s %(version)s")
def cli() -> None:
    """edgeproxy: one OpenAI-compatible endpoint for Ollama, MLX and cloud LLMs."""


@cli.command()
@config_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=4000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes sharing the port.")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level (default: general_settings.log_level, else info).",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="One line per request and event, as text or JSON (default: general_settings.log_format, else text).",
)
def run(config_path: str, host: str, port: int, workers: int, log_level: str | None, log_format: str | None) -> None:
    """Serve the proxy until SIGTERM or Ctrl-C (in-flight requests are drained first); SIGHUP reloads models."""
    _setup_logging(log_level or "info")
    config = load(config_path)
    from edgeproxy.calllog import setup_logging

    # Now that the config is read: its log_level and log_format, unless given on the command line.
    log_level = (log_level or config.general.ops.log_level or "info").lower()
    log_format = (log_format or config.general.ops.log_format).lower()
    setup_logging(log_level, log_format)
    if not config.general.master_key:
        raise CliError(
            "general_settings.master_key is not set: set it in the config or export LITELLM_MASTER_KEY=sk-...",
            exit_code=2,
        )
    from edgeproxy import server
    from edgeproxy.gateway import StartupError

    if workers != 1 and port == 0:
        raise CliError("--workers needs a fixed --port (the workers share it)", exit_code=2)
    try:
        server.migrate_database(config)  # before any thread or worker: migrations in a child (server.py)
        if workers == 1:
            server.run(config, host, port)
            return
    except StartupError as error:
        raise CliError(str(error), exit_code=3) from None
    sys.exit(server.run_workers(config, host, port, workers, log_level, log_format))


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved model list as JSON.")
def config_check(config_path: str, as_json: bool) -> None:
    """Validate the config and print the resolved model list (secrets masked)."""
    _setup_logging("warning")
    config = load(config_path)
    models = [d.describe() for d in config.deployments]
    if as_json:
        click.echo(json.dumps({"config": config.source, "models": models}, indent=2))
        return
    click.echo(f"{config.source}: OK, {len(models)} deployments in {len(config.model_groups)} model groups")
    width = max(len(m["model_name"]) for m in models)
    for m in models:
        click.echo(f"  {m['model_name']:<{width}}  {m['model']:<40} {m['api_base']}  key={m['api_key'] or '-'}")
    if not config.general.master_key:
        click.echo("warning: no master_key: `edgeproxy run` will refuse to start", err=True)


# Imported here, not at the top: cli_spend uses CliError, load and config_option from this module.
from edgeproxy.cli_spend import prices, spend  # noqa: E402

cli.add_command(spend)
cli.add_command(prices)

from edgeproxy.cli_health import health  # noqa: E402

cli.add_command(health)


# The management groups live in their own module; registered here so `edgeproxy --help` lists them.
from edgeproxy.cli_admin import keys_group, teams_group, users_group  # noqa: E402

cli.add_command(keys_group)
cli.add_command(users_group)
cli.add_command(teams_group)


@cli.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("migrate")
@config_option
def db_migrate(config_path: str) -> None:
    """Create or upgrade the schema to the newest revision (also done at every `run`)."""
    from edgeproxy.gateway import StartupError, open_storage

    _setup_logging("warning")
    try:
        storage = open_storage(load(config_path))
    except StartupError as error:
        raise CliError(str(error), exit_code=3) from None
    with storage:
        click.echo(
            f"{storage.describe()}: schema at revision {storage.current_revision()} (head {storage.head_revision()})"
        )


from edgeproxy.cli_db import db_backup, db_copy, db_restore  # noqa: E402
from edgeproxy.cli_doctor import doctor  # noqa: E402

db_group.add_command(db_backup)
db_group.add_command(db_restore)
db_group.add_command(db_copy)
cli.add_command(doctor)


def main() -> None:
    # PyInstaller: worker processes are started with multiprocessing's spawn; this must run first.
    multiprocessing.freeze_support()
    cli(prog_name="edgeproxy")
