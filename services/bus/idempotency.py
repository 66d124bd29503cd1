"""Idempotent processing by rollout id: nothing is trained twice.

The bus delivers at least once (``services.bus.transport``): a consumer killed
after using a message but before acking it gets that message redelivered to
someone else. The ``IdempotencyLedger`` is a Redis set of ids whose effect is
durable; ``StreamConsumer.ack(ids, ledger=..., processed_ids=...)`` adds to it
in the same MULTI/EXEC as the XACK, so "acked" and "recorded" never disagree.
Consumers skip redelivered messages whose ids are all recorded
(``partition``), then ack them.

How the trainer uses it (its effect is durable at a checkpoint, not at the
optimizer step): it acks + records the consumed ids when it writes a
checkpoint, and it stores the consumed ids in the checkpoint too. If it dies
after the step but before the checkpoint, the restarted trainer resumes from
the older checkpoint, so retraining those redelivered groups is correct. If it
dies after the checkpoint but before the ack, the ledger does not know the ids
yet; passing the checkpoint's ids as ``also_processed`` skips them. After a
Redis data loss (power loss under ``appendfsync everysec``) ``record`` re-seeds
the ledger from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis

from services.bus.messages import RolloutGroup, RolloutSample
from services.bus.transport import Delivery

T = TypeVar("T", bound=msgspec.Struct)


def rollout_ids(message: msgspec.Struct) -> list[str]:
    """The ids that make processing ``message`` idempotent (its rollout ids)."""
    if isinstance(message, RolloutGroup):
        return [s.rollout_id for s in message.samples]
    if isinstance(message, RolloutSample):
        return [message.rollout_id]
    raise TypeError(f"no idempotency ids for {type(message).__name__}; pass ids explicitly")


class IdempotencyLedger:
    """A Redis set of processed ids (one per run: key it by run)."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self.redis, self.key = redis, key

    async def seen(self, ids: Sequence[str]) -> list[bool]:
        """For each id, whether it is recorded (one SMISMEMBER)."""
        if not ids:
            return []
        return [bool(x) for x in await self.redis.smismember(self.key, list(ids))]

    async def filter_new(
        self, ids: Sequence[str], *, also_processed: Container[str] = frozenset()
    ) -> list[str]:
        """The ids neither recorded here nor in ``also_processed`` (e.g. a checkpoint's)."""
        flags = await self.seen(ids)
        return [i for i, done in zip(ids, flags) if not done and i not in also_processed]

    async def partition(
        self, deliveries: Sequence[Delivery[T]], *, also_processed: Container[str] = frozenset()
    ) -> tuple[list[Delivery[T]], list[Delivery[T]]]:
        """Split into (to process, already processed: ack and skip).

        A message is already processed when every one of its rollout ids is;
        a partly processed group stays "to process": filter its samples with
        ``filter_new``.
        """
        all_ids = [rid for d in deliveries for rid in rollout_ids(d.message)]
        new = set(await self.filter_new(all_ids, also_processed=also_processed))
        fresh, done = [], []
        for d in deliveries:
            (fresh if any(rid in new for rid in rollout_ids(d.message)) else done).append(d)
        return fresh, done

    async def record(self, ids: Iterable[str]) -> int:
        """Record ids outside an ack (e.g. re-seeding from a checkpoint); returns how many were new."""
        items = list(ids)
        return int(await self.redis.sadd(self.key, *items)) if items else 0

    def add_to(self, pipe: Any, ids: Sequence[str]) -> None:
        """Queue the SADD on a MULTI/EXEC pipeline (used by ``StreamConsumer.ack``)."""
        pipe.sadd(self.key, *ids)

    async def count(self) -> int:
        return int(await self.redis.scard(self.key))
