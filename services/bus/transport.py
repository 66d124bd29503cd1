"""Typed work queues over Redis streams (redis.asyncio): producer and consumer.

The orchestrator publishes ``RolloutGroup`` work items with a
``StreamProducer``; the trainer consumes them with a ``StreamConsumer`` in one
consumer group. ``StreamProducer`` lives in ``services.bus.producer`` and is
re-exported here. Fan-out announcements (PolicyVersion, MetricEvent) go
through ``services.bus.broadcast``; the idempotency ledger is in
``services.bus.idempotency``; ``services.bus.channels`` builds all of them
from ``BusSettings``.

API (clients from ``connect(url)``: bytes replies, not decode_responses)::

    producer = StreamProducer(redis, "aspo:rollouts", max_len=256)
    await producer.publish(group)                 # waits while the stream is full
    consumer = StreamConsumer(redis, "aspo:rollouts", "trainer", "trainer-0", RolloutGroup)
    for d in await consumer.fetch(count=8, block_ms=1000):
        ...use d.message...                       # d.entry_id, d.deliveries
    await consumer.ack(ids, ledger=ledger, processed_ids=rollout_ids)  # one MULTI/EXEC

Delivery guarantees:

* At-least-once. An entry stays in the group's pending list until acked; a
  consumer that dies (kill -9) leaves it there and ``fetch`` of any live
  consumer reclaims it with XAUTOCLAIM once it has been idle
  ``min_idle_ms``. A restarted consumer with the same name first re-claims
  its own pending entries. Acking only after the effect is durable plus
  skipping ids the ``IdempotencyLedger`` has already recorded gives
  effectively exactly-once training.
* Never dropped: a work stream is bounded by *unacknowledged* entries.
  ``ack`` does XACK + XDEL (one consumer group per work stream), so XLEN is
  the backlog. ``publish`` first reserves room atomically (a Lua script
  counting XLEN plus other producers' live reservations), then XADDs that
  many in one MULTI/EXEC (no MAXLEN trimming of un-acked data); without room
  it waits, with a deadline (``BackpressureTimeout``) and an optional cancel
  event (``PublishCancelled``). Entries of one producer keep their order. A
  producer stalled longer than ``reservation_ttl_ms`` between the two steps
  can overshoot ``max_len`` by its batch.
* Poison messages: an entry that fails to decode, has the wrong kind, or was
  delivered more than ``max_deliveries`` times without an ack is copied to
  the dead-letter stream ``<stream>:dead`` with the reason, then acked, and
  logged: never silently lost, never blocking the queue.
* Not covered: a consumer that is merely slow (not dead) past ``min_idle_ms``
  gets its entries reclaimed and processed a second time elsewhere unless it
  calls ``touch`` (a heartbeat that resets the idle clock) while it works;
  checking ``IdempotencyLedger.filter_new`` just before the ack narrows that
  window but cannot close it. Size ``min_idle_ms`` above the longest
  fetch-to-ack time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.bus.codec import DATA, JSON, KIND, MSGPACK, Codec, text
from services.bus.producer import (
    BackpressureTimeout,
    BusError,
    PublishCancelled,
    PublishIncomplete,
    StreamProducer,
)
from services.bus.settings import default

__all__ = [
    "JSON", "MSGPACK", "BackpressureTimeout", "BusError", "Codec", "Delivery",
    "PublishCancelled", "PublishIncomplete", "StreamConsumer", "StreamProducer", "connect",
]

if TYPE_CHECKING:
    from services.bus.idempotency import IdempotencyLedger

log = logging.getLogger(__name__)

T = TypeVar("T", bound=msgspec.Struct)


def connect(url: str) -> aioredis.Redis:
    """An async client as the bus needs it: bytes replies (payloads are binary).

    Reads time out after 630 s, above the longest block ``BusSettings`` allows
    (600 s): redis-py 8's default of 5 s turned every blocking XREAD/XREADGROUP
    of 5 s or more into a TimeoutError, while no timeout at all would let a
    hung server hang its clients forever. Connecting times out after 10 s.
    """
    return aioredis.Redis.from_url(
        url, decode_responses=False, socket_timeout=630.0, socket_connect_timeout=10
    )


@dataclass(frozen=True)
class Delivery(Generic[T]):
    """One message handed to a consumer: ack ``entry_id`` once its effect is durable."""

    entry_id: str
    message: T
    deliveries: int = 1  # > 1: a redelivery (reclaimed from a dead consumer or re-claimed)


class StreamConsumer(Generic[T]):
    """One member of a consumer group reading typed messages from a work stream."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer_name: str,
        message_type: type[T],
        *,
        codec: Codec = MSGPACK,
        min_idle_ms: int = default("reclaim_min_idle_ms"),
        reclaim_interval_ms: int = default("reclaim_interval_ms"),
        max_deliveries: int = default("max_deliveries"),
        dead_letter_stream: str | None = None,
        delete_on_ack: bool = True,
    ) -> None:
        self.redis, self.stream, self.group, self.name = redis, stream, group, consumer_name
        self.message_type, self.kind = message_type, message_type.__name__.encode()
        self._decode = codec.decoder(message_type)
        self.min_idle_ms, self.reclaim_interval_ms = min_idle_ms, reclaim_interval_ms
        self.max_deliveries, self.delete_on_ack = max_deliveries, delete_on_ack
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self._group_ready = False
        self._own_pending_checked = False
        self._reclaim_cursor = "0-0"
        self._last_reclaim = float("-inf")

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; idempotent."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def fetch(
        self, count: int = 16, block_ms: int = default("block_ms"),
    ) -> list[Delivery[T]]:
        """Up to ``count`` messages: own/others' stale pending first, then new ones.

        Blocks up to ``block_ms`` only when nothing was reclaimed; 0 = no block.
        """
        if count < 1:
            raise ValueError(f"fetch count must be >= 1, got {count}")
        await self.ensure_group()
        claimed = await self._claim_pending(count)
        counts = await self._delivery_counts([text(eid) for eid, _ in claimed if eid is not None])
        fresh = []
        if len(claimed) < count:
            fresh = await self._read_new(count - len(claimed), block_ms if not claimed else 0)
        return await self._decode_all(claimed + fresh, counts)

    async def ack(
        self, entry_ids: Iterable[str], *, ledger: IdempotencyLedger | None = None,
        processed_ids: Iterable[str] = (),
    ) -> int:
        """Ack (and XDEL) entries; with a ledger, record processed ids in the same MULTI/EXEC."""
        ids = list(entry_ids)
        processed = list(processed_ids)
        if not ids and not processed:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        if ledger is not None and processed:
            ledger.add_to(pipe, processed)
        if ids:
            pipe.xack(self.stream, self.group, *ids)
            if self.delete_on_ack:
                pipe.xdel(self.stream, *ids)
        results = await pipe.execute()
        return int(results[1 if ledger is not None and processed else 0]) if ids else 0

    async def touch(self, entry_ids: Iterable[str]) -> None:
        """Reset the idle clock of entries still being processed (a heartbeat)."""
        ids = list(entry_ids)
        if ids:
            await self.redis.xclaim(self.stream, self.group, self.name, 0, ids, justid=True)

    async def pending_count(self, consumer_name: str | None = None) -> int:
        """Entries delivered to ``consumer_name`` (default: the whole group) and not acked."""
        await self.ensure_group()
        if consumer_name is None:
            return int((await self.redis.xpending(self.stream, self.group))["pending"])
        rows = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", 1_000_000, consumername=consumer_name
        )
        return len(rows)

    async def _claim_pending(self, count: int) -> list[tuple[Any, dict]]:
        claimed: list[tuple[Any, dict]] = []
        if not self._own_pending_checked:
            # A restarted consumer with the same name: take back what it held.
            rows = await self.redis.xpending_range(
                self.stream, self.group, "-", "+", count, consumername=self.name
            )
            if rows:
                ids = [r["message_id"] for r in rows]
                claimed += await self.redis.xclaim(self.stream, self.group, self.name, 0, ids)
            if len(rows) < count:
                self._own_pending_checked = True
        now = time.monotonic()
        # Not in the same call as the own-pending XCLAIM: it could re-claim those very entries.
        due = (now - self._last_reclaim) * 1000 >= self.reclaim_interval_ms
        if not claimed and due:
            self._last_reclaim = now
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.name, self.min_idle_ms,
                start_id=self._reclaim_cursor, count=count,
            )
            self._reclaim_cursor = text(reply[0])
            if reply[1]:
                log.info("%s reclaimed %d stale entries from %s", self.name, len(reply[1]), self.stream)
            if any(eid is None for eid, _ in reply[1]):
                await self._ack_deleted_pending()
            claimed += [(eid, fields) for eid, fields in reply[1] if eid is not None]
        return claimed

    async def _ack_deleted_pending(self) -> None:
        """Redis 6.2's XAUTOCLAIM claims entries deleted while pending but returns them
        as nil (7.x drops them from the pending list itself): ack those it gave us."""
        rows = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", 1_000, consumername=self.name
        )
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.xrange(self.stream, row["message_id"], row["message_id"], count=1)
        exists = await pipe.execute()
        gone = [row["message_id"] for row, hit in zip(rows, exists) if not hit]
        if gone:
            await self.redis.xack(self.stream, self.group, *gone)

    async def _read_new(self, count: int, block_ms: int) -> list[tuple[Any, dict]]:
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.name, {self.stream: ">"}, count=count, block=block_ms or None
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("%s: group %s vanished (stream deleted?); re-creating it", self.stream,
                        self.group)
            self._group_ready = False
            await self.ensure_group()
            return []
        if not reply:
            return []
        entries = reply.values() if isinstance(reply, dict) else [e for _, e in reply]
        return [(eid, fields) for batch in entries for eid, fields in batch]

    async def _decode_all(
        self, raw: list[tuple[Any, dict]], counts: dict[str, int]
    ) -> list[Delivery[T]]:
        out: list[Delivery[T]] = []
        for eid, fields in raw:
            if eid is None:
                continue
            entry_id = text(eid)
            delivered = counts.get(entry_id, 1)
            if not fields:  # XDEL'd while pending (Redis 6.2 still lists it): nothing to do
                await self.redis.xack(self.stream, self.group, entry_id)
                continue
            if delivered > self.max_deliveries:
                reason = f"delivered {delivered} times without an ack (max {self.max_deliveries})"
                await self._dead_letter(entry_id, fields, reason, delivered)
                continue
            kind = fields.get(KIND, b"")
            try:
                if kind != self.kind:
                    raise ValueError(f"kind {kind!r}, expected {self.kind!r}")
                message = self._decode(fields[DATA])
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError) as exc:
                await self._dead_letter(entry_id, fields, f"undecodable: {exc}", delivered)
                continue
            out.append(Delivery(entry_id=entry_id, message=message, deliveries=delivered))
        return out

    async def _delivery_counts(self, entry_ids: list[str]) -> dict[str, int]:
        """XPENDING times-delivered of re-claimed entries (fresh reads are 1 by definition)."""
        if not entry_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for r in rows:
                counts[text(r["message_id"])] = int(r["times_delivered"])
        return counts

    async def _dead_letter(self, entry_id: str, fields: dict, reason: str, delivered: int) -> None:
        log.warning("dead-lettering %s %s (group %s): %s", self.stream, entry_id, self.group, reason)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, {
            "k": fields.get(KIND, b""), "d": fields.get(DATA, b""), "stream": self.stream,
            "entry_id": entry_id, "group": self.group, "consumer": self.name,
            "reason": reason, "deliveries": delivered,
        })
        pipe.xack(self.stream, self.group, entry_id)
        if self.delete_on_ack:
            pipe.xdel(self.stream, entry_id)
        await pipe.execute()
