"""Alerts to a webhook (Slack-compatible `{"text": ...}`): budgets, deployments down and up, database and Redis.

Producers (the budget ledger, the watchers) put `Alert`s on a memory channel and never wait; one background task
sends them, so nothing here runs on the request path. Each alert carries a de-duplication key: the sender claims
it first (in Redis, or a directory the workers share) so that several workers or instances seeing the same
event send it once.
"""

from edgeproxy.alerts.alerter import Alert, Alerter
from edgeproxy.alerts.dedup import Dedup
from edgeproxy.alerts.watch import DependencyWatch, DeploymentWatch, budget_alert, serve_watchers

__all__ = ["Alert", "Alerter", "Dedup", "DependencyWatch", "DeploymentWatch", "budget_alert", "serve_watchers"]
