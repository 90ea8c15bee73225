"""Model aliases: precedence (key over team over config), hidden ones, and checking admin input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from edgeproxy.admin import fields as f
from edgeproxy.aliases import AliasError, AliasMap, ModelCatalog, parse_aliases, stored_aliases
from edgeproxy.cli import cli
from edgeproxy.errors import InvalidRequestError
from edgeproxy.keyauth import KeyBundle, allowed_models, effective_aliases, principal_for

CONFIGURED = AliasMap({"gpt-4o": "global-target", "shared": "global-target", "secret": "g"}, frozenset({"secret"}))
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def bundle(key_aliases: Any = None, team_aliases: Any = None) -> KeyBundle:
    key = {"token": "t" * 64, "key_name": "sk-...abcd", "aliases": key_aliases or {}, "team_id": "red"}
    team = {"team_id": "red", "model_aliases": team_aliases or {}}
    return KeyBundle(key, None, team)


def test_key_aliases_override_team_aliases_override_the_config() -> None:
    merged = effective_aliases(
        bundle(key_aliases={"gpt-4o": "key-target"}, team_aliases={"gpt-4o": "team-target", "shared": "team-target"}),
        CONFIGURED,
    )
    assert merged.resolve("gpt-4o") == "key-target"
    assert merged.resolve("shared") == "team-target"
    assert merged.resolve("secret") == "g"
    assert merged.resolve("not-an-alias") == "not-an-alias"


def test_team_aliases_apply_when_the_key_has_none() -> None:
    merged = effective_aliases(bundle(team_aliases={"gpt-4o": "team-target"}), CONFIGURED)
    assert merged.resolve("gpt-4o") == "team-target"


def test_a_key_without_aliases_shares_the_configured_map() -> None:
    assert effective_aliases(bundle(), CONFIGURED) is CONFIGURED


def test_the_winning_entry_decides_whether_an_alias_is_hidden() -> None:
    merged = CONFIGURED.overridden_by({"secret": "team-target"}, {"gpt-4o": {"model": "key-target", "hidden": True}})
    assert dict(merged.visible()) == {"shared": "global-target", "secret": "team-target"}
    assert merged.hidden == {"gpt-4o"}


def test_principal_carries_the_effective_aliases() -> None:
    aliases = effective_aliases(bundle(key_aliases={"fast": "key-target"}), CONFIGURED)
    principal = principal_for(bundle(key_aliases={"fast": "key-target"}), NOW, aliases)
    assert principal.aliases is aliases and principal.aliases.resolve("fast") == "key-target"


def test_allow_lists_name_groups_and_config_aliases_stand_for_their_targets() -> None:
    assert allowed_models(["gpt-4o", "other"], [], configured=CONFIGURED) == {"global-target", "other"}
    assert allowed_models(["gpt-4o"], ["global-target", "x"], configured=CONFIGURED) == {"global-target"}
    assert allowed_models(["gpt-4o"]) == {"gpt-4o"}  # without the config's map, names are taken as they are
    # A key's own aliases never widen a list: only the config's are applied.
    own = bundle(key_aliases={"cheap": "expensive"})
    assert own.key is not None
    principal = principal_for(KeyBundle({**own.key, "models": ["cheap"]}, None, None), NOW, configured=CONFIGURED)
    assert principal.models == {"cheap"}


def test_stored_aliases_skip_broken_entries() -> None:
    loaded = stored_aliases({"ok": "g", "bad": 3, "": "g", "hid": {"model": "g", "hidden": True}})
    assert loaded.targets == {"ok": "g", "hid": "g"} and loaded.hidden == {"hid"}
    assert stored_aliases(["not", "a", "mapping"]).targets == {}


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"gpt-4o": "no-such-group"}, "aliases.gpt-4o"),
        ({"gpt-4o": "an-alias"}, "aliases.gpt-4o"),  # aliases point at groups, never at other aliases
        ({"gpt-4o": 3}, "aliases.gpt-4o"),
        ({"gpt-4o": {"model": "g1", "hidden": "yes"}}, "aliases.gpt-4o.hidden"),
        ({"gpt-4o": {"model": "g1", "weight": 2}}, "aliases.gpt-4o.weight"),
        (["gpt-4o"], "aliases"),
    ],
)
def test_admin_input_must_point_at_an_existing_group(value: Any, param: str) -> None:
    check = f.alias_map(ModelCatalog(["g1", "g2"], ["an-alias"]))
    with pytest.raises(InvalidRequestError) as caught:
        check("aliases", value)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_admin_input_is_stored_in_one_form() -> None:
    check = f.alias_map(ModelCatalog(["g1", "g2"]))
    stored = check("model_aliases", {"a": "g1", "b": {"model": "g2"}, "c": {"model": "g2", "hidden": True}})
    assert stored == {"a": "g1", "b": "g2", "c": {"model": "g2", "hidden": True}}
    assert check("model_aliases", None) == {}


def test_parse_aliases_names_the_entry() -> None:
    with pytest.raises(AliasError, match=r"^x\.fast: model group 'nope' does not exist"):
        parse_aliases({"fast": "nope"}, "x", ["g1"])


def test_model_catalog_is_a_collection_of_groups_then_aliases() -> None:
    catalog = ModelCatalog(["g1", "g2"], ["fast", "g1"])
    assert list(catalog) == ["g1", "g2", "fast"] and len(catalog) == 3
    assert "fast" in catalog and "g2" in catalog and "nope" not in catalog
    assert catalog.groups == ("g1", "g2")


def test_cli_sets_key_and_team_aliases(tmp_path: Path) -> None:
    models = [{"model_name": name, "litellm_params": {"model": "mock/m"}} for name in ("m1", "m2")]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": models,
                "router_settings": {"model_group_alias": {"gpt-4o": "m1"}},
                "general_settings": {"database_url": f"sqlite:///{tmp_path}/t.db"},
            }
        )
    )

    def run(*args: str) -> Any:
        result = CliRunner().invoke(cli, [*args, "--config", str(config), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    team = run("teams", "create", "--team-id", "red", "--model-aliases", '{"fast": "m2"}')
    assert team["model_aliases"] == {"fast": "m2"}
    assert run("teams", "update", "red", "--model-aliases", "{}")["model_aliases"] == {}
    key = run("keys", "create", "--team-id", "red", "--aliases", '{"gpt-4o": {"model": "m2", "hidden": true}}')
    assert key["aliases"] == {"gpt-4o": {"model": "m2", "hidden": True}}
    updated = run("keys", "update", key["key"], "--aliases", '{"cheap": "m1"}')
    assert updated["aliases"] == {"cheap": "m1"}
    assert run("keys", "info", key["key"])["info"]["aliases"] == {"cheap": "m1"}
    refused = CliRunner().invoke(
        cli, ["keys", "update", key["key"], "--aliases", '{"x": "gpt-4o"}', "--config", str(config)]
    )
    assert refused.exit_code == 2 and "model group 'gpt-4o' does not exist" in refused.stderr
    bad_json = CliRunner().invoke(cli, ["teams", "update", "red", "--model-aliases", "{nope", "--config", str(config)])
    assert bad_json.exit_code == 2 and "--model-aliases is not valid JSON" in bad_json.stderr
