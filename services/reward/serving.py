"""The reward service's logic, without HTTP: admission control, math and code verification, /run_code.

`api.py` holds one `RewardService` in app state and calls it; everything here
raises `RewardInputError` for bad input and `Overloaded` when the queue is full,
and returns results (never raises) for whatever the verified program or answer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from services.reward import code_verifier
from services.reward.errors import RewardInputError, check_size
from services.reward.math_pool import MathWorkerPool
from services.reward.math_verifier import extract_boxed, final_segment
from services.reward.metrics import RewardMetrics
from services.reward.protocol import (
    CodeVerifyRequest,
    CodeVerifyResponse,
    HealthResponse,
    MathVerifyRequest,
    MathVerifyResponse,
    RunCodeRequest,
    RunCodeResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from services.reward.run_code import build_run_request, run_code_response
from services.reward.settings import RewardSettings

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """Too many requests waiting; the client should retry after `retry_after_s`."""


class Admission:
    """At most `max_concurrency` requests at work and `max_queue` waiting; more are refused."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrency)
        self.waiting = 0
        self.inflight = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise Overloaded(f"{self.waiting} requests already waiting")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
            self._slots.release()


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<item>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


class RewardService:
    """Owns the sandbox pool, the math worker pool, admission control and metrics."""

    def __init__(self, settings: RewardSettings, sandbox_pool: Any | None = None, sandbox_settings: Any | None = None) -> None:
        self.settings = settings
        self.sandbox_settings = sandbox_settings
        self.metrics = RewardMetrics()
        self.admission = Admission(settings.max_concurrency, settings.max_queue)
        self.sandbox = sandbox_pool
        self.math = MathWorkerPool(
            settings.math_workers, settings.math_timeout_s, settings.math_memory_mb,
            settings.math_soft_deadline_fraction, settings.math_pipeline_depth,
        )
        self.started = False

    async def start(self) -> None:
        """Start the sandbox pool (unless one was given) and the math workers."""
        if self.sandbox is None:
            from sandbox.pool import SandboxPool, SandboxSettings

            sandbox_settings = self.sandbox_settings or SandboxSettings(**self.sandbox_overrides())
            self.sandbox = SandboxPool(sandbox_settings)
        await self.sandbox.start()
        await asyncio.to_thread(self.math.start)
        self.started = True

    def sandbox_overrides(self) -> dict[str, Any]:
        """The sandbox settings this service's own settings decide."""
        overrides: dict[str, Any] = {"insecure_no_sandbox": self.settings.insecure_no_sandbox}
        if self.settings.sandbox_workers is not None:
            overrides["workers"] = self.settings.sandbox_workers
        return overrides

    async def close(self) -> None:
        self.started = False
        if self.sandbox is not None:
            await self.sandbox.close()
        await asyncio.to_thread(self.math.close)

    # ------------------------------------------------------------ endpoints

    async def run_code(self, req: RunCodeRequest) -> RunCodeResponse:
        run_request = build_run_request(req, self.settings)
        async with self.admission.slot():
            result = await self.sandbox.run(run_request)
        response = run_code_response(result)
        self.metrics.items.labels("run_code", response.status.value).inc()
        if response.run_result is not None and response.run_result.status.value == "TimeLimitExceeded":
            self.metrics.timeouts.labels("run_code").inc()
        return response

    async def verify_math(self, req: MathVerifyRequest) -> MathVerifyResponse:
        async with self.admission.slot():
            return await self._verify_math(req)

    async def verify_code(self, req: CodeVerifyRequest) -> CodeVerifyResponse:
        async with self.admission.slot():
            return await self._verify_code(req)

    async def score(self, req: ScoreRequest) -> ScoreResponse:
        if len(req.items) > self.settings.max_batch_items:
            raise RewardInputError(413, "items", f"{len(req.items)} items is over the limit of {self.settings.max_batch_items}")
        async with self.admission.slot():
            results = await asyncio.gather(*[self._score_item(item) for item in req.items])
        return ScoreResponse(results=list(results))

    def health(self) -> HealthResponse:
        sandbox_report = self.sandbox.isolation_report() if self.started else {}
        sandbox_stats = self.sandbox.stats() if self.started else {}
        return HealthResponse(
            status="ok" if self.started else "starting",
            sandbox=sandbox_report, sandbox_stats=sandbox_stats, math=self.math.stats(),
            queue_depth=self.admission.waiting, inflight=self.admission.inflight,
        )

    def render_metrics(self) -> bytes:
        self.metrics.queue_depth.set(self.admission.waiting)
        self.metrics.inflight.set(self.admission.inflight)
        if self.started:
            self.metrics.set_pool("sandbox", self.sandbox.stats())
        self.metrics.set_pool("math", self.math.stats())
        return self.metrics.render()

    # ------------------------------------------------------------ work

    async def _verify_math(self, req: MathVerifyRequest) -> MathVerifyResponse:
        check_size(req.completion, self.settings.math_max_chars, "completion")
        check_size(req.ground_truth, self.settings.math_max_chars, "ground_truth")
        out = await self.math.verify(req.ground_truth, req.completion)
        extracted = out.get("extracted") or extract_boxed(final_segment(req.completion))
        self.metrics.items.labels("math", out["status"]).inc()
        if out["status"] == "timeout":
            self.metrics.timeouts.labels("math").inc()
        return MathVerifyResponse(
            correct=out["correct"], reward=1.0 if out["correct"] else 0.0, extracted=extracted,
            status=out["status"], message=out.get("message", ""), elapsed_s=out.get("elapsed_s", 0.0),
        )

    async def _verify_code(self, req: CodeVerifyRequest) -> CodeVerifyResponse:
        response = await code_verifier.verify_code(self.sandbox, req, self.settings)
        self.metrics.items.labels("code", response.status).inc()
        timeouts = sum(t.status == "timeout" for t in response.tests)
        if timeouts:
            self.metrics.timeouts.labels("code_test").inc(timeouts)
        return response

    async def _score_item(self, raw: Any) -> ScoreResult:
        """One /v1/score item; any problem with it becomes its own error result."""
        if not isinstance(raw, dict):
            return ScoreResult(status="invalid", message=f"item must be an object, got {type(raw).__name__}")
        item_id = raw.get("id")
        if not (item_id is None or isinstance(item_id, str | int)) or isinstance(item_id, bool):
            item_id, note = None, "id must be a string or an integer; "
        else:
            note = ""
        kind = raw.get("kind")
        fields = {k: v for k, v in raw.items() if k not in ("kind", "id")}
        try:
            if kind == "math":
                m = await self._verify_math(MathVerifyRequest.model_validate(fields))
                return ScoreResult(id=item_id, kind=kind, status=m.status, correct=m.correct, reward=m.reward,
                                   message=note + m.message, extracted=m.extracted, elapsed_s=m.elapsed_s)
            if kind == "code":
                c = await self._verify_code(CodeVerifyRequest.model_validate(fields))
                return ScoreResult(id=item_id, kind=kind, status=c.status, correct=c.correct, reward=c.reward,
                                   message=note + c.message, passed=c.passed, total=c.total, tests=c.tests)
            return ScoreResult(id=item_id, status="invalid", message=note + f"kind must be 'math' or 'code', got {kind!r}")
        except ValidationError as err:
            return ScoreResult(id=item_id, kind=kind, status="invalid", message=note + _validation_message(err))
        except RewardInputError as err:
            return ScoreResult(id=item_id, kind=kind, status="invalid", message=note + str(err))
