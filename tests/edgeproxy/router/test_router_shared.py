"""Router state shared between instances: cooldowns at once, usage in batches, nothing on the routing path."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from edgeproxy.gateway import Gateway, open_gateway
from edgeproxy.router.shared import SharedRouterState, wall_minute
from tests.e2e.redis_support import RedisSpace, redis_config, redis_space, requires_redis

DEPLOYMENT = {"model_name": "m", "litellm_params": {"model": "mock/m", "rpm": 100}, "model_info": {"id": "d1"}}


async def test_cooldown_events() -> None:
    state = SharedRouterState(share_usage=False)
    now = trio.current_time()
    state.set_cooldown("d1", now + 30)
    assert state.wake.is_set()
    (event,) = state.take_outbox()
    assert event["id"] == "d1" and event["type"] == "cooldown" and event["until"] is not None
    state.set_cooldown("d1", None)  # ended early (a probe passed): the others must hear of it
    assert state.take_outbox()[0]["until"] is None
    state.set_cooldown("d2", now - 1)
    state.take_outbox()
    state.set_cooldown("d2", None)  # an expired one tidied away: every instance does that alone
    assert state.take_outbox() == []
    state.apply_cooldown("d3", event["until"])
    assert state.cooldown_until("d3") is not None and state.take_outbox() == []
    state.apply_cooldowns({"d4": 1.0})  # long over
    assert state.cooldown_until("d4") is None


async def test_usage_view_is_shared_totals_plus_what_is_not_sent_yet() -> None:
    state = SharedRouterState(share_usage=True)
    now = trio.current_time()
    minute = wall_minute(now)
    state.start_call("d1", now)
    state.add_tokens("d1", 40, now)
    batch = state.take_usage()
    assert batch == {(minute, "d1"): [1, 40]}
    state.start_call("d1", now)  # while the batch is on its way
    assert state.usage("d1", now) == (2, 40)
    state.usage_sent(minute, {"d1": (5, 100)})  # everyone's totals, our batch included
    assert state.usage("d1", now) == (6, 100)
    state.take_usage()
    state.usage_failed(minute)  # Redis did not take it: it counts again next time
    assert state.usage("d1", now) == (6, 100)
    assert state.take_usage() == {(minute, "d1"): [1, 0]}
    assert SharedRouterState(share_usage=False).usage("d1", now) == (0, 0)


@asynccontextmanager
async def gateways(space: RedisSpace, count: int) -> AsyncIterator[list[Gateway]]:
    async with AsyncExitStack() as stack:
        found = []
        for _ in range(count):
            database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
            config = redis_config(
                [DEPLOYMENT], space, cache=False, database_url=database,
                router_settings={"routing_strategy": "usage-based-routing"},
            )  # fmt: skip
            found.append(await stack.enter_async_context(open_gateway(config)))
        async with trio.open_nursery() as nursery:
            for gw in found:
                await nursery.start(gw.shared.serve)
            yield found
            nursery.cancel_scope.cancel()


async def usage_seen(gw: Gateway, now: float, expected: tuple[int, int] = (4, 120)) -> tuple[int, int]:
    """Sync until the instance sees `expected` (at most 2 s): its own flusher may be mid-sync at the same time,
    and whichever sync answers last sets the totals it sees."""
    with trio.move_on_after(2):
        while state_of(gw).usage("d1", now) != expected:
            await gw.shared.sync_router(state_of(gw))
    return state_of(gw).usage("d1", now)


def state_of(gw: Gateway) -> SharedRouterState:
    assert isinstance(gw.router.state, SharedRouterState)
    return gw.router.state


@pytest.mark.redis
@requires_redis
async def test_two_instances_see_each_others_usage_and_cooldowns() -> None:
    with redis_space() as space:
        async with gateways(space, 2) as (first, second):
            now = trio.current_time()
            for _ in range(3):
                state_of(first).start_call("d1", now)
            state_of(first).add_tokens("d1", 120, now)
            state_of(second).start_call("d1", now)
            await first.shared.sync_router(state_of(first))
            assert await usage_seen(second, now) == (4, 120)
            assert await usage_seen(first, now) == (4, 120)

            state_of(first).set_cooldown("d1", now + 30)  # the flusher sends it at once; pub/sub delivers it
            with trio.fail_after(5):
                while state_of(second).cooldown_until("d1") is None:
                    await trio.sleep(0.01)
            assert abs((state_of(second).cooldown_until("d1") or 0) - (now + 30)) < 1
        async with gateways(space, 1) as (late,):  # a new instance reads the cooldowns in force
            with trio.fail_after(5):
                while state_of(late).cooldown_until("d1") is None:
                    await trio.sleep(0.01)
