"""A consumer process the kill test SIGKILLs mid-batch (not a test module).

It fetches ``count`` RolloutGroups, records the rollout ids of the first
``record`` of them in the ledger (their effect is durable, as after a trainer
checkpoint) but acks nothing, prints ``READY <n>`` and waits to be killed.

Usage: python consumer_proc.py URL STREAM GROUP NAME COUNT RECORD LEDGER_KEY
"""

from __future__ import annotations

import asyncio
import sys

from services.bus.idempotency import IdempotencyLedger, rollout_ids
from services.bus.messages import RolloutGroup
from services.bus.transport import StreamConsumer, connect


async def main(url: str, stream: str, group: str, name: str, count: int, record: int,
               ledger_key: str) -> None:
    r = connect(url)
    consumer = StreamConsumer(r, stream, group, name, RolloutGroup)
    held = []
    while len(held) < count:
        held += await consumer.fetch(count=count - len(held), block_ms=1_000)
    ledger = IdempotencyLedger(r, ledger_key)
    await ledger.record([rid for d in held[:record] for rid in rollout_ids(d.message)])
    print(f"READY {len(held)}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    url, stream, group, name, count, record, ledger_key = sys.argv[1:8]
    asyncio.run(main(url, stream, group, name, int(count), int(record), ledger_key))
