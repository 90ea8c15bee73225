"""Admission and billing around each call: reserve before, price and record after (no database wait)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from edgeproxy.calllog import CallLine, call_fields, stored_exchange
from edgeproxy.calls import CallRecord, prompt_text
from edgeproxy.config import Config
from edgeproxy.metrics import Metrics
from edgeproxy.pricing import Pricing
from edgeproxy.providers.base import CallType, estimate_tokens
from edgeproxy.spend import BudgetLedger, Reservation, SpendWriter
from storage import SpendRecord

log = logging.getLogger("edgeproxy.calls")
# Output a reservation assumes when the request sets no max_tokens and the deployment has no default.
DEFAULT_RESERVED_OUTPUT_TOKENS = 4096


class Accounting:
    def __init__(
        self,
        config: Config,
        pricing: Pricing,
        ledger: BudgetLedger,
        writer: SpendWriter,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self.pricing = pricing
        self.ledger = ledger
        self.writer = writer
        self.metrics = metrics
        self._groups = config.model_groups
        ops = config.general.ops
        self._prompt_chars = ops.max_stored_prompt_chars if ops.store_prompts_in_spend_logs else None

    def use_config(self, config: Config) -> None:
        """A reloaded model_list: estimates use its prices from now on."""
        self._config = config
        self._groups = config.model_groups

    def estimate(self, record: CallRecord) -> float:
        """The most this call may cost: prompt estimate at input price plus max output at output price."""
        deployments = self._groups.get(record.model_group, ())
        price = self.pricing.max_price(deployments)
        if price.is_free:
            return 0.0
        prompt = estimate_tokens(prompt_text(record.call_type, record.body))
        if record.call_type is CallType.EMBEDDING:
            return prompt * price.input
        body = record.body
        output = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(output, int):
            output = max((d.max_tokens or 0 for d in deployments), default=0) or DEFAULT_RESERVED_OUTPUT_TOKENS
        return prompt * price.input + output * price.output

    def admit(self, record: CallRecord) -> None:
        record.reservation = self.ledger.admit(record.principal, self.estimate(record))

    def key_spend(self, record: CallRecord) -> float | None:
        token = record.principal.token
        account = self.ledger.account(("key", token)) if token else None
        return account.committed if account is not None else None

    def finish(self, record: CallRecord) -> None:
        usage = record.usage
        if record.deployment is not None and usage is not None:
            record.cost = self.pricing.cost(record.deployment, usage)
        reservation = record.reservation if isinstance(record.reservation, Reservation) else None
        if reservation is not None:
            self.ledger.settle(reservation, record.cost)
        if self.metrics is not None:
            self.metrics.observe_call(record)
        if log.isEnabledFor(logging.INFO):
            log.info(CallLine(call_fields(record)))
        if self._config.general.track_spend:
            self.writer.submit(self._spend_record(record))

    def _spend_record(self, record: CallRecord) -> SpendRecord:
        principal, usage, deployment = record.principal, record.usage, record.deployment
        end = datetime.now(UTC)
        return SpendRecord(
            request_id=record.call_id,
            call_type=record.call_type.value,
            api_key=principal.token or ("master" if principal.is_master else None),
            key_alias=principal.key_alias,
            user_id=principal.user_id,
            team_id=principal.team_id,
            model_group=record.model_group,
            deployment_id=deployment.deployment_id if deployment else None,
            provider=deployment.provider if deployment else None,
            model=deployment.model if deployment else None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost=record.cost,
            start_time=datetime.fromtimestamp(record.start_time, UTC),
            end_time=end,
            ttft_ms=round(record.ttft_s * 1000) if record.ttft_s is not None else None,
            cache_hit=record.cache_hit,
            status=record.status,
            error=record.error,
            estimated=bool(usage and usage.estimated),
            # Opt-in (store_prompts_in_spend_logs): the prompt and the answer, each cut to max_stored_prompt_chars.
            metadata=stored_exchange(record, self._prompt_chars) if self._prompt_chars is not None else {},
        )
