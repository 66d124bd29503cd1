"""The run's observable state: what the dashboard serves and `aspo run` shows.

The orchestrator loop is the only writer (`RunState.update_status`,
`record_step`, `record_samples`); the dashboard API and the live progress
display only read. Everything here is plain data, safe to serialise as JSON.
Series are bounded (old points are kept at lower resolution by the writer's
choice of what to record; the store itself keeps the last `max_steps`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

RunPhase = Literal["starting", "running", "stopping", "finished", "failed"]


class QueueDepths(BaseModel):
    rollout_stream: int = Field(0, description="RolloutGroup messages waiting for the trainer (un-acked entries).")
    in_flight_samples: int = Field(0, description="Samples being generated or scored now.")
    dead_letters: int = Field(0, description="Messages moved to the dead-letter stream.")


class RunStatus(BaseModel):
    """GET /api/status."""

    run_id: str
    state: RunPhase = "starting"
    loss: str = Field("aspo", description="Policy loss the trainer uses.")
    policy_version: int = Field(-1, description="Latest policy version loaded in vLLM (-1 before the first).")
    trainer_step: int = Field(0, description="Optimizer steps the trainer has completed.")
    total_steps: int = Field(0, description="Steps this run will train.")
    max_off_policy_steps: int = Field(0, description="k: a sample of version v is trained at step s only if s - v <= k.")
    samples_generated: int = 0
    samples_trained: int = 0
    samples_dropped_stale: int = Field(0, description="Too stale when they reached training: dropped, never trained.")
    samples_filtered: int = Field(0, description="In zero-variance groups (no learning signal), not sent to the trainer.")
    reward_failures: int = Field(0, description="Samples whose reward could not be computed after retries (skipped, counted).")
    queues: QueueDepths = Field(default_factory=QueueDepths)
    generation_tokens_per_s: float = 0.0
    training_tokens_per_s: float = 0.0
    trainer_idle_fraction: float = Field(0.0, ge=0, le=1, description="Share of wall time the trainer waited for data.")
    inference_idle_fraction: float = Field(0.0, ge=0, le=1, description="Share of wall time vLLM had no request (blocked by the lag bound or updates).")
    last_weight_sync_s: float = Field(0.0, description="Last weight update: total seconds.")
    last_weight_pause_s: float = Field(0.0, description="Last weight update: seconds generation was paused.")
    eta_s: float | None = None
    started_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    message: str = ""


class StepRecord(BaseModel):
    """One trainer step's numbers, merged from the trainer and the orchestrator."""

    step: int
    time: float = Field(default_factory=time.time)
    values: dict[str, float] = Field(default_factory=dict, description="reward_mean, accuracy, response_length, entropy, repetition, kl, clip fractions, IS-ratio stats, grad_norm, ...")
    lag_histogram: dict[int, int] = Field(default_factory=dict, description="lag -> number of samples trained at this step with that lag.")
    eval: dict[str, float] | None = Field(None, description="Held-out evaluation at this step (avg@k, pass@k), when it ran.")


class SampleRecord(BaseModel):
    """GET /api/samples: one recent rollout."""

    rollout_id: str
    task_id: str
    prompt: str
    completion: str
    reward: float
    advantage: float
    policy_version: int = Field(description="Oldest policy version among the sample's tokens.")
    lag: int | None = Field(None, description="Trainer step minus policy_version when trained; None until trained.")
    time: float = Field(default_factory=time.time)


_STEP_LIST = TypeAdapter(list[StepRecord])


class RunState:
    """Thread-safe store of status, per-step series and recent samples."""

    def __init__(self, run_id: str, max_steps: int = 100_000, max_samples: int = 500) -> None:
        self._lock = threading.Lock()
        self._status = RunStatus(run_id=run_id)
        self._steps: dict[int, StepRecord] = {}   # step -> record; read in step order
        self._max_steps = max_steps
        self._samples: deque[SampleRecord] = deque(maxlen=max_samples)

    def status(self) -> RunStatus:
        with self._lock:
            return self._status.model_copy(deep=True)

    def update_status(self, **fields: object) -> None:
        with self._lock:
            data = self._status.model_dump()
            data.update(fields, updated_at=time.time())
            self._status = RunStatus.model_validate(data)

    def record_step(self, record: StepRecord, replace_histogram: bool = False) -> None:
        """Add, or merge into the record of the same step (values updated, eval kept).

        Records of one step come from several writers and in any order (the
        orchestrator's rollout stats, the trainer's event, an evaluation). The
        histogram is added to, or replaced when the writer re-sends a whole
        step (a trainer step re-run after a resume replaces the first run's).
        """
        with self._lock:
            current = self._steps.get(record.step)
            if current is None:
                self._steps[record.step] = record.model_copy(deep=True)
                if len(self._steps) > self._max_steps:
                    del self._steps[min(self._steps)]
                return
            current.values.update(record.values)
            if replace_histogram:
                current.lag_histogram = dict(record.lag_histogram)
            else:
                for lag, n in record.lag_histogram.items():
                    current.lag_histogram[lag] = current.lag_histogram.get(lag, 0) + n
            current.eval = record.eval or current.eval

    def _ordered(self, since: int) -> list[StepRecord]:
        return [self._steps[k] for k in sorted(self._steps) if k >= since]

    def steps(self, since: int = 0) -> list[StepRecord]:
        with self._lock:
            return [s.model_copy(deep=True) for s in self._ordered(since)]

    def steps_json(self, since: int = 0) -> bytes:
        """`steps(since)` as a JSON array, serialised under the lock without deep copies.

        For the dashboard: a first page load of a long run (10k steps) held the
        lock ~1 s with `steps()`'s deep copies, stalling the loop's writes; this
        holds it ~0.1 s.
        """
        with self._lock:
            return _STEP_LIST.dump_json(self._ordered(since))

    def lag_histogram_total(self) -> dict[int, int]:
        """lag -> samples trained with that lag, summed over the kept steps (read helper, no copies)."""
        total: dict[int, int] = {}
        with self._lock:
            for record in self._steps.values():
                for lag, n in record.lag_histogram.items():
                    total[lag] = total.get(lag, 0) + n
        return dict(sorted(total.items()))

    def record_samples(self, samples: list[SampleRecord]) -> None:
        with self._lock:
            self._samples.extend(samples)

    def samples(self, limit: int = 50) -> list[SampleRecord]:
        with self._lock:
            return [s.model_copy() for s in list(self._samples)[-limit:]][::-1]
