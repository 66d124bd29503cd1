"""Admission control: at most max_concurrency at work, max_queue waiting, the rest refused."""

from __future__ import annotations

import asyncio

import pytest

from services.reward.serving import Admission, Overloaded


def test_excess_requests_queue_then_are_refused() -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        admission = Admission(max_concurrency=2, max_queue=1)
        release = asyncio.Event()
        order: list[str] = []

        async def work(name: str) -> None:
            async with admission.slot():
                order.append(name)
                await release.wait()

        running = [asyncio.create_task(work(n)) for n in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        inflight, waiting = admission.inflight, admission.waiting
        with pytest.raises(Overloaded):
            async with admission.slot():
                pass
        release.set()
        await asyncio.gather(*running)
        assert (admission.inflight, admission.waiting) == (0, 0)
        async with admission.slot():   # capacity is back
            order.append("d")
        return inflight, waiting, order

    inflight, waiting, order = asyncio.run(scenario())
    assert (inflight, waiting) == (2, 1)
    assert order == ["a", "b", "c", "d"]
