"""kill -9 of a consumer process mid-batch: its messages are reclaimed, none trained twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from services.bus.idempotency import IdempotencyLedger, rollout_ids
from services.bus.messages import RolloutGroup
from services.bus.transport import StreamConsumer, StreamProducer, connect

N_GROUPS, SAMPLES, VICTIM_HELD, VICTIM_RECORDED = 200, 2, 30, 10
# Live workers ack within milliseconds; only the dead one's entries age this much.
# The wide margin keeps a loaded CI machine from reclaiming a live worker's batch.
MIN_IDLE_MS = 3_000


def _start_victim(url: str, stream: str, ledger_key: str) -> subprocess.Popen[str]:
    script = Path(__file__).with_name("consumer_proc.py")
    args = [url, stream, "trainer", "victim", str(VICTIM_HELD), str(VICTIM_RECORDED), ledger_key]
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True)


async def _worker(url, stream, ledger_key, name, trained, skipped, redelivered, stop_at):
    r = connect(url)
    consumer = StreamConsumer(r, stream, "trainer", name, RolloutGroup,
                              min_idle_ms=MIN_IDLE_MS, reclaim_interval_ms=0)
    ledger = IdempotencyLedger(r, ledger_key)
    while await ledger.count() < N_GROUPS * SAMPLES and time.monotonic() < stop_at:
        batch = await consumer.fetch(count=7, block_ms=100)
        fresh, done = await ledger.partition(batch)
        skipped += [d.message.group_id for d in done]
        redelivered += [d.message.group_id for d in fresh if d.deliveries > 1]
        ids = [rid for d in fresh for rid in await ledger.filter_new(rollout_ids(d.message))]
        trained += ids  # "train", then ack + record atomically
        await consumer.ack([d.entry_id for d in batch], ledger=ledger, processed_ids=ids)
    await r.aclose()


def test_killed_consumer_is_reclaimed_and_each_rollout_trained_once(
    redis_url, stream_name, make_group
):
    ledger_key = f"{stream_name}:ledger"
    groups = [make_group(f"g{i:03d}", n_samples=SAMPLES) for i in range(N_GROUPS)]
    all_ids = {rid for g in groups for rid in rollout_ids(g)}

    async def produce():
        r = connect(redis_url)
        await StreamConsumer(r, stream_name, "trainer", "setup", RolloutGroup).ensure_group()
        await StreamProducer(r, stream_name, max_len=N_GROUPS).publish_many(groups)
        await r.aclose()

    asyncio.run(produce())
    victim = _start_victim(redis_url, stream_name, ledger_key)
    try:
        assert victim.stdout is not None
        ready = victim.stdout.readline()
        os.kill(victim.pid, signal.SIGKILL)  # mid-batch: fetched, nothing acked
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert ready.strip() == f"READY {VICTIM_HELD}"

    async def consume():
        r = connect(redis_url)
        probe = StreamConsumer(r, stream_name, "trainer", "probe", RolloutGroup)
        victim_pending = await probe.pending_count("victim")
        trained, skipped, redelivered = [], [], []
        stop_at = time.monotonic() + 120  # a safety net against hanging, not a speed check
        await asyncio.gather(*(
            _worker(redis_url, stream_name, ledger_key, f"w{i}", trained, skipped, redelivered,
                    stop_at)
            for i in range(3)
        ))
        left = await probe.pending_count(), await r.xlen(stream_name)
        recorded = {m.decode() for m in await r.smembers(ledger_key)}
        await r.aclose()
        return victim_pending, trained, skipped, redelivered, left, recorded

    victim_pending, trained, skipped, redelivered, left, recorded = asyncio.run(consume())
    assert victim_pending == VICTIM_HELD
    twice = [rid for rid, n in Counter(trained).items() if n > 1]
    assert twice == [], f"trained twice: {twice[:5]}"
    victim_recorded = {f"g{i:03d}/{s}" for i in range(VICTIM_RECORDED) for s in range(SAMPLES)}
    assert set(trained) == all_ids - victim_recorded  # none missing, durable ones not redone
    assert recorded == all_ids
    assert sorted(skipped) == [f"g{i:03d}" for i in range(VICTIM_RECORDED)]
    assert len(redelivered) == VICTIM_HELD - VICTIM_RECORDED
    assert left == (0, 0)  # nothing pending, nothing left in the stream
