"""The trainer's side of the Redis bus: rollout source, policy announcer, metrics.

The training loop is synchronous (one thread of PyTorch work); the bus client
is asyncio. `BusBridge` runs a private event loop in a daemon thread and the
three adapters call into it:

- `RedisRolloutSource` (a `RolloutSource`): fetches `RolloutGroup`s through
  the trainer's consumer group; acknowledges (XACK + XDEL, and records the
  rollout ids in the idempotency ledger in the same transaction) only when
  the service has checkpointed them. Until then a heartbeat keeps their
  pending entries from being reclaimed as if the trainer were dead. After a
  crash the same consumer name re-claims its own pending entries; groups
  whose ids the restored checkpoint already holds are skipped by the trainer.
- `BusAnnouncer` (a `PolicyAnnouncer`): broadcasts `PolicyVersion` and the
  per-step `MetricEvent` the dashboard plots.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.bus.channels import (
    metrics_broadcaster,
    policy_broadcaster,
    rollout_consumer,
    trained_ledger,
)
from services.bus.messages import MetricEvent, PolicyVersion, RolloutGroup
from services.bus.settings import BusSettings
from services.bus.transport import connect

log = logging.getLogger(__name__)
R = TypeVar("R")


class BusBridge:
    """An event loop in a daemon thread with one Redis client."""

    def __init__(self, settings: BusSettings) -> None:
        if not settings.url:
            raise ValueError("the trainer's bus source needs a Redis URL (set REDIS_URL)")
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="trainer-bus", daemon=True)
        self.thread.start()
        self.redis = self.call(self._connect())

    async def _connect(self):  # noqa: ANN202
        return connect(self.settings.url)

    def call(self, coro: Coroutine[Any, Any, R], timeout_s: float | None = None) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        try:
            self.call(self.redis.aclose(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class RedisRolloutSource:
    """`RolloutSource` over the rollout stream (see the module docstring)."""

    def __init__(self, bridge: BusBridge, consumer_name: str = "trainer-0") -> None:
        s = bridge.settings
        self.bridge = bridge
        self.consumer = rollout_consumer(bridge.redis, s, consumer_name)
        self.ledger = trained_ledger(bridge.redis, s)
        self.pending: dict[str, tuple[str, list[str]]] = {}   # group id -> (entry id, rollout ids)
        self._lock = threading.Lock()
        self._heartbeat = asyncio.run_coroutine_threadsafe(self._touch_forever(), bridge.loop)

    async def _touch_forever(self) -> None:
        period = max(self.bridge.settings.reclaim_min_idle_ms / 3000.0, 0.05)
        while True:
            await asyncio.sleep(period)
            with self._lock:
                entries = [e for e, _ in self.pending.values()]
            try:
                await self.consumer.touch(entries)
            except Exception as err:  # deliberately tolerated: a missed heartbeat only risks a redelivery
                log.warning("heartbeat on pending rollouts failed: %s", err)

    def fetch(self, max_groups: int, timeout_s: float) -> list[RolloutGroup]:
        try:
            deliveries = self.bridge.call(self.consumer.fetch(count=max_groups, block_ms=int(timeout_s * 1000)))
        except (RedisConnectionError, RedisTimeoutError) as err:
            # deliberately tolerated: Redis restarting or briefly unreachable; nothing
            # was delivered, so nothing is lost: the trainer simply asks again
            log.warning("fetching rollouts failed (%s); retrying", err)
            time.sleep(min(timeout_s, 1.0))
            return []
        groups, duplicates = [], []
        with self._lock:
            for d in deliveries:
                g = d.message
                held = self.pending.get(g.group_id)
                if held is not None:
                    # the same entry redelivered, or a second copy of a group we hold
                    # (a restarted orchestrator re-sent it): the copy carries nothing new
                    if held[0] != d.entry_id:
                        duplicates.append(d.entry_id)
                    continue
                self.pending[g.group_id] = (d.entry_id, [s.rollout_id for s in g.samples])
                groups.append(g)
        if duplicates:
            self.bridge.call(self.consumer.ack(duplicates))
        return groups

    def ack(self, group_ids: Sequence[str]) -> None:
        with self._lock:
            held = [self.pending.pop(g) for g in group_ids if g in self.pending]
        entries = [e for e, _ in held]
        rollouts = [r for _, ids in held for r in ids]
        self.bridge.call(self.consumer.ack(entries, ledger=self.ledger, processed_ids=rollouts))

    def close(self) -> None:
        self._heartbeat.cancel()


class BusAnnouncer:
    """`PolicyAnnouncer` that also publishes the trainer's per-step metrics."""

    def __init__(self, bridge: BusBridge) -> None:
        s = bridge.settings
        self.bridge = bridge
        self.policy = policy_broadcaster(bridge.redis, s)
        self.metrics = metrics_broadcaster(bridge.redis, s)

    def announce(self, version: PolicyVersion) -> None:
        self.bridge.call(self.policy.publish(version), 30)

    def publish_metrics(self, step: int, values: dict[str, float]) -> None:
        event = MetricEvent(source="trainer", step=step, values={k: float(v) for k, v in values.items()})
        self.bridge.call(self.metrics.publish(event), 30)
