"""The system's named channels, built from ``BusSettings`` in one place.

Who uses which: the orchestrator publishes rollouts and reads policy
versions; the trainer consumes rollouts (with the ledger) and broadcasts
policy versions; every component broadcasts metrics; the dashboard reads
them. Building them here keeps stream names, bounds and timeouts identical
on both ends of every stream.

    r = connect(settings.url or handle.url)
    producer = rollout_producer(r, settings)
    consumer = rollout_consumer(r, settings, "trainer-0")
"""

from __future__ import annotations

import redis.asyncio as aioredis

from services.bus.broadcast import Broadcaster, BroadcastReader
from services.bus.idempotency import IdempotencyLedger
from services.bus.messages import MetricEvent, PolicyVersion, RolloutGroup
from services.bus.settings import BusSettings
from services.bus.transport import StreamConsumer, StreamProducer


def rollout_producer(redis: aioredis.Redis, settings: BusSettings) -> StreamProducer:
    """Orchestrator -> trainer work queue (bounded; waits when the trainer lags)."""
    return StreamProducer(redis, settings.rollout_stream, settings.max_len,
                          timeout_s=settings.publish_timeout_s)


def rollout_consumer(
    redis: aioredis.Redis, settings: BusSettings, consumer_name: str
) -> StreamConsumer[RolloutGroup]:
    """A trainer-side member of the trainer group; name it stably (e.g. by rank) so a
    restarted trainer takes back what it held."""
    return StreamConsumer(
        redis, settings.rollout_stream, settings.trainer_group, consumer_name, RolloutGroup,
        min_idle_ms=settings.reclaim_min_idle_ms, reclaim_interval_ms=settings.reclaim_interval_ms,
        max_deliveries=settings.max_deliveries,
    )


def trained_ledger(redis: aioredis.Redis, settings: BusSettings) -> IdempotencyLedger:
    """Rollout ids whose training is durable (see ``idempotency``)."""
    return IdempotencyLedger(redis, settings.ledger_key)


def policy_broadcaster(redis: aioredis.Redis, settings: BusSettings) -> Broadcaster:
    return Broadcaster(redis, settings.policy_stream, settings.broadcast_max_len)


def policy_reader(
    redis: aioredis.Redis, settings: BusSettings, start: str = "$"
) -> BroadcastReader[PolicyVersion]:
    return BroadcastReader(redis, settings.policy_stream, PolicyVersion, start=start)


def metrics_broadcaster(redis: aioredis.Redis, settings: BusSettings) -> Broadcaster:
    return Broadcaster(redis, settings.metrics_stream, settings.broadcast_max_len)


def metrics_reader(
    redis: aioredis.Redis, settings: BusSettings, start: str = "$"
) -> BroadcastReader[MetricEvent]:
    return BroadcastReader(redis, settings.metrics_stream, MetricEvent, start=start)
