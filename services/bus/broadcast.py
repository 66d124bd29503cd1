"""Fan-out announcements: every reader sees every message (PolicyVersion, MetricEvent).

The trainer announces policy versions to the orchestrator and the inference
bridge; every component sends metrics to the dashboard. These are not work
items: nobody acks them, the stream is trimmed to about ``max_len`` entries
(XADD MAXLEN ~), and each ``BroadcastReader`` keeps its own last-seen id and
reads with plain XREAD. ``latest()`` serves latest-wins state such as "the
current policy version". A reader that falls more than ``max_len`` entries
behind misses the trimmed ones (fine for announcements, where only the newest
matters; not fine for work: use ``transport`` for that). Entries that fail to
decode are logged and skipped, and stay in the stream for inspection.
"""

from __future__ import annotations

import logging
from typing import Any, Generic, TypeVar

import msgspec
import redis.asyncio as aioredis
from msgspec import DecodeError, ValidationError

from services.bus.codec import DATA, KIND, MSGPACK, Codec
from services.bus.settings import default

log = logging.getLogger(__name__)

T = TypeVar("T", bound=msgspec.Struct)


class Broadcaster:
    """Publishes announcements to a length-bounded broadcast stream."""

    def __init__(
        self, redis: aioredis.Redis, stream: str,
        max_len: int = default("broadcast_max_len"), *, codec: Codec = MSGPACK,
    ) -> None:
        if max_len < 1:
            raise ValueError(f"stream {stream}: max_len must be >= 1, got {max_len}")
        self.redis, self.stream, self.max_len, self.codec = redis, stream, max_len, codec

    async def publish(self, message: msgspec.Struct) -> str:
        entry_id = await self.redis.xadd(
            self.stream,
            {KIND: type(message).__name__, DATA: self.codec.encode(message)},
            maxlen=self.max_len, approximate=True,
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


class BroadcastReader(Generic[T]):
    """Reads every announcement after its start point, in order.

    ``start="$"`` (default): only messages published after the reader's
    position is pinned (by ``start()`` or the first ``read()``); ``"0"``: every
    retained message; or an entry id to resume after.
    """

    def __init__(
        self, redis: aioredis.Redis, stream: str, message_type: type[T], *,
        codec: Codec = MSGPACK, start: str = "$",
    ) -> None:
        self.redis, self.stream, self.message_type = redis, stream, message_type
        self.kind = message_type.__name__.encode()
        self._decode = codec.decoder(message_type)
        self.last_id: str | None = None if start == "$" else start
        self.skipped = 0

    async def start(self) -> str:
        """Pin the position now (for ``start="$"``); returns the last-seen id."""
        if self.last_id is None:
            newest = await self.redis.xrevrange(self.stream, "+", "-", count=1)
            self.last_id = _text(newest[0][0]) if newest else "0-0"
        return self.last_id

    async def read(
        self, count: int = 100, block_ms: int = default("block_ms")
    ) -> list[tuple[str, T]]:
        """Messages after the last-seen id; blocks up to ``block_ms`` (0 = no block)."""
        last = await self.start()
        reply = await self.redis.xread({self.stream: last}, count=count, block=block_ms or None)
        if not reply:
            return []
        batches = reply.values() if isinstance(reply, dict) else [e for _, e in reply]
        out: list[tuple[str, T]] = []
        for batch in batches:
            for eid, fields in batch:
                self.last_id = _text(eid)
                message = self._decode_entry(self.last_id, fields)
                if message is not None:
                    out.append((self.last_id, message))
        return out

    async def latest(self, scan: int = 16) -> T | None:
        """The newest decodable message (latest wins), or None if there is none."""
        for eid, fields in await self.redis.xrevrange(self.stream, "+", "-", count=scan):
            message = self._decode_entry(_text(eid), fields, in_read=False)
            if message is not None:
                return message
        return None

    def _decode_entry(self, entry_id: str, fields: dict[Any, Any], in_read: bool = True) -> T | None:
        kind = fields.get(KIND, b"")
        try:
            if kind != self.kind:
                raise ValueError(f"kind {kind!r}, expected {self.kind!r}")
            return self._decode(fields[DATA])
        except (DecodeError, ValidationError, ValueError, KeyError) as exc:
            self.skipped += in_read  # entries read() passed over, each counted once
            log.warning("skipping undecodable %s entry %s: %s", self.stream, entry_id, exc)
            return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
