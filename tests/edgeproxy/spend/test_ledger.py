"""Budget admission: reservations, settling, windows that reset on schedule (injected clock)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from edgeproxy.auth import Principal
from edgeproxy.errors import BudgetExceededError
from edgeproxy.spend import BudgetLedger
from edgeproxy.spend.ledger import BudgetCrossing, spend_by_entity
from storage import SpendRecord
from storage.spend_totals import BatchTotals


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 23, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def key_principal(**key: object) -> Principal:
    row = {"token": "t1", "key_alias": "k", "spend": 0.0, **key}
    return Principal(token="t1", key_alias="k", key=row)


def test_parallel_admissions_cannot_pass_the_budget() -> None:
    ledger = BudgetLedger()
    principal = key_principal(max_budget=1.0)
    admitted = []
    for _ in range(10):
        with contextlib.suppress(BudgetExceededError):
            admitted.append(ledger.admit(principal, estimate=0.3))
    # 0.3 + 0.3 + 0.3 + 0.1 (capped at what remains): the fifth is refused while four are in flight.
    assert len(admitted) == 4
    for reservation in admitted:
        ledger.settle(reservation, 0.25)
    account = ledger.account(("key", "t1"))
    assert account is not None and account.committed == pytest.approx(1.0) and account.reserved == 0
    with pytest.raises(BudgetExceededError) as raised:
        ledger.admit(principal, 0.01)
    assert raised.value.status == 422
    assert "key k" in raised.value.message and "max_budget 1.0" in raised.value.message


def test_settle_once_and_flush_moves_spend() -> None:
    ledger = BudgetLedger()
    principal = key_principal(max_budget=10.0)
    reservation = ledger.admit(principal, 1.0)
    ledger.settle(reservation, 0.5)
    ledger.settle(reservation, 0.5)
    account = ledger.account(("key", "t1"))
    assert account is not None and account.committed == pytest.approx(0.5)
    ledger.flushed(spend_by_entity(BatchTotals.of([SpendRecord(request_id="r", api_key="t1", cost=0.5)])))
    assert (account.db_spend, account.unflushed) == (pytest.approx(0.5), 0)


def test_flush_moves_no_more_than_was_unflushed() -> None:
    ledger = BudgetLedger()
    reservation = ledger.admit(key_principal(max_budget=10.0), 1.0)
    ledger.settle(reservation, 0.5)
    account = ledger.account(("key", "t1"))
    assert account is not None
    # Another instance's records for the same key are in the batch too: only this process's 0.5 moves.
    batch = [SpendRecord(request_id=f"r{i}", api_key="t1", cost=0.3) for i in range(2)]
    ledger.flushed(spend_by_entity(BatchTotals.of(batch)))
    assert (account.db_spend, account.unflushed) == (pytest.approx(0.5), 0)
    assert account.committed == pytest.approx(0.5)


def test_spend_by_entity_sums_a_batch_per_key_user_team_and_member() -> None:
    records = [
        SpendRecord(request_id="a", api_key="t1", user_id="u", team_id="T", cost=0.25),
        SpendRecord(request_id="b", api_key="t1", user_id="u", cost=0.5),
        SpendRecord(request_id="c", api_key="t2", cost=0.0),  # free: moves nothing
    ]
    assert spend_by_entity(BatchTotals.of(records)) == {
        ("key", "t1"): 0.75,
        ("user", "u"): 0.75,
        ("team", "T"): 0.25,
        ("member", "T/u"): 0.25,
    }


def test_budget_window_resets_on_schedule() -> None:
    clock = Clock()
    ledger = BudgetLedger(now=clock)
    reset_at = datetime(2026, 11, 29, tzinfo=UTC)
    principal = key_principal(max_budget=1.0, spend=1.0, budget_duration="1d", budget_reset_at=reset_at)
    with pytest.raises(BudgetExceededError):
        ledger.admit(principal, 0.1)
    clock.now = reset_at + timedelta(seconds=1)  # midnight UTC passed: a new daily window
    reservation = ledger.admit(principal, 0.1)
    assert reservation.amounts[("key", "t1")] == pytest.approx(0.1)
    account = ledger.account(("key", "t1"))
    assert account is not None and account.reset_at == datetime(2026, 11, 30, tzinfo=UTC)


def test_soft_budget_alerts_once() -> None:
    alerts: list[tuple[str, float, float]] = []
    ledger = BudgetLedger(on_soft_budget=lambda label, spend, soft: alerts.append((label, spend, soft)))
    principal = key_principal(soft_budget=1.0)
    for _ in range(3):
        ledger.settle(ledger.admit(principal, 0.6), 0.6)
    assert alerts == [("key k", pytest.approx(1.2), 1.0)]


def test_user_team_and_membership_budgets_apply() -> None:
    ledger = BudgetLedger()
    principal = Principal(
        token="t1",
        key={"token": "t1", "spend": 0.0},
        user={"user_id": "u", "spend": 0.0},
        team={"team_id": "T", "spend": 5.0, "max_budget": 5.0},
        member={"team_id": "T", "user_id": "u", "spend": 0.0, "max_budget_in_team": 1.0},
        user_id="u",
        team_id="T",
    )
    with pytest.raises(BudgetExceededError, match="team T"):
        ledger.admit(principal, 0.1)


def test_budget_thresholds_report_once_per_window() -> None:
    clock = Clock()
    crossings: list[BudgetCrossing] = []
    ledger = BudgetLedger(now=clock, thresholds=(0.8, 1.0), on_threshold=crossings.append)
    reset_at = datetime(2026, 11, 29, tzinfo=UTC)
    principal = key_principal(max_budget=1.0, budget_duration="1d", budget_reset_at=reset_at)
    for _ in range(4):  # 0.7: below 80 %
        ledger.settle(ledger.admit(principal, 0.1), 0.175)
    assert crossings == []
    ledger.settle(ledger.admit(principal, 0.1), 0.15)  # 0.85
    ledger.settle(ledger.admit(principal, 0.1), 0.05)  # 0.9: 80 % already reported
    ledger.settle(ledger.admit(principal, 0.1), 0.1)  # 1.0
    assert [(c.label, c.threshold, c.budget, c.reset_at) for c in crossings] == [
        ("key k", 0.8, 1.0, reset_at),
        ("key k", 1.0, 1.0, reset_at),
    ]
    assert crossings[0].entity == ("key", "t1") and crossings[0].spend == pytest.approx(0.85)
    clock.now = reset_at + timedelta(seconds=1)  # a new window: the thresholds count again
    ledger.settle(ledger.admit(principal, 0.1), 0.9)
    assert [c.threshold for c in crossings] == [0.8, 1.0, 0.8]


def test_a_jump_past_several_thresholds_reports_the_highest_only() -> None:
    crossings: list[BudgetCrossing] = []
    ledger = BudgetLedger(thresholds=(0.5, 0.8, 1.0), on_threshold=crossings.append)
    principal = key_principal(max_budget=1.0)
    ledger.settle(ledger.admit(principal, 0.1), 0.9)
    assert [c.threshold for c in crossings] == [0.8]


def test_soft_budget_is_a_crossing_too_and_key_budgets_name_aliases_only() -> None:
    crossings: list[BudgetCrossing] = []
    ledger = BudgetLedger(thresholds=(0.8,), on_threshold=crossings.append)
    ledger.settle(ledger.admit(key_principal(soft_budget=0.5), 0.1), 0.6)
    assert [(c.threshold, c.budget) for c in crossings] == [(None, 0.5)]
    other = Principal(token="t2", key={"token": "t2", "spend": 0.0, "max_budget": 2.0})  # no alias
    ledger.settle(ledger.admit(other, 0.1), 0.5)
    budgets = BudgetLedger()
    budgets.settle(budgets.admit(key_principal(max_budget=2.0), 0.1), 0.5)
    budgets.settle(budgets.admit(other, 0.1), 0.5)
    assert list(budgets.key_budgets()) == [("k", pytest.approx(1.5))]
