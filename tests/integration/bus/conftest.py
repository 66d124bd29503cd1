"""A real private redis-server for the bus tests (started with ensure_redis)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from services.bus.messages import RolloutGroup, RolloutSample
from services.bus.redis_server import ensure_redis
from services.bus.settings import BusSettings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # url=None: the tests start their own server even where REDIS_URL is set.
    handle = ensure_redis(tmp_path_factory.mktemp("bus-redis"), BusSettings(url=None))
    yield handle.url
    handle.close()


@pytest.fixture
def stream_name() -> str:
    """A fresh stream per test so tests sharing the server never see each other."""
    return f"test:{uuid.uuid4().hex[:12]}"


def build_group(group_id: str, n_samples: int = 2, prompt_len: int = 8, completion_len: int = 16,
                seed: int = 0) -> RolloutGroup:
    rng = np.random.default_rng(seed)
    samples = [
        RolloutSample.build(
            rollout_id=f"{group_id}/{i}",
            prompt_ids=rng.integers(0, 50_000, prompt_len),
            completion_ids=rng.integers(0, 50_000, completion_len),
            behaviour_logprobs=-rng.random(completion_len).astype(np.float32) * 5,
            token_versions=np.full(completion_len, 3),
            reward=float(i % 2),
            advantage=float(i) - 0.5,
        )
        for i in range(n_samples)
    ]
    return RolloutGroup(group_id=group_id, task_id=f"task-{group_id}", samples=samples)


@pytest.fixture
def make_group() -> Callable[..., RolloutGroup]:
    return build_group
