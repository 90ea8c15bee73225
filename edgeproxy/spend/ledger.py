"""In-memory budget accounts kept in step with the database, so admission never waits on it.

An account's committed spend is what the database said when its row was last loaded, plus what this
process has spent since and not yet written. A request is admitted while committed spend plus in-flight
reservations stay below `max_budget`; it reserves its estimated maximum cost (capped at what remains) and
settles to the actual cost when it ends. So parallel requests cannot race past a budget: at most about one
request's cost beyond it, when a call costs more than its estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgeproxy.auth import Principal
from edgeproxy.errors import BudgetExceededError
from storage import next_reset
from storage.spend_totals import BatchTotals

log = logging.getLogger("edgeproxy.spend")
# Spend is a float sum of tiny amounts: within a billionth of a dollar, a budget counts as used up.
EPSILON_USD = 1e-9
EntityKey = tuple[str, str]  # ("key", token) | ("user", id) | ("team", id) | ("member", "team/user")


@dataclass(slots=True)
class Account:
    label: str
    max_budget: float | None = None
    soft_budget: float | None = None
    budget_duration: str | None = None
    reset_at: datetime | None = None
    db_spend: float = 0.0
    unflushed: float = 0.0
    reserved: float = 0.0
    soft_alerted: bool = False
    alerted: float = 0.0  # the highest budget threshold (fraction of max_budget) already reported this window
    source: Any = field(default=None, repr=False)  # the row object it was loaded from

    @property
    def committed(self) -> float:
        return self.db_spend + self.unflushed

    @property
    def remaining(self) -> float:
        assert self.max_budget is not None
        return self.max_budget - self.committed - self.reserved


@dataclass(frozen=True, slots=True)
class BudgetCrossing:
    """Spend reached a threshold of a budget: reported once per threshold and budget window."""

    entity: EntityKey
    label: str  # "key laptop", "team family": names, never a key
    spend: float
    budget: float  # the max_budget, or the soft_budget when `threshold` is None
    threshold: float | None  # the fraction of max_budget reached; None: the soft budget
    reset_at: datetime | None  # when the budget window ends (None: a lifetime budget)


@dataclass(slots=True)
class Reservation:
    amounts: dict[EntityKey, float] = field(default_factory=dict)
    settled: bool = False


def entities_of(principal: Principal) -> list[tuple[EntityKey, str, Mapping[str, Any]]]:
    """(entity, label, row) for every budget-bearing row behind a virtual key."""
    found: list[tuple[EntityKey, str, Mapping[str, Any]]] = []
    if principal.key is not None and principal.token is not None:
        found.append((("key", principal.token), f"key {principal.key_alias or principal.key_name}", principal.key))
    if principal.user is not None:
        found.append((("user", principal.user["user_id"]), f"user {principal.user['user_id']}", principal.user))
    if principal.team is not None:
        found.append((("team", principal.team["team_id"]), f"team {principal.team['team_id']}", principal.team))
    if principal.member is not None:
        member = principal.member
        label = f"user {member['user_id']} in team {member['team_id']}"
        found.append((("member", f"{member['team_id']}/{member['user_id']}"), label, member))
    return found


def spend_by_entity(totals: BatchTotals) -> dict[EntityKey, float]:
    """A written batch's spend per ledger entity, from the totals storage summed for its counters."""
    spent: dict[EntityKey, float] = {
        (entity_type, entity_id): amount
        for entity_type, amounts in totals.entities.items()
        for entity_id, amount in amounts.items()
    }
    spent.update({("member", f"{team_id}/{user_id}"): amount for (team_id, user_id), amount in totals.members.items()})
    return spent


class BudgetLedger:
    def __init__(
        self,
        status_code: int = 422,
        now: Callable[[], datetime] | None = None,
        on_soft_budget: Callable[[str, float, float], None] | None = None,
        thresholds: Iterable[float] = (),
        on_threshold: Callable[[BudgetCrossing], None] | None = None,
    ) -> None:
        self._accounts: dict[EntityKey, Account] = {}
        self._status = status_code
        self._now = now or (lambda: datetime.now(UTC))
        self._on_soft_budget = on_soft_budget
        # Alerts (edgeproxy/alerts): each threshold of a max_budget, and soft budgets, once per window.
        self._thresholds = tuple(sorted(thresholds)) if on_threshold is not None else ()
        self._on_threshold = on_threshold

    def account(self, entity: EntityKey) -> Account | None:
        return self._accounts.get(entity)

    def _sync(self, entity: EntityKey, label: str, row: Mapping[str, Any]) -> Account:
        """The account for a row; a freshly loaded row brings the database's spend and settings."""
        account = self._accounts.get(entity)
        if account is None:
            account = self._accounts[entity] = Account(label=label)
        if account.source is not row:
            account.source = row
            account.db_spend = float(row.get("spend") or 0.0)
            max_budget = row.get("max_budget", row.get("max_budget_in_team"))
            if entity[0] == "member":
                max_budget = row.get("max_budget_in_team")
            if max_budget != account.max_budget:
                account.alerted = 0.0  # a new budget: its thresholds are new too
            account.max_budget = max_budget
            account.soft_budget = row.get("soft_budget")
            account.budget_duration = row.get("budget_duration")
            account.reset_at = row.get("budget_reset_at")
        self._roll_window(account)
        return account

    def _roll_window(self, account: Account) -> None:
        """A budget window that ended starts over now, without waiting for the reset job."""
        now = self._now()
        if account.reset_at is not None and account.budget_duration and now >= account.reset_at:
            account.db_spend = 0.0
            account.unflushed = 0.0
            account.soft_alerted = False
            account.alerted = 0.0
            account.reset_at = next_reset(account.budget_duration, now)

    def admit(self, principal: Principal, estimate: float) -> Reservation:
        """Refuse (BudgetExceededError) when any budget is used up; otherwise reserve the estimate."""
        reservation = Reservation()
        if principal.key is None:
            return reservation
        accounts = [(entity, self._sync(entity, label, row)) for entity, label, row in entities_of(principal)]
        for _, account in accounts:
            if account.max_budget is not None and account.remaining <= EPSILON_USD:
                raise BudgetExceededError(
                    f"budget exceeded for {account.label}: spend {account.committed:.6f} USD "
                    f"(plus {account.reserved:.6f} in flight) of max_budget {account.max_budget:.6f} USD",
                    status=self._status,
                )
        for entity, account in accounts:
            amount = estimate if account.max_budget is None else min(estimate, account.remaining)
            account.reserved += amount
            reservation.amounts[entity] = amount
        return reservation

    def settle(self, reservation: Reservation, cost: float) -> None:
        """Replace a reservation with the actual cost (once, whatever happened to the call)."""
        if reservation.settled:
            return
        reservation.settled = True
        for entity, amount in reservation.amounts.items():
            account = self._accounts.get(entity)
            if account is None:
                continue
            account.reserved = max(0.0, account.reserved - amount)
            account.unflushed += cost
            self._check_soft_budget(entity, account)
            if self._thresholds:
                self._check_thresholds(entity, account)

    def _check_soft_budget(self, entity: EntityKey, account: Account) -> None:
        soft = account.soft_budget
        if soft is None or account.soft_alerted or account.committed < soft:
            return
        account.soft_alerted = True
        log.warning(
            "soft budget crossed for %s: spend %.6f of soft_budget %.6f USD", account.label, account.committed, soft
        )
        if self._on_soft_budget is not None:
            self._on_soft_budget(account.label, account.committed, soft)
        if self._on_threshold is not None:
            self._on_threshold(BudgetCrossing(entity, account.label, account.committed, soft, None, account.reset_at))

    def _check_thresholds(self, entity: EntityKey, account: Account) -> None:
        budget = account.max_budget
        if not budget or budget <= 0:
            return
        spend = account.committed
        if spend < budget * self._thresholds[0] - EPSILON_USD:
            return  # the common case, decided without a loop
        crossed = 0.0
        for threshold in self._thresholds:
            if spend >= budget * threshold - EPSILON_USD:
                crossed = threshold
        if crossed <= account.alerted:
            return
        # One alert, for the highest threshold reached: a call that jumps from 50 % to 100 % reports 100 % only.
        account.alerted = crossed
        assert self._on_threshold is not None
        self._on_threshold(BudgetCrossing(entity, account.label, spend, budget, crossed, account.reset_at))

    def key_budgets(self) -> Iterator[tuple[str, float]]:
        """(key alias, max_budget minus spend) for keys with an alias and a budget seen by this process."""
        for (kind, _), account in self._accounts.items():
            if kind == "key" and account.max_budget is not None and account.source is not None:
                alias = account.source.get("key_alias")
                if alias:
                    yield alias, account.max_budget - account.committed

    def flushed(self, spent: Mapping[EntityKey, float]) -> None:
        """Written to the database (`spent`: `spend_by_entity` of the batch's totals): move the amounts from
        unflushed to the database's share."""
        for entity, amount in spent.items():
            account = self._accounts.get(entity)
            if account is not None and amount:
                # As if moved record by record: each moves min(unflushed, cost) until unflushed is used up.
                moved = min(account.unflushed, amount)
                account.unflushed -= moved
                account.db_spend += moved

    def reset(self, entities: Iterable[tuple[str, str]]) -> None:
        """The budget reset job started new windows for these (entity_type, id)."""
        for entity in entities:
            account = self._accounts.get(entity)
            if account is not None:
                account.db_spend = 0.0
                account.soft_alerted = False
                account.alerted = 0.0
                account.source = None
