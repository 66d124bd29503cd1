"""Scoring rollouts through the reward service's `/v1/score` (HTTP).

A reward failure never loses a rollout silently: each call has a deadline and
is retried with backoff; items the service cannot score come back as
`None` and are counted by the caller (the whole group is then skipped, since
group advantages need every reward).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

from orchestrator.settings import RewardClientSettings
from orchestrator.tasks.base import Task

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# statuses meaning "the answer was judged" (a wrong or missing answer is reward 0, not a failure)
_JUDGED = {"ok", "no_answer", "timeout", "compile_error", "no_code"}


def final_number_answer(completion: str) -> str:
    """The answer as `Task.answer = "final_number"` takes it: the completion itself
    when it has a \\boxed{} (the service reads the last one), else the last number
    in the text, boxed; "" when there is none (no answer: reward 0)."""
    if "\\boxed" in completion or "\\fbox" in completion:
        return completion
    numbers = _NUMBER.findall(completion.replace(",", ""))
    return f"\\boxed{{{numbers[-1]}}}" if numbers else ""


def score_item(task: Task, completion: str, item_id: str, timeout_per_test_s: float) -> dict[str, Any]:
    """The /v1/score item for one completion of ``task``."""
    if task.kind == "math":
        text = final_number_answer(completion) if task.answer == "final_number" else completion
        return {"id": item_id, "kind": "math", "completion": text, "ground_truth": task.ground_truth}
    # HumanEval-style tasks carry `append_code` (the problem's own check()); the
    # service runs it after the program under its nonce guard, so an early exit fails
    return {"id": item_id, "kind": "code", "completion": completion, "tests": dict(task.tests or {}),
            "timeout_per_test": timeout_per_test_s}


class RewardClient:
    def __init__(self, settings: RewardClientSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.http = httpx.AsyncClient(base_url=settings.url, headers=headers, timeout=settings.timeout_s)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def score(self, task: Task, completions: list[str]) -> list[float | None]:
        """Rewards in order; None for an item the service could not judge after retries."""
        items = [
            score_item(task, c, f"{task.task_id}#{i}", self.settings.code_timeout_per_test_s)
            for i, c in enumerate(completions)
        ]
        results = await self._post_with_retries(items)
        if results is None:
            return [None] * len(completions)
        rewards: list[float | None] = []
        for r in results:
            if r.get("status") in _JUDGED:
                rewards.append(float(r.get("reward", 0.0)))
            else:
                log.warning("reward item %s not judged: %s %s", r.get("id"), r.get("status"), r.get("message", "")[:200])
                rewards.append(None)
        return rewards

    async def _post_with_retries(self, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        delay = 0.5
        for attempt in range(self.settings.retries + 1):
            try:
                resp = await self.http.post("/v1/score", json={"items": items})
                if resp.status_code == 200:
                    results = resp.json()["results"]
                    if len(results) == len(items):
                        return results
                    log.error("reward service answered %d results for %d items", len(results), len(items))
                elif resp.status_code < 500 and resp.status_code not in (408, 429):
                    log.error("reward service refused the batch (%d): %s", resp.status_code, resp.text[:300])
                    return None
            except (httpx.HTTPError, ValueError, KeyError) as err:  # retried: the service may be restarting
                log.warning("reward call failed (attempt %d): %s", attempt + 1, err)
            await asyncio.sleep(delay)
            delay *= 2
        return None
