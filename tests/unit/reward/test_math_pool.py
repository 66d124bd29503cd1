"""The math worker pool: hung items end at their deadline, the rest of the batch is unaffected."""

from __future__ import annotations

import asyncio

from services.reward.math_pool import MathWorkerPool

POWER_TOWER = r"\boxed{5^{5^{5^{5}}}}"
ITEMS = [("42", r"\boxed{42}"), ("3125", POWER_TOWER), ("1/2", r"\boxed{0.5}"), ("7", r"\boxed{8}")]


def _run_batch(pool: MathWorkerPool) -> list[dict]:
    async def run() -> list[dict]:
        return await asyncio.gather(*[pool.verify(g, c) for g, c in ITEMS])

    return asyncio.run(run())


def test_soft_deadline_ends_a_hung_item_and_keeps_the_worker() -> None:
    pool = MathWorkerPool(workers=2, timeout_s=1.5, memory_mb=2048, soft_fraction=0.6, pipeline_depth=2)
    pool.start()
    try:
        results = _run_batch(pool)
        assert [r["status"] for r in results] == ["ok", "timeout", "ok", "ok"]
        assert [r["correct"] for r in results] == [True, False, True, False]
        assert results[1]["elapsed_s"] < 1.5 + 5.0
        stats = pool.stats()
        assert stats["timeouts"] == 1 and stats["restarts"] == 0 and stats["busy"] == 0
    finally:
        pool.close()


def test_hard_deadline_kills_and_replaces_the_worker() -> None:
    pool = MathWorkerPool(workers=2, timeout_s=1.5, memory_mb=2048, soft_fraction=None, pipeline_depth=2)
    pool.start()
    try:
        results = _run_batch(pool)
        assert [r["status"] for r in results] == ["ok", "timeout", "ok", "ok"]
        assert "killed" in results[1]["message"]
        assert results[1]["elapsed_s"] < 1.5 + 5.0   # killed at the deadline, not left to run
        stats = pool.stats()
        assert stats["timeouts"] == 1 and stats["restarts"] == 1
        again = asyncio.run(pool.verify("2", r"\boxed{2}"))   # the replacement serves the next item
        assert again["status"] == "ok" and again["correct"]
        processes = pool.processes()
    finally:
        pool.close()
    assert len(processes) == 2 and not any(p.is_alive() for p in processes)


def test_worker_that_died_while_idle_is_replaced_before_use() -> None:
    pool = MathWorkerPool(workers=1, timeout_s=5, memory_mb=2048, soft_fraction=0.8, pipeline_depth=2)
    pool.start()
    try:
        (process,) = pool.processes()
        process.kill()
        process.join()
        result = asyncio.run(pool.verify("1", r"\boxed{1}"))
        assert result["status"] == "ok" and result["correct"]
        assert pool.stats()["restarts"] == 1
    finally:
        pool.close()


def test_items_queued_behind_a_killed_worker_are_resent_not_lost() -> None:
    pool = MathWorkerPool(workers=1, timeout_s=1.5, memory_mb=2048, soft_fraction=None, pipeline_depth=3)
    pool.start()
    try:
        items = [("3125", POWER_TOWER), ("1", r"\boxed{1}"), ("2", r"\boxed{3}"), ("4", r"\boxed{4}")]

        async def run() -> list[dict]:
            return await asyncio.gather(*[pool.verify(g, c) for g, c in items])

        results = asyncio.run(run())
        assert [r["status"] for r in results] == ["timeout", "ok", "ok", "ok"]
        assert [r["correct"] for r in results] == [False, True, False, True]
        assert pool.stats()["restarts"] == 1 and pool.stats()["items"] == 4
    finally:
        pool.close()
