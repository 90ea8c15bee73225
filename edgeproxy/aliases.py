"""Model aliases: a name a client asks for, served by a model group under another name.

Three layers, the most specific winning: a key's `aliases`, then its team's `model_aliases`, then the config's
`router_settings.model_group_alias`. Each entry is `"alias": "group"` or `"alias": {"model": "group",
"hidden": true}` (hidden: served, but not listed by /v1/models). An alias is resolved once, before anything
else looks at the model (access checks, routing, the cache key, pricing, spend and metrics), so everything
after sees only the target group. Access rules apply to that target: an alias never grants a model the key may
not use, which also makes key aliases safe to let non-admins set on their own keys. In a `models` allow-list, a
config alias stands for its target group (keyauth.allowed_models); key and team aliases never count there.

Targets must be model groups, not other aliases: one lookup, no chains, no loops.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class AliasError(ValueError):
    """An alias entry that cannot work; `path` names it (`aliases.gpt-4o`), the message says why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class AliasMap:
    targets: Mapping[str, str] = field(default_factory=dict)  # alias -> model group
    hidden: frozenset[str] = frozenset()  # aliases left out of /v1/models

    def resolve(self, requested: str) -> str:
        return self.targets.get(requested, requested)

    def visible(self) -> Iterator[tuple[str, str]]:
        """(alias, target) for every alias /v1/models may list."""
        return ((alias, target) for alias, target in self.targets.items() if alias not in self.hidden)

    def overridden_by(self, *layers: Mapping[str, Any] | None) -> AliasMap:
        """This map with each stored layer on top, later layers winning (team, then key).

        Returns `self` when no layer has an entry: most keys have no aliases of their own, and then every
        request shares the one global map instead of building a copy.
        """
        parsed = [stored_aliases(layer) for layer in layers if layer]
        parsed = [layer for layer in parsed if layer.targets]
        if not parsed:
            return self
        targets, hidden = dict(self.targets), set(self.hidden)
        for layer in parsed:
            for alias, target in layer.targets.items():
                targets[alias] = target
                hidden.discard(alias)  # the winning entry alone says whether it is listed
            hidden |= layer.hidden
        return AliasMap(targets, frozenset(hidden))


def _entry(alias: Any, value: Any, path: str) -> tuple[str, str, bool]:
    if not isinstance(alias, str) or not alias.strip():
        raise AliasError(path, f"an alias must be a non-empty string, got {alias!r}")
    where = f"{path}.{alias}"
    hidden: Any = False
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"model", "hidden"})
        if unknown:
            raise AliasError(f"{where}.{unknown[0]}", 'unknown field; an alias is "group" or {"model", "hidden"}')
        value, hidden = value.get("model"), value.get("hidden", False)
        where = f"{where}.model"
    if not isinstance(value, str) or not value.strip():
        raise AliasError(where, f"expected the name of a model group, got {value!r}")
    if not isinstance(hidden, bool):
        raise AliasError(f"{path}.{alias}.hidden", f"expected true or false, got {hidden!r}")
    return alias, value, hidden


def parse_aliases(value: Any, path: str, groups: Collection[str] | None = None) -> AliasMap:
    """Check a mapping of aliases strictly (admin input); `groups`, when given, are the valid targets."""
    if value is None:
        return AliasMap()
    if not isinstance(value, Mapping):
        raise AliasError(path, f'expected an object like {{"gpt-4o": "qwen-dell"}}, got {value!r}')
    targets: dict[str, str] = {}
    hidden: set[str] = set()
    for alias, target in value.items():
        name, group, is_hidden = _entry(alias, target, path)
        if groups is not None and group not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise AliasError(f"{path}.{name}", f"model group {group!r} does not exist; model groups: {known}")
        targets[name] = group
        if is_hidden:
            hidden.add(name)
    return AliasMap(targets, frozenset(hidden))


def stored_form(aliases: AliasMap) -> dict[str, Any]:
    """What the database keeps (and /key/info, /team/info show): plain strings, objects only for hidden ones."""
    return {
        alias: {"model": target, "hidden": True} if alias in aliases.hidden else target
        for alias, target in aliases.targets.items()
    }


def stored_aliases(value: Any) -> AliasMap:
    """Read a stored mapping leniently: it was checked when written, and a bad entry must not lock a key out."""
    if not isinstance(value, Mapping):
        return AliasMap()
    targets: dict[str, str] = {}
    hidden: set[str] = set()
    for alias, target in value.items():
        try:
            name, group, is_hidden = _entry(alias, target, "aliases")
        except AliasError:
            continue
        targets[name] = group
        if is_hidden:
            hidden.add(name)
    return AliasMap(targets, frozenset(hidden))


class ModelCatalog(Collection[str]):
    """The names a key's `models` may list (groups, then global aliases), knowing which are groups.

    A plain collection of names to the code that only asks "is this a known model", while alias validation
    asks for `groups`: an alias must point at a group, never at another alias.
    """

    __slots__ = ("aliases", "groups")

    def __init__(self, groups: Iterable[str], aliases: Iterable[str] = ()) -> None:
        self.groups: tuple[str, ...] = tuple(groups)
        self.aliases: tuple[str, ...] = tuple(a for a in aliases if a not in self.groups)

    def __contains__(self, name: object) -> bool:
        return name in self.groups or name in self.aliases

    def __iter__(self) -> Iterator[str]:
        yield from self.groups
        yield from self.aliases

    def __len__(self) -> int:
        return len(self.groups) + len(self.aliases)

    def __repr__(self) -> str:
        return f"ModelCatalog(groups={self.groups!r}, aliases={self.aliases!r})"


def model_groups(known: Collection[str]) -> Collection[str]:
    """The group names within `known` (all of it when it is not a ModelCatalog)."""
    return known.groups if isinstance(known, ModelCatalog) else known
