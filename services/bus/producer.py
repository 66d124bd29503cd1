"""Bounded publishing to a work stream: wait for room, never drop, never trim.

Used by the orchestrator (``channels.rollout_producer``) to hand RolloutGroups
to the trainer; ``services.bus.transport`` documents the delivery guarantees
and re-exports everything here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from services.bus.codec import DATA, KIND, MSGPACK, Codec, text
from services.bus.settings import default

# Reserves room for up to ARGV[2] entries under max_len (ARGV[1]), counting the
# live reservations of other producers, and returns how many it got. The
# payloads then go in one MULTI/EXEC of plain XADDs that also drops the
# reservation, so XLEN + reserved never passes max_len. (Passing ~200 KB
# payloads through a Lua script instead was ~1.5x slower: Redis copies every
# argument into Lua.) A producer that dies between the two steps holds its
# room until the reservation expires after ARGV[4] ms.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  held = held + tonumber(string.match(m, ':(%d+)$'))
end
local n = math.min(tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1]) - held, tonumber(ARGV[2]))
if n <= 0 then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3] .. ':' .. n)
return n
"""


class BusError(RuntimeError):
    """A bus operation failed; the message names the stream and the cause."""


class PublishIncomplete(BusError):
    """Publishing stopped early; ``published_ids`` are the entries that went out."""

    def __init__(self, message: str, published_ids: list[str]) -> None:
        super().__init__(message)
        self.published_ids = published_ids


class BackpressureTimeout(PublishIncomplete, TimeoutError):
    """The stream stayed full until the publish deadline."""


class PublishCancelled(PublishIncomplete):
    """The cancel event was set while publish waited for room."""


class StreamProducer:
    """Publishes messages to a bounded work stream, waiting while it is full."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        max_len: int,
        *,
        codec: Codec = MSGPACK,
        timeout_s: float = default("publish_timeout_s"),
        batch_bytes: int = 8 << 20,
        poll_s: tuple[float, float] = (0.002, 0.2),
        reservation_ttl_ms: int = 30_000,
    ) -> None:
        if max_len < 1:
            raise ValueError(f"stream {stream}: max_len must be >= 1, got {max_len}")
        self.redis, self.stream, self.max_len = redis, stream, max_len
        self.codec, self.timeout_s, self.batch_bytes, self.poll_s = codec, timeout_s, batch_bytes, poll_s
        self.reservation_key, self.reservation_ttl_ms = f"{stream}:reserved", reservation_ttl_ms
        self._reserve = redis.register_script(_RESERVE)
        self._token_prefix, self._tokens = uuid.uuid4().hex, itertools.count()

    async def publish(
        self, message: msgspec.Struct, *, timeout_s: float | None = None,
        cancel: asyncio.Event | None = None,
    ) -> str:
        """Append one message; returns its entry id. Waits while the stream is full."""
        return (await self.publish_many([message], timeout_s=timeout_s, cancel=cancel))[0]

    async def publish_many(
        self, messages: Sequence[msgspec.Struct], *, timeout_s: float | None = None,
        cancel: asyncio.Event | None = None,
    ) -> list[str]:
        """Append messages in order, batched into few round trips; returns entry ids.

        Raises BackpressureTimeout / PublishCancelled (with the ids already
        published) if the stream stays full past the deadline / cancel is set.
        """
        items = [(type(m).__name__.encode(), self.codec.encode(m)) for m in messages]
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        ids: list[str] = []
        delay = self.poll_s[0]
        while len(ids) < len(items):
            chunk = self._chunk(items, len(ids))
            added = await self._add_what_fits(chunk)
            ids += added
            if len(added) == len(chunk):
                delay = self.poll_s[0]
                continue
            await self._wait_for_room(deadline, delay, cancel, ids, len(items))
            delay = min(delay * 2, self.poll_s[1])
        return ids

    async def _add_what_fits(self, chunk: list[tuple[bytes, bytes]]) -> list[str]:
        """Reserve room, then XADD that many in one MULTI/EXEC that drops the reservation."""
        token = f"{self._token_prefix}-{next(self._tokens)}"
        n = int(await self._reserve(
            keys=[self.stream, self.reservation_key],
            args=[self.max_len, len(chunk), token, self.reservation_ttl_ms],
        ))
        if n <= 0:
            return []
        pipe = self.redis.pipeline(transaction=True)
        for kind, payload in chunk[:n]:
            pipe.xadd(self.stream, {KIND: kind, DATA: payload})
        pipe.zrem(self.reservation_key, f"{token}:{n}")
        return [text(x) for x in (await pipe.execute())[:n]]

    def _chunk(self, items: list[tuple[bytes, bytes]], start: int) -> list[tuple[bytes, bytes]]:
        size, end = 0, start
        while end < len(items) and (end == start or size + len(items[end][1]) <= self.batch_bytes):
            size += len(items[end][1])
            end += 1
        return items[start:end]

    async def _wait_for_room(
        self, deadline: float, delay: float, cancel: asyncio.Event | None,
        ids: list[str], total: int,
    ) -> None:
        state = f"stream {self.stream} holds >= {self.max_len} unacknowledged entries"
        if cancel is not None and cancel.is_set():
            raise PublishCancelled(f"publish cancelled: {state}; {len(ids)}/{total} published", ids)
        if time.monotonic() >= deadline:
            raise BackpressureTimeout(
                f"{state} until the publish deadline; {len(ids)}/{total} published. "
                "Is its consumer running and acking?", ids,
            )
        delay = min(delay, max(0.0, deadline - time.monotonic()))
        if cancel is None:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(cancel.wait(), delay)
        except asyncio.TimeoutError:  # not builtins.TimeoutError before Python 3.11
            pass
