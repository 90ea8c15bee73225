"""Spend: pricing each call, budgets that are never overspent, and batched writes off the hot path."""

from edgeproxy.spend.ledger import BudgetLedger, Reservation
from edgeproxy.spend.writer import SpendWriter

__all__ = ["BudgetLedger", "Reservation", "SpendWriter"]
