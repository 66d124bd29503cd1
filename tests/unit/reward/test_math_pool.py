"""The math worker pool: hung items are killed at the deadline, the rest of the batch is unaffected."""

from __future__ import annotations

import asyncio

from services.reward.math_pool import MathWorkerPool

POWER_TOWER = r"\boxed{5^{5^{5^{5}}}}"


def test_hanging_item_times_out_and_others_still_succeed() -> None:
    pool = MathWorkerPool(workers=2, timeout_s=1.5, memory_mb=2048)
    pool.start()
    try:
        items = [("42", r"\boxed{42}"), ("3125", POWER_TOWER), ("1/2", r"\boxed{0.5}"), ("7", r"\boxed{8}")]

        async def run() -> list[dict]:
            return await asyncio.gather(*[pool.verify(g, c) for g, c in items])

        results = asyncio.run(run())
        assert [r["status"] for r in results] == ["ok", "timeout", "ok", "ok"]
        assert [r["correct"] for r in results] == [True, False, True, False]
        assert results[1]["elapsed_s"] < 1.5 + 5.0   # killed at the deadline, not left to run
        stats = pool.stats()
        assert stats["timeouts"] == 1 and stats["restarts"] == 1 and stats["busy"] == 0
        # the replacement worker serves the next item
        again = asyncio.run(pool.verify("2", r"\boxed{2}"))
        assert again["status"] == "ok" and again["correct"]
    finally:
        pool.close()
    assert all(not w.process.is_alive() for w in pool._all)


def test_worker_that_dies_gives_an_error_and_is_replaced() -> None:
    pool = MathWorkerPool(workers=1, timeout_s=5, memory_mb=2048)
    pool.start()
    try:
        worker = pool._idle.get()
        worker.process.kill()
        worker.process.join()
        pool._idle.put(worker)
        result = asyncio.run(pool.verify("1", r"\boxed{1}"))
        assert result["status"] == "ok" and result["correct"]   # a dead idle worker is replaced first
        assert pool.stats()["restarts"] == 1
    finally:
        pool.close()
