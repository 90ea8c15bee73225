"""What every CLI module shares: the error type rendered in one place, config loading, the --config option.

Kept apart from cli.py so that command modules can import it without importing cli.py (which imports them).
"""

from __future__ import annotations

import os
from typing import Any

import click

from edgeproxy.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "config.yaml"


class CliError(click.ClickException):
    """One line to stderr and a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: Any = None) -> None:
        click.echo(f"edgeproxy: {self.message}", err=True)


def load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", exit_code=2) from None


config_option = click.option(
    "--config",
    "config_path",
    default=lambda: os.environ.get("EDGEPROXY_CONFIG", DEFAULT_CONFIG),
    show_default="config.yaml, or $EDGEPROXY_CONFIG",
    help="Path to the LiteLLM-style config file.",
)
