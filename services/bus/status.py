"""A snapshot of the bus for operators and the dashboard: backlog, pending, dead letters.

``aspo bus status`` prints it; the orchestrator's dashboard can call
``bus_status`` too. Read-only: it never creates streams or groups.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from services.bus.broadcast import BroadcastReader
from services.bus.messages import PolicyVersion
from services.bus.settings import BusSettings


class ConsumerStatus(BaseModel):
    name: str
    pending: int = Field(description="Entries delivered to it and not acked.")
    idle_ms: int = Field(description="Since its last read or claim.")


class GroupStatus(BaseModel):
    name: str
    pending: int
    consumers: list[ConsumerStatus]


class StreamStatus(BaseModel):
    stream: str
    length: int = Field(description="XLEN: for a work stream, the unacknowledged backlog.")
    groups: list[GroupStatus] = []
    dead_letters: int = 0


class BusStatus(BaseModel):
    url: str
    redis_version: str
    aof_enabled: bool
    rollouts: StreamStatus
    policy: StreamStatus
    metrics: StreamStatus
    ledger_size: int = Field(description="Rollout ids recorded as durably trained.")
    latest_policy_version: int | None


async def bus_status(redis: aioredis.Redis, settings: BusSettings, url: str) -> BusStatus:
    info = await redis.info()
    latest = await BroadcastReader(redis, settings.policy_stream, PolicyVersion).latest()
    return BusStatus(
        url=url,
        redis_version=str(info.get("redis_version", "?")),
        aof_enabled=bool(int(info.get("aof_enabled", 0))),
        rollouts=await stream_status(redis, settings.rollout_stream, dead_letters=True),
        policy=await stream_status(redis, settings.policy_stream),
        metrics=await stream_status(redis, settings.metrics_stream),
        ledger_size=int(await redis.scard(settings.ledger_key)),
        latest_policy_version=latest.version if latest else None,
    )


async def stream_status(redis: aioredis.Redis, stream: str, dead_letters: bool = False) -> StreamStatus:
    if not await redis.exists(stream):
        return StreamStatus(stream=stream, length=0)
    groups = []
    for g in await redis.xinfo_groups(stream):
        name = _text(_get(g, "name"))
        consumers = [
            ConsumerStatus(name=_text(_get(c, "name")), pending=int(_get(c, "pending")),
                           idle_ms=int(_get(c, "idle")))
            for c in await redis.xinfo_consumers(stream, name)
        ]
        groups.append(GroupStatus(name=name, pending=int(_get(g, "pending")), consumers=consumers))
    dead = int(await redis.xlen(f"{stream}:dead")) if dead_letters else 0
    return StreamStatus(stream=stream, length=int(await redis.xlen(stream)), groups=groups,
                        dead_letters=dead)


async def dead_letters(redis: aioredis.Redis, stream: str, count: int) -> list[dict[str, str]]:
    """The newest ``count`` dead letters of ``stream`` (payload left out), newest first."""
    rows = await redis.xrevrange(f"{stream}:dead", "+", "-", count=count)
    out = []
    for eid, fields in rows:
        row = {"dead_letter_id": _text(eid)}
        row.update({_text(k): _text(v) for k, v in fields.items() if _text(k) not in ("d",)})
        row["payload_bytes"] = str(len(fields.get(b"d", b"")))
        out.append(row)
    return out


def _get(row: dict[Any, Any], key: str) -> Any:
    return row.get(key, row.get(key.encode()))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
