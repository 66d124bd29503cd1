"""Client routing against an in-process fake: least in-flight, fail-over, retries, 4xx not retried."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from fake_vllm import FakeVLLM

from services.inference.client import InferenceClient, InferenceRequestError
from services.inference.settings import InferenceClientSettings

URLS = ["http://r0:8000", "http://r1:8001"]


def make_client(fake: FakeVLLM, **overrides: object) -> InferenceClient:
    settings = InferenceClientSettings(base_urls=URLS, retry_backoff_s=0.0, **overrides)
    return InferenceClient(settings, transport=fake.transport())


def test_concurrent_requests_spread_by_least_in_flight() -> None:
    fake = FakeVLLM(URLS)

    async def main() -> tuple[Counter, list[int]]:
        fake.release = asyncio.Event()
        async with make_client(fake) as client:
            tasks = [
                asyncio.create_task(client.generate([1, 2], n=2, max_tokens=3)) for _ in range(6)
            ]
            while sum(r.in_flight for r in client.pool.replicas) < 6:
                await asyncio.sleep(0)
            held = [r.in_flight for r in client.pool.replicas]
            fake.release.set()
            results = await asyncio.gather(*tasks)
            after = [r.in_flight for r in client.pool.replicas]
        assert after == [0, 0]
        return Counter(c[0].replica for c in results), held

    per_replica, held = asyncio.run(main())
    assert held == [3, 3]
    assert per_replica == {URLS[0]: 3, URLS[1]: 3}


def test_connection_error_fails_over_and_marks_replica_down() -> None:
    fake = FakeVLLM(URLS)
    fake.replica(URLS[0]).down = True

    async def main() -> tuple[list, bool]:
        async with make_client(fake, health_recheck_s=3600) as client:
            out = [await client.generate([1], n=1, max_tokens=2) for _ in range(3)]
            return out, client.pool.get(URLS[0]).healthy

    out, healthy0 = asyncio.run(main())
    assert all(c[0].replica == URLS[1] for c in out)
    assert not healthy0
    assert fake.replica(URLS[0]).calls == []  # never answered, never retried once marked down


def test_down_replica_comes_back_after_a_health_probe() -> None:
    fake = FakeVLLM(URLS)
    fake.replica(URLS[0]).down = True

    async def main() -> str:
        async with make_client(fake, health_recheck_s=0.01) as client:
            await client.generate([1], max_tokens=1)
            fake.replica(URLS[0]).down = False
            await asyncio.sleep(0.02)
            client.pool.get(URLS[1]).in_flight = 5  # make r0 the least loaded once it is back
            return (await client.generate([1], max_tokens=1))[0].replica

    assert asyncio.run(main()) == URLS[0]
    assert "/health" in fake.replica(URLS[0]).calls


def test_all_replicas_down_raises_after_retries_naming_the_cause() -> None:
    fake = FakeVLLM(URLS)
    for r in fake.replicas.values():
        r.down = True

    async def main() -> None:
        async with make_client(fake, max_retries=2) as client:
            await client.generate([1], max_tokens=1)

    with pytest.raises(
        InferenceRequestError, match="after 3 attempts.*(ConnectError|no inference replica)"
    ):
        asyncio.run(main())


def test_client_errors_are_not_retried() -> None:
    fake = FakeVLLM(URLS)
    fake.generate_status = 400

    async def main() -> None:
        async with make_client(fake, max_retries=3) as client:
            await client.generate([1], max_tokens=1)

    with pytest.raises(InferenceRequestError, match="refused the request \\(400\\)"):
        asyncio.run(main())
    calls = sum(r.calls.count("/inference/v1/generate") for r in fake.replicas.values())
    assert calls == 1


def test_served_versions_reports_unreachable_replicas_as_none() -> None:
    fake = FakeVLLM(URLS)
    fake.replica(URLS[1]).down = True
    fake.replica(URLS[0]).version = "7"

    async def main() -> dict:
        async with make_client(fake, max_retries=0) as client:
            return await client.served_versions()

    assert asyncio.run(main()) == {URLS[0]: 7, URLS[1]: None}


def test_a_restarted_single_replica_is_used_again_without_waiting() -> None:
    fake = FakeVLLM(URLS[:1])
    fake.replica(URLS[0]).down = True

    async def main() -> str:
        settings = InferenceClientSettings(
            base_urls=URLS[:1], retry_backoff_s=0.0, max_retries=0, health_recheck_s=3600
        )
        async with InferenceClient(settings, transport=fake.transport()) as client:
            with pytest.raises(InferenceRequestError):
                await client.generate([1], max_tokens=1)
            fake.replica(URLS[0]).down = False  # the server came back
            return (await client.generate([1], max_tokens=1))[0].replica

    assert asyncio.run(main()) == URLS[0]
