"""`aspo bus status / dead-letters / stop` against a real private redis-server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from services.bus.broadcast import Broadcaster
from services.bus.cli import app
from services.bus.messages import PolicyVersion, RolloutGroup
from services.bus.redis_server import ensure_redis, find_private
from services.bus.settings import BusSettings
from services.bus.transport import StreamConsumer, StreamProducer, connect


def test_status_dead_letters_and_stop(tmp_path: Path, monkeypatch, make_group):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("ASPO_BUS_URL", raising=False)
    settings = BusSettings()
    handle = ensure_redis(tmp_path, settings)
    try:
        async def fill():
            r = connect(handle.url)
            consumer = StreamConsumer(r, settings.rollout_stream, settings.trainer_group, "t0",
                                      RolloutGroup)
            await consumer.ensure_group()
            await StreamProducer(r, settings.rollout_stream, max_len=10).publish_many(
                [make_group(f"g{i}") for i in range(4)])
            await r.xadd(settings.rollout_stream, {"k": "RolloutGroup", "d": b"junk"})
            await consumer.fetch(count=2, block_ms=0)  # 2 held, unacked
            await Broadcaster(r, settings.policy_stream).publish(
                PolicyVersion(version=9, path="/p/v9", trainer_step=90))
            await r.aclose()

        asyncio.run(fill())
        runner = CliRunner()
        result = runner.invoke(app, ["status", "--run-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        state = json.loads(result.output)
        assert state["rollouts"]["length"] == 5 and state["latest_policy_version"] == 9
        (group,) = state["rollouts"]["groups"]
        assert group["pending"] == 2 and group["consumers"][0]["name"] == "t0"

        async def drain():  # the junk entry is dead-lettered when reached
            r = connect(handle.url)
            consumer = StreamConsumer(r, settings.rollout_stream, settings.trainer_group, "t1",
                                      RolloutGroup)
            await consumer.fetch(count=10, block_ms=0)
            await r.aclose()

        asyncio.run(drain())
        result = runner.invoke(app, ["dead-letters", "--run-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        (dead,) = json.loads(result.output)
        assert dead["reason"].startswith("undecodable") and dead["payload_bytes"] == "4"
        result = runner.invoke(app, ["stop", "--run-dir", str(tmp_path)])
        assert result.output.strip() == "stopped" and find_private(tmp_path) is None
        result = runner.invoke(app, ["status", "--run-dir", str(tmp_path)])
        assert result.exit_code != 0 and "no private Redis is running" in result.output
    finally:
        handle.close()
