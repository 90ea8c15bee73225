"""`edgeproxy keys|users|teams` on the database a running server uses: changes reach the server at once
(new keys) or within about a second (blocks, through its change poller)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from click.testing import CliRunner, Result

from edgeproxy.cli import cli
from edgeproxy.config import load_config
from tests.e2e.conftest import MASTER_KEY, Proxy, openai_model, running_proxy
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]
KEY_FORMAT = re.compile(r"^sk-[A-Za-z0-9_-]{22}$")


def write_config(tmp_path: Path, fake: FakeUpstream | None = None, database_url: str | None = None) -> str:
    if fake is not None:
        models = [openai_model(name, fake) for name in ("m1", "m2")]
    else:  # no server in this test: the upstream is never called
        params = {"model": "openai/x", "api_base": "http://127.0.0.1:9/v1"}
        models = [{"model_name": name, "litellm_params": params} for name in ("m1", "m2")]
    general = {"master_key": MASTER_KEY, "database_url": database_url or f"sqlite:///{tmp_path}/shared.db"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "general_settings": general}))
    return str(path)


def invoke(config: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--config", config])


def invoke_ok(config: str, *args: str) -> str:
    result = invoke(config, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


async def invoke_in_thread(config: str, *args: str) -> Result:
    # The server runs on this trio loop: run the (blocking) command beside it, as a separate process would.
    return await trio.to_thread.run_sync(invoke, config, *args)


async def chat(proxy: Proxy, key: str, model: str = "m1") -> int:
    async with proxy.client(key) as client:
        response = await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    return response.status_code


async def wait_for_status(proxy: Proxy, key: str, wanted: int) -> float:
    """Poll until the server answers `wanted` for this key; how long it took."""
    start = trio.current_time()
    with trio.fail_after(5):
        while await chat(proxy, key) != wanted:
            await trio.sleep(0.05)
    return trio.current_time() - start


async def test_cli_key_works_at_once_on_a_running_server(fake: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake)
    async with running_proxy(load_config(config)) as proxy:
        result = await invoke_in_thread(config, "keys", "create", "--json", "--models", "m1", "--alias", "from-cli")
        assert result.exit_code == 0, result.output
        created: dict[str, Any] = json.loads(result.stdout)
        assert KEY_FORMAT.match(created["key"])
        assert (created["key_alias"], created["models"], created["created_by"]) == ("from-cli", ["m1"], "cli")
        assert await chat(proxy, created["key"]) == 200  # no wait: the server had never seen this key
        assert await chat(proxy, created["key"], "m2") == 403
        async with proxy.client() as client:
            info = (await client.get("/key/info", params={"key": created["key"]})).json()
        assert info["info"]["key_alias"] == "from-cli"


async def test_cli_block_reaches_a_running_server(fake: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake)
    async with running_proxy(load_config(config)) as proxy:
        async with proxy.client() as client:
            key = (await client.post("/key/generate", json={})).json()["key"]
        assert await chat(proxy, key) == 200  # cached on the server now
        blocked = await invoke_in_thread(config, "keys", "block", key)
        assert blocked.exit_code == 0, blocked.output
        assert "blocked" in blocked.stdout
        assert await wait_for_status(proxy, key, 401) < 3  # the change poller runs every second
        unblocked = await invoke_in_thread(config, "keys", "unblock", key)
        assert unblocked.exit_code == 0, unblocked.output
        await wait_for_status(proxy, key, 200)
        deleted = await invoke_in_thread(config, "keys", "delete", key)
        assert deleted.exit_code == 0, deleted.output
        await wait_for_status(proxy, key, 401)


@pytest.mark.parametrize(
    ("args", "exit_code", "words"),
    [
        (["keys", "create", "--max-budget", "-1"], 2, "max_budget"),
        (["keys", "create", "--max-budget", "nan"], 2, "max_budget"),
        (["keys", "create", "--duration", "3x"], 2, "duration"),
        (["keys", "create", "--models", "m1,gpt-9"], 2, "gpt-9"),
        (["keys", "create", "--metadata", "{oops"], 2, "metadata"),
        (["keys", "create", "--rpm-limit", "fast"], 2, "rpm_limit"),
        (["keys", "create", "--team-id", "ghosts"], 1, "team ghosts not found"),
        (["keys", "info", "sk-not-a-key-000000000000"], 1, "not found"),
        (["keys", "list", "--size", "0"], 2, "size"),
        (["users", "info", "nobody"], 1, "user nobody not found"),
        (["teams", "add-member", "nope", "alice"], 1, "team nope not found"),
    ],
)
def test_cli_errors_are_one_line_with_an_exit_code(tmp_path: Path, args: list[str], exit_code: int, words: str) -> None:
    result = invoke(write_config(tmp_path), *args)
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("edgeproxy: ")
    assert result.stderr.count("\n") == 1
    assert words in result.stderr


def test_cli_conflicts_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    invoke_ok(config, "keys", "create", "--alias", "twice")
    result = invoke(config, "keys", "create", "--alias", "twice")
    assert result.exit_code == 1
    assert "key_alias already exists" in result.stderr


def test_cli_database_unavailable_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, database_url="postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    result = invoke(config, "keys", "list")
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("edgeproxy: ") and result.stderr.count("\n") == 1


def test_cli_keys_lifecycle_and_tables(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    created = json.loads(invoke_ok(config, "keys", "create", "--json", "--user-id", "alice", "--duration", "30d"))
    assert created["expires"] is not None
    plain = invoke_ok(config, "keys", "create", "--alias", "readable", "--max-budget", "2.5")
    assert re.search(r"^key: sk-[A-Za-z0-9_-]{22}$", plain, re.MULTILINE)
    listing = invoke_ok(config, "keys", "list")
    assert listing.splitlines()[0].split()[:3] == ["KEY", "ALIAS", "USER"]
    assert "readable" in listing and "alice" in listing
    assert created["key"] not in listing  # lists never show secrets
    assert "2 keys" in listing
    assert json.loads(invoke_ok(config, "keys", "list", "--json", "--user-id", "alice"))["total_count"] == 1
    updated = json.loads(
        invoke_ok(config, "keys", "update", created["key"], "--models", "m2", "--duration", "none", "--json")
    )
    assert (updated["models"], updated["expires"]) == (["m2"], None)
    info = invoke_ok(config, "keys", "info", created["token"])
    assert re.search(r"^models\s+m2$", info, re.MULTILINE)
    fresh = json.loads(invoke_ok(config, "keys", "regenerate", created["key"], "--json"))
    assert fresh["key"] != created["key"] and fresh["user_id"] == "alice"
    assert invoke(config, "keys", "info", created["key"]).exit_code == 1
    assert "deleted 2 key(s)" in invoke_ok(config, "keys", "delete", fresh["key"], "--alias", "readable")


def test_cli_users_and_teams(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    team = json.loads(invoke_ok(config, "teams", "create", "--team-id", "red", "--models", "m1", "--json"))
    assert team["models"] == ["m1"]
    user = json.loads(invoke_ok(config, "users", "create", "--user-id", "alice", "--teams", "red", "--json"))
    assert (user["user_role"], user["teams"], "key" in user) == ("internal_user", ["red"], False)
    with_key = json.loads(invoke_ok(config, "users", "create", "--user-id", "bob", "--create-key", "--json"))
    assert KEY_FORMAT.match(with_key["key"])
    added = json.loads(invoke_ok(config, "teams", "add-member", "red", "bob", "--role", "admin", "--json"))
    assert [(m["user_id"], m["role"]) for m in added["members_with_roles"]] == [("alice", "user"), ("bob", "admin")]
    assert "bob (admin)" in invoke_ok(config, "teams", "info", "red")
    invoke_ok(config, "teams", "remove-member", "red", "alice")
    assert "alice" not in invoke_ok(config, "teams", "info", "red").split("members:")[1]
    assert invoke_ok(config, "users", "update", "alice", "--role", "proxy_admin_viewer", "--json").count("viewer")
    users = invoke_ok(config, "users", "list")
    assert "proxy_admin_viewer" in users and "2 users" in users
    assert "red" in invoke_ok(config, "teams", "list")
    assert json.loads(invoke_ok(config, "teams", "block", "red", "--json"))["blocked"] is True
    assert "unblocked" in invoke_ok(config, "teams", "unblock", "red")
    assert json.loads(invoke_ok(config, "teams", "update", "red", "--max-budget", "7", "--json"))["max_budget"] == 7
    assert "alice" in invoke_ok(config, "users", "info", "alice")
    assert "deleted 1 user(s)" in invoke_ok(config, "users", "delete", "bob")
    assert "deleted 1 team(s)" in invoke_ok(config, "teams", "delete", "red")
    bad_role = invoke(config, "users", "create", "--role", "root")
    assert (bad_role.exit_code, bad_role.stderr.count("\n")) == (2, 1)
    assert "proxy_admin_viewer" in bad_role.stderr
    bad_member = invoke(config, "teams", "add-member", "red", "bob", "--role", "owner")
    assert (bad_member.exit_code, bad_member.stderr.count("\n")) == (2, 1)


def test_every_admin_command_has_help() -> None:
    groups = {
        "keys": ["create", "list", "info", "update", "block", "unblock", "delete", "regenerate"],
        "users": ["create", "list", "info", "update", "delete"],
        "teams": ["create", "list", "info", "update", "delete", "add-member", "remove-member", "block", "unblock"],
    }
    for group, commands in groups.items():
        for command in commands:
            result = CliRunner().invoke(cli, [group, command, "--help"])
            assert result.exit_code == 0, (group, command)
            summary = result.stdout.split("\n\n")[1].strip()
            assert summary and not summary.startswith("Options"), (group, command)
