"""Prometheus exposition of the run status (GET /metrics).

A custom collector reads `RunState.status()` at scrape time, so the numbers
are never stale and nothing has to be pushed; each app gets its own
`CollectorRegistry` (no global registry: several runs or tests in one process
do not collide). Counters of the loop (samples generated, trained, ...) are
exported as gauges because the loop, not this process, owns them and a
restarted run may start from a checkpointed value.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.state import RunPhase, RunState, RunStatus

_PHASES: tuple[RunPhase, ...] = ("starting", "running", "stopping", "finished", "failed")

# (metric name, RunStatus attribute, help text)
_STATUS_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("aspo_policy_version", "policy_version", "Latest policy version loaded in vLLM (-1 before the first)."),
    ("aspo_trainer_step", "trainer_step", "Optimizer steps the trainer has completed."),
    ("aspo_total_steps", "total_steps", "Steps this run will train."),
    ("aspo_max_off_policy_steps", "max_off_policy_steps", "k: the largest allowed policy lag."),
    ("aspo_samples_generated", "samples_generated", "Samples generated so far."),
    ("aspo_samples_trained", "samples_trained", "Samples trained on so far."),
    ("aspo_samples_dropped_stale", "samples_dropped_stale", "Samples dropped because their lag exceeded k."),
    ("aspo_samples_filtered", "samples_filtered", "Samples in zero-variance groups, not sent to the trainer."),
    ("aspo_reward_failures", "reward_failures", "Samples whose reward could not be computed."),
    ("aspo_generation_tokens_per_second", "generation_tokens_per_s", "Generated tokens per second."),
    ("aspo_training_tokens_per_second", "training_tokens_per_s", "Trained tokens per second."),
    ("aspo_trainer_idle_fraction", "trainer_idle_fraction", "Share of wall time the trainer waited for data."),
    ("aspo_inference_idle_fraction", "inference_idle_fraction", "Share of wall time vLLM had no request."),
    ("aspo_last_weight_sync_seconds", "last_weight_sync_s", "Last weight update: total seconds."),
    ("aspo_last_weight_pause_seconds", "last_weight_pause_s", "Last weight update: seconds generation was paused."),
)

_QUEUE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("aspo_queue_rollout_stream", "rollout_stream", "RolloutGroup messages waiting for the trainer."),
    ("aspo_queue_in_flight_samples", "in_flight_samples", "Samples being generated or scored now."),
    ("aspo_queue_dead_letters", "dead_letters", "Messages moved to the dead-letter stream."),
)


class RunStatusCollector(Collector):
    """Turns one `RunStatus` snapshot into gauges, labelled with the run id."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._state.status()
        yield from _status_families(status)


def _status_families(status: RunStatus) -> Iterator[GaugeMetricFamily]:
    labels = ["run_id"]
    for name, attribute, help_text in _STATUS_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=labels)
        family.add_metric([status.run_id], float(getattr(status, attribute)))
        yield family
    for name, attribute, help_text in _QUEUE_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=labels)
        family.add_metric([status.run_id], float(getattr(status.queues, attribute)))
        yield family
    eta = GaugeMetricFamily("aspo_eta_seconds", "Estimated seconds to the end of the run (NaN when unknown).", labels=labels)
    eta.add_metric([status.run_id], float("nan") if status.eta_s is None else status.eta_s)
    yield eta
    phase = GaugeMetricFamily("aspo_run_state", "1 for the run's current phase, 0 for the others.", labels=["run_id", "state"])
    for name in _PHASES:
        phase.add_metric([status.run_id, name], 1.0 if status.state == name else 0.0)
    yield phase


def build_registry(state: RunState) -> CollectorRegistry:
    """A private registry holding only this run's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunStatusCollector(state))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of everything in `registry`."""
    return generate_latest(registry)
