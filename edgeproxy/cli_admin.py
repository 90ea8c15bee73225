"""`edgeproxy keys|users|teams`: manage the database directly, with the same functions as the HTTP API.

They open the database named by the config (as `run` does), so they work whether or not a server runs; a
running server notices the change within about a second (its change poller). Options carry the API's field
names, and their values go through the API's validation as text, so the CLI and the API accept and refuse
exactly the same input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from edgeproxy.admin import keys as admin_keys
from edgeproxy.admin import teams as admin_teams
from edgeproxy.admin import text
from edgeproxy.admin import users as admin_users
from edgeproxy.admin.fields import query_int
from edgeproxy.aliases import ModelCatalog
from edgeproxy.cli_common import CliError, config_option, load
from edgeproxy.config import Config
from edgeproxy.errors import ProxyError
from storage import Storage, StorageError

# Exit codes: 2 bad input, 1 not found / conflict / refused, 3 database unavailable.
_EXIT_BY_STATUS = {400: 2, 413: 2, 401: 1, 403: 1, 404: 1, 409: 1, 503: 3}
Command = Callable[..., Any]


@contextmanager
def _errors() -> Iterator[None]:
    """Render every failure as one line with its exit code (`edgeproxy: <message>`)."""
    # The server's modules (trio, httpx, the router) load only when a command runs: `--help` stays fast.
    from edgeproxy.db import proxy_error_for
    from edgeproxy.gateway import StartupError

    try:
        yield
    except ProxyError as error:
        raise CliError(error.message, _EXIT_BY_STATUS.get(error.status, 1)) from None
    except StorageError as error:
        mapped = proxy_error_for(error)
        status = mapped.status if isinstance(mapped, ProxyError) else 503
        raise CliError(str(mapped), _EXIT_BY_STATUS.get(status, 1)) from None
    except StartupError as error:
        raise CliError(str(error), 3) from None
    except ValueError as error:  # storage's own checks (paging and the like)
        raise CliError(str(error), 2) from None


def known_models(config: Config) -> ModelCatalog:
    return ModelCatalog(config.model_groups, config.router.model_group_alias)


@contextmanager
def _session(config_path: str) -> Iterator[tuple[Storage, ModelCatalog]]:
    """The storage the config names (migrated, as `run` would) and the model names keys may be limited to."""
    from edgeproxy.gateway import open_storage  # see _errors: loaded only when a command runs

    config = load(config_path)
    with _errors():
        storage = open_storage(config)
        try:
            yield storage, known_models(config)
        finally:
            storage.close()


def _apply(*decorators: Callable[[Command], Command]) -> Callable[[Command], Command]:
    def decorate(fn: Command) -> Command:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return decorate


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
limit_options = _apply(
    click.option("--models", help="Comma-separated model names it may use ('' = every model)."),
    click.option("--max-budget", help="Budget in USD ('none' removes it)."),
    click.option("--budget-duration", help="Budget window: 30s, 30m, 30h, 30d, 2w or 1mo ('none': never resets)."),
    click.option("--rpm-limit", help="Requests per minute ('none' removes it)."),
    click.option("--tpm-limit", help="Tokens per minute ('none' removes it)."),
    click.option("--max-parallel-requests", help="Requests in flight at once ('none' removes it)."),
    click.option("--metadata", help="A JSON object stored with it."),
    click.option("--blocked/--unblocked", default=None, help="Refuse (or allow again) every request."),
)
key_options = _apply(
    limit_options,
    click.option("--alias", "key_alias", help="A unique, readable name for the key."),
    click.option("--duration", help="Expire after 30s, 30m, 30h, 30d, 2w, 1mo... ('none': never)."),
    click.option("--user-id", help="The owning user (created if unknown)."),
    click.option("--team-id", help="The owning team (must exist)."),
    click.option("--soft-budget", help="Spend in USD at which to warn."),
    click.option(
        "--aliases",
        help="Model aliases for this key, a JSON object: '{\"gpt-4o\": \"qwen-dell\"}' ('{}' removes them).",
    ),
)


def _emit(result: Any, as_json: bool, show: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        show(result)


# ---------------------------------------------------------------- keys


@click.group("keys")
def keys_group() -> None:
    """Create, inspect and revoke virtual keys."""


@keys_group.command("create")
@config_option
@key_options
@click.option("--key", help="Bring your own key (must start with sk-); default: a new random one.")
@json_option
def keys_create(config_path: str, as_json: bool, **options: Any) -> None:
    """Create a virtual key and print it (the only time the key itself is shown)."""
    with _session(config_path) as (storage, models):
        result = admin_keys.generate_key(storage, models, text.option_fields(options), created_by="cli")
    _emit(result, as_json, lambda r: click.echo(text.secret(r)))


@keys_group.command("list")
@config_option
@click.option("--user-id", help="Only this user's keys.")
@click.option("--team-id", help="Only this team's keys.")
@click.option("--alias", "key_alias", help="Only the key with this alias.")
@click.option("--page", default="1", show_default=True, help="Page number.")
@click.option("--size", default="50", show_default=True, help="Keys per page (at most 1000).")
@json_option
def keys_list(config_path: str, as_json: bool, page: str, size: str, **filters: Any) -> None:
    """List keys, oldest first (never their secrets)."""
    with _session(config_path) as (storage, _):
        number, per_page = query_int("page", page, 1), query_int("size", size, 50)
        result = admin_keys.list_keys(storage, number, per_page, **filters)

    def show(found: dict[str, Any]) -> None:
        click.echo(text.table(found["keys"], text.KEY_COLUMNS))
        click.echo(f"page {found['current_page']} of {found['total_pages']}, {found['total_count']} keys")

    _emit(result, as_json, show)


@keys_group.command("info")
@config_option
@click.argument("key")
@json_option
def keys_info(config_path: str, key: str, as_json: bool) -> None:
    """Show one key, named by its plaintext (sk-...) or its 64-hex token."""
    with _session(config_path) as (storage, _):
        result = admin_keys.key_info(storage, key)
    _emit(result, as_json, lambda found: click.echo(text.details(found["info"])))


@keys_group.command("update")
@config_option
@click.argument("key")
@key_options
@click.option("--expires", help="Expiry as an ISO 8601 time, or 'none' for never.")
@json_option
def keys_update(config_path: str, key: str, as_json: bool, **options: Any) -> None:
    """Change the given fields of a key; the others stay as they are."""
    with _session(config_path) as (storage, models):
        result = admin_keys.update_key(storage, models, {"key": key, **text.option_fields(options)})
    _emit(result, as_json, lambda r: click.echo(text.details(r)))


def _key_blocker(blocked: bool) -> Command:
    @config_option
    @click.argument("key")
    @json_option
    def command(config_path: str, key: str, as_json: bool) -> None:
        with _session(config_path) as (storage, _):
            result = admin_keys.set_key_blocked(storage, key, blocked)
        _emit(result, as_json, lambda row: click.echo(f"{row['key_name']}: {'blocked' if blocked else 'unblocked'}"))

    return command


keys_group.command("block", help="Refuse every request made with a key (until unblocked).")(_key_blocker(True))
keys_group.command("unblock", help="Let a blocked key make requests again.")(_key_blocker(False))


@keys_group.command("delete")
@config_option
@click.argument("keys", nargs=-1)
@click.option("--alias", "aliases", multiple=True, help="Delete the key with this alias (repeatable).")
@json_option
def keys_delete(config_path: str, keys: tuple[str, ...], aliases: tuple[str, ...], as_json: bool) -> None:
    """Delete keys named by plaintext, token or --alias (all must exist, or nothing is deleted)."""
    with _session(config_path) as (storage, _):
        tokens = admin_keys.delete_keys(storage, keys, aliases)
    _emit({"deleted_keys": tokens}, as_json, lambda r: click.echo(f"deleted {len(r['deleted_keys'])} key(s)"))


@keys_group.command("regenerate")
@config_option
@click.argument("key")
@click.option("--new-key", help="Bring your own new key (must start with sk-).")
@json_option
def keys_regenerate(config_path: str, key: str, as_json: bool, **options: Any) -> None:
    """Give a key a new secret; the old one stops working, budgets and spend stay."""
    with _session(config_path) as (storage, models):
        result = admin_keys.regenerate_key(storage, models, key, text.option_fields(options))
    _emit(result, as_json, lambda r: click.echo(text.secret(r)))


# ---------------------------------------------------------------- users

user_options = _apply(
    limit_options,
    click.option("--email", "user_email", help="The user's email address."),
    click.option("--alias", "user_alias", help="A readable name."),
    # Plain text, checked by the shared validation: click's own choice errors are several lines long.
    click.option(
        "--role",
        "user_role",
        help="proxy_admin, proxy_admin_viewer, internal_user (default) or internal_user_viewer.",
    ),
)


@click.group("users")
def users_group() -> None:
    """Create and manage internal users (budgets and limits shared by their keys)."""


@users_group.command("create")
@config_option
@click.option("--user-id", help="The id (default: a new UUID).")
@user_options
@click.option("--teams", help="Comma-separated teams to add the user to.")
@click.option("--create-key", is_flag=True, help="Also create a key for the user and print it.")
@json_option
def users_create(config_path: str, as_json: bool, create_key: bool, **options: Any) -> None:
    """Create a user."""
    with _session(config_path) as (storage, models):
        fields = {**text.option_fields(options), "auto_create_key": create_key}
        result = admin_users.new_user(storage, models, fields, created_by="cli")
    _emit(result, as_json, lambda r: click.echo(text.secret(r) if create_key else text.details(r)))


@users_group.command("list")
@config_option
@click.option("--role", help="Only users with this role.")
@click.option("--page", default="1", show_default=True, help="Page number.")
@click.option("--size", default="50", show_default=True, help="Users per page (at most 1000).")
@json_option
def users_list(config_path: str, role: str | None, page: str, size: str, as_json: bool) -> None:
    """List users, oldest first."""
    with _session(config_path) as (storage, _):
        result = admin_users.list_users(storage, query_int("page", page, 1), query_int("size", size, 50), role)

    def show(found: dict[str, Any]) -> None:
        click.echo(text.table(found["users"], text.USER_COLUMNS))
        click.echo(f"page {found['page']} of {found['total_pages']}, {found['total']} users")

    _emit(result, as_json, show)


@users_group.command("info")
@config_option
@click.argument("user_id")
@json_option
def users_info(config_path: str, user_id: str, as_json: bool) -> None:
    """Show a user with their keys and teams."""
    with _session(config_path) as (storage, _):
        result = admin_users.user_info(storage, user_id)

    def show(found: dict[str, Any]) -> None:
        click.echo(text.details(found["user_info"]))
        click.echo(f"teams: {text.cell([team['team_id'] for team in found['teams']])}")
        click.echo(f"keys ({len(found['keys'])}):")
        click.echo(text.table(found["keys"], text.KEY_COLUMNS))

    _emit(result, as_json, show)


@users_group.command("update")
@config_option
@click.argument("user_id")
@user_options
@json_option
def users_update(config_path: str, user_id: str, as_json: bool, **options: Any) -> None:
    """Change the given fields of a user."""
    with _session(config_path) as (storage, models):
        result = admin_users.update_user(storage, models, {"user_id": user_id, **text.option_fields(options)})
    _emit(result, as_json, lambda r: click.echo(text.details(r)))


@users_group.command("delete")
@config_option
@click.argument("user_ids", nargs=-1, required=True)
@json_option
def users_delete(config_path: str, user_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete users with their keys and team memberships (all must exist, or nothing is deleted)."""
    with _session(config_path) as (storage, _):
        deleted = admin_users.delete_users(storage, user_ids)
    _emit({"deleted_users": deleted}, as_json, lambda r: click.echo(f"deleted {len(deleted)} user(s)"))


# ---------------------------------------------------------------- teams

team_options = _apply(
    limit_options,
    click.option("--alias", "team_alias", help="A unique, readable name."),
    click.option(
        "--model-aliases",
        help="Model aliases for the team's keys, a JSON object: '{\"gpt-4o\": \"qwen-dell\"}' ('{}' removes them).",
    ),
)


@click.group("teams")
def teams_group() -> None:
    """Create and manage teams (models, budgets and limits shared by their keys)."""


@teams_group.command("create")
@config_option
@click.option("--team-id", help="The id (default: a new UUID).")
@team_options
@json_option
def teams_create(config_path: str, as_json: bool, **options: Any) -> None:
    """Create a team."""
    with _session(config_path) as (storage, models):
        result = admin_teams.new_team(storage, models, text.option_fields(options))
    _emit(result, as_json, lambda r: click.echo(text.team(r)))


@teams_group.command("list")
@config_option
@click.option("--user-id", help="Only the teams this user belongs to.")
@json_option
def teams_list(config_path: str, user_id: str | None, as_json: bool) -> None:
    """List teams."""
    with _session(config_path) as (storage, _):
        result = admin_teams.list_teams(storage, user_id)
    for team in result if not as_json else ():
        team["members"] = len(team["members_with_roles"])
    _emit(result, as_json, lambda teams: click.echo(text.table(teams, text.TEAM_COLUMNS)))


@teams_group.command("info")
@config_option
@click.argument("team_id")
@json_option
def teams_info(config_path: str, team_id: str, as_json: bool) -> None:
    """Show a team with its members and keys."""
    with _session(config_path) as (storage, _):
        result = admin_teams.team_info(storage, team_id)

    def show(found: dict[str, Any]) -> None:
        click.echo(text.team(found["team_info"]))
        click.echo(f"keys ({len(found['keys'])}):")
        click.echo(text.table(found["keys"], text.KEY_COLUMNS))

    _emit(result, as_json, show)


@teams_group.command("update")
@config_option
@click.argument("team_id")
@team_options
@json_option
def teams_update(config_path: str, team_id: str, as_json: bool, **options: Any) -> None:
    """Change the given fields of a team."""
    with _session(config_path) as (storage, models):
        result = admin_teams.update_team(storage, models, {"team_id": team_id, **text.option_fields(options)})
    _emit(result, as_json, lambda r: click.echo(text.team(r)))


@teams_group.command("delete")
@config_option
@click.argument("team_ids", nargs=-1, required=True)
@json_option
def teams_delete(config_path: str, team_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete teams with their keys and memberships (all must exist, or nothing is deleted)."""
    with _session(config_path) as (storage, _):
        deleted = admin_teams.delete_teams(storage, team_ids)
    _emit({"deleted_teams": deleted}, as_json, lambda r: click.echo(f"deleted {len(deleted)} team(s)"))


@teams_group.command("add-member")
@config_option
@click.argument("team_id")
@click.argument("user_id")
@click.option("--role", default="user", show_default=True, help="Team role: user or admin.")
@click.option("--max-budget-in-team", help="The member's budget within the team, in USD.")
@json_option
def teams_add_member(config_path: str, team_id: str, user_id: str, role: str, as_json: bool, **options: Any) -> None:
    """Add a user to a team (the user is created if unknown)."""
    member = {"user_id": user_id, "role": role, **text.option_fields(options)}
    with _session(config_path) as (storage, _):
        result = admin_teams.add_members(storage, team_id, member)
    _emit(result, as_json, lambda r: click.echo(text.team(r)))


@teams_group.command("remove-member")
@config_option
@click.argument("team_id")
@click.argument("user_id")
@json_option
def teams_remove_member(config_path: str, team_id: str, user_id: str, as_json: bool) -> None:
    """Remove a user from a team."""
    with _session(config_path) as (storage, _):
        result = admin_teams.remove_member(storage, team_id, user_id)
    _emit(result, as_json, lambda r: click.echo(text.team(r)))


def _team_blocker(blocked: bool) -> Command:
    @config_option
    @click.argument("team_id")
    @json_option
    def command(config_path: str, team_id: str, as_json: bool) -> None:
        with _session(config_path) as (storage, _):
            result = admin_teams.set_team_blocked(storage, team_id, blocked)
        _emit(result, as_json, lambda team: click.echo(f"{team['team_id']}: {'blocked' if blocked else 'unblocked'}"))

    return command


teams_group.command("block", help="Refuse every request made with the team's keys.")(_team_blocker(True))
teams_group.command("unblock", help="Let the team's keys make requests again.")(_team_blocker(False))
