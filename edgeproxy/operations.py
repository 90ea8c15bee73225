"""What an operator sees and does around the gateway: metrics, alerts and config reloads, with their tasks.

Built with the gateway (`open_gateway`: the ledger needs the alert hooks, the accounting the metrics) and served
from the server's root nursery (`serve`): the health probes and reloads, the alert sender and watchers, and, with
`--workers N`, the task that keeps this worker's gauges current for scrapes answered by another worker.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from edgeproxy.alerts import Alerter, Dedup, budget_alert, serve_watchers
from edgeproxy.config import Config
from edgeproxy.metrics import Metrics, serve_refresh
from edgeproxy.reload import Reloader, Retire
from edgeproxy.spend.ledger import BudgetCrossing

if TYPE_CHECKING:
    from edgeproxy.gateway import Gateway


class Operations:
    def __init__(self, config: Config) -> None:
        ops = config.general.ops
        self.settings = ops
        self.metrics = Metrics(per_key=ops.metrics_per_key)
        self.alerter = Alerter(ops) if ops.alerts_enabled else None
        self.reloader: Reloader | None = None

    def ledger_hooks(self) -> dict[str, Any]:
        """Keyword arguments for the BudgetLedger: threshold callbacks when alerts are on."""
        if self.alerter is None:
            return {}
        return {"thresholds": self.settings.budget_thresholds, "on_threshold": self._on_budget}

    def _on_budget(self, crossing: BudgetCrossing) -> None:
        if self.alerter is not None:
            self.alerter.emit(budget_alert(crossing))

    def request_reload(self) -> None:
        if self.reloader is not None:
            self.reloader.request()

    async def serve(
        self,
        gw: Gateway,
        *,
        retire: Retire | None = None,
        state_dir: Path | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Every operations task, until cancelled. `state_dir`: a directory shared by this run's workers."""
        async with trio.open_nursery() as nursery:
            self.reloader = Reloader(gw, retire)
            await nursery.start(self.reloader.serve)
            if self.metrics.multiprocess:
                nursery.start_soon(serve_refresh, partial(refresh_metrics, gw))
            if self.alerter is not None:
                self.alerter.dedup = Dedup(gw.redis, state_dir / "alerts" if state_dir is not None else None)
                await nursery.start(self.alerter.serve)
                nursery.start_soon(
                    partial(
                        serve_watchers,
                        self.alerter,
                        lambda: gw.router.deployment_states(),
                        gw.readiness,
                        interval_s=self.settings.alert_check_interval_s,
                        repeat_s=self.settings.alert_repeat_interval_s,
                    )
                )
            task_status.started()


def refresh_metrics(gw: Gateway) -> None:
    """This process's gauges from the router, the spend writer and the ledger (before each scrape too)."""
    accounting = gw.accounting
    metrics = gw.ops.metrics
    budgets = accounting.ledger.key_budgets() if metrics.per_key else ()
    metrics.refresh(gw.router.deployment_states(), accounting.writer.queue_depth, budgets)
