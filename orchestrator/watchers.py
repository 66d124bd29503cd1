"""The loop's background tasks: policy versions, trainer metrics, evaluation, status.

- `watch_policy`: each `PolicyVersion` the trainer announces is loaded into
  vLLM (pause with requests kept, reload in place, resume; latest wins when
  several arrive during one update); the loaded version opens admission.
- `watch_metrics`: the trainer's `MetricEvent`s become the dashboard's step
  series (loss metrics, IS-ratio stats, grad norm, lag histogram) and move the
  trainer-step counters; crossing an evaluation step starts an evaluation.
- `evaluate`: avg@k and pass@k on the held-out split at the loaded version.
- `report_status`: once a second, throughput, idle fractions, queue depths, ETA.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.state import StepRecord
from services.bus.channels import metrics_reader, policy_reader
from services.bus.messages import MetricEvent, PolicyVersion

if TYPE_CHECKING:
    from orchestrator.loop import Orchestrator

log = logging.getLogger(__name__)
LAG_PREFIX = "lag_hist_"
TRAINER_BUSY_KEYS = ("time_forward_backward_s", "time_optimizer_s", "time_recompute_s", "time_publish_s", "time_checkpoint_s")
TRAINER_ALIASES = {
    "tokens_per_s": "training_tokens_per_s",
    "policy_lag_mean": "lag_mean",
    "policy_lag_max": "lag_max",
}


async def load_version(orch: "Orchestrator", msg: PolicyVersion) -> None:
    if not orch.settings.sync_weights:
        orch.policy_version = msg.version
        return
    result = await asyncio.wait_for(
        orch.updater.update_weights(msg.version, msg.path), orch.settings.weight_sync_timeout_s
    )
    if result.ok and result.served_version is not None:
        orch.policy_version = result.served_version
        orch.state.update_status(
            policy_version=orch.policy_version, last_weight_sync_s=result.total_s,
            last_weight_pause_s=result.max_paused_s,
        )
        log.info("vLLM now serves v%d (%.2f s, paused %.2f s)", msg.version, result.total_s, result.max_paused_s)
    else:
        log.error("weight update to v%d failed: %s", msg.version, result.error)
        orch.state.update_status(message=f"weight update to v{msg.version} failed: {result.error}"[:300])


async def watch_policy(orch: "Orchestrator") -> None:
    reader = policy_reader(orch.redis, orch.bus)
    await reader.start()
    newest = await reader.latest()
    while not orch.stopping.is_set():
        if newest is not None and newest.version > orch.policy_version:
            try:
                await load_version(orch, newest)
            except Exception as err:  # deliberately tolerated: retried with the next announcement or in 5 s
                log.exception("weight update failed: %s", err)
                await asyncio.sleep(5.0)
            await orch.notify()
        got = await reader.read(count=100, block_ms=1000)
        if got:
            candidate = max((m for _, m in got), key=lambda m: m.version)
            if newest is None or candidate.version > newest.version:
                newest = candidate


def ingest_trainer_event(orch: "Orchestrator", ev: MetricEvent) -> None:
    values = {k: v for k, v in ev.values.items() if not k.startswith(LAG_PREFIX)}
    hist = {int(k[len(LAG_PREFIX):]): int(v) for k, v in ev.values.items() if k.startswith(LAG_PREFIX)}
    for theirs, ours in TRAINER_ALIASES.items():   # the dashboard's names for the trainer's
        if theirs in values and ours not in values:
            values[ours] = values[theirs]
    orch.state.record_step(StepRecord(step=ev.step, time=ev.time, values=values, lag_histogram=hist),
                           replace_histogram=True)
    orch.trainer_step = max(orch.trainer_step, ev.step)
    st = orch.state.status()
    previous = orch.trainer_events.get(ev.step)   # the same step again: re-run after a trainer resume
    orch.trainer_events[ev.step] = values
    if previous is not None:
        values = {k: v - previous.get(k, 0.0) if k in ("num_samples", "dropped_stale") else v for k, v in values.items()}
    busy = sum(values.get(k, 0.0) for k in TRAINER_BUSY_KEYS)
    orch.trainer_busy_s += busy
    orch.trainer_wait_s += values.get("time_wait_s", 0.0)
    total = orch.trainer_busy_s + orch.trainer_wait_s
    orch.state.update_status(
        trainer_step=orch.trainer_step,
        samples_trained=st.samples_trained + int(values.get("num_samples", 0)),
        samples_dropped_stale=st.samples_dropped_stale + int(values.get("dropped_stale", 0)),
        training_tokens_per_s=values.get("tokens_per_s", st.training_tokens_per_s),
        trainer_idle_fraction=orch.trainer_wait_s / total if total > 0 else 0.0,
    )


async def watch_metrics(orch: "Orchestrator") -> None:
    reader = metrics_reader(orch.redis, orch.bus, start="0")
    while not orch.stopping.is_set():
        for _, ev in await reader.read(count=100, block_ms=1000):
            if ev.source != "trainer":
                continue
            ingest_trainer_event(orch, ev)
            every = orch.settings.evaluation.every_steps
            if every and ev.step % every == 0 and ev.step not in orch.book.evaluated_steps:
                orch.book.evaluated_steps.append(ev.step)
                orch.spawn(evaluate(orch, ev.step))
        if orch.trainer_step >= orch.settings.total_steps:
            await orch.finish()
            return


async def evaluate(orch: "Orchestrator", step: int) -> dict[str, float]:
    """avg@k (mean correctness) and pass@k (share of prompts with a correct sample)."""
    cfg = orch.settings.evaluation
    sem = asyncio.Semaphore(orch.settings.max_concurrent_groups)

    async def one(i: int) -> list[float]:
        task = orch.eval_tasks.get(i)
        async with sem:
            comps = await orch.client.generate(
                orch.prompt_ids(task), n=cfg.k, max_tokens=orch.settings.sampling.max_tokens,
                temperature=cfg.temperature, seed=10_000_000 + i * cfg.k,
            )
            rewards = await orch.rewards.score(task, [orch.decode(c.completion_ids) for c in comps])
        return [float(r or 0.0) >= 1.0 - 1e-9 for r in rewards]

    n = min(cfg.num_prompts, len(orch.eval_tasks))
    results = np.asarray(await asyncio.gather(*(one(i) for i in range(n))), dtype=float)
    scores = {f"avg@{cfg.k}": float(results.mean()), f"pass@{cfg.k}": float(results.max(axis=1).mean())}
    orch.state.record_step(StepRecord(step=step, eval=scores))
    log.info("eval at step %d (v%d): %s", step, orch.policy_version, scores)
    orch.save()
    return scores


async def report_status(orch: "Orchestrator") -> None:
    start = last = last_saved = time.monotonic()
    idle = 0.0
    while not orch.stopping.is_set():
        await asyncio.sleep(1.0)
        now = time.monotonic()
        if orch.gen_in_flight == 0:
            idle += now - last
        last = now
        cutoff = time.time() - 30.0
        orch.gen_tokens = [(t, n) for t, n in orch.gen_tokens if t >= cutoff]
        span = min(30.0, now - start)
        depth = int(await orch.redis.xlen(orch.bus.rollout_stream))
        dead = int(await orch.redis.xlen(f"{orch.bus.rollout_stream}:dead"))
        steps_left = orch.settings.total_steps - orch.trainer_step
        rate = orch.trainer_step / (now - start) if orch.trainer_step else 0.0
        if now - last_saved >= 10.0:
            orch.save_results()
            last_saved = now
        orch.state.update_status(
            policy_version=orch.policy_version,
            samples_generated=orch.book.samples_generated,
            samples_filtered=orch.book.samples_filtered,
            reward_failures=orch.book.reward_failures,
            generation_tokens_per_s=sum(n for _, n in orch.gen_tokens) / max(span, 1e-9),
            inference_idle_fraction=min(1.0, idle / max(now - start, 1e-9)),
            queues={"rollout_stream": depth, "in_flight_samples": orch.admission.running, "dead_letters": dead},
            eta_s=steps_left / rate if rate > 0 else None,
        )
