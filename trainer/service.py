"""The trainer as a long-running service: fetch, train, publish, checkpoint, ack.

Loop per trainer step: wait for up to ``groups_per_step`` RolloutGroups from
the ``RolloutSource``; validate them (a malformed group is rejected, not
trained and not lost); ``PolicyTrainer.train_step``; every k steps publish
``<run>/policy/v<step>`` and announce it; every k steps checkpoint and only
then ``ack`` the groups trained since the previous checkpoint, so a crash
redelivers them and the restored consumed-id set decides what is retrained.

At start the trainer resumes from the newest checkpoint (if any) and makes
sure the version it is at is published: v0, the initial weights, on a fresh
run, so inference and trainer agree on what version 0 is. It knows nothing
about HTTP; ``trainer.api`` exposes its state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.bus.messages import PolicyVersion, RolloutGroup, RolloutSample
from trainer.batching import to_sequence
from trainer.settings import TrainerSettings
from trainer.sources import PolicyAnnouncer, RolloutSource

log = logging.getLogger(__name__)

_TIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class TrainerMetrics:
    """Prometheus series of one service instance (own registry: several can coexist in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.phase_seconds = Histogram(
            "aspo_trainer_phase_seconds", "Time per trainer step phase.", ["phase"], registry=r, buckets=_TIME_BUCKETS
        )
        self.samples = Counter("aspo_trainer_samples_trained", "Rollout samples trained.", registry=r)
        self.tokens = Counter("aspo_trainer_tokens_trained", "Completion tokens trained.", registry=r)
        self.dropped_stale = Counter(
            "aspo_trainer_samples_dropped_stale", "Samples dropped by max_off_policy_steps.", registry=r
        )
        self.dropped_duplicate = Counter(
            "aspo_trainer_samples_dropped_duplicate", "Samples already trained (redelivered).", registry=r
        )
        self.rejected_groups = Counter("aspo_trainer_groups_rejected", "Malformed groups rejected.", registry=r)
        self.step = Gauge("aspo_trainer_step", "Trainer steps done (== policy version).", registry=r)
        self.published_version = Gauge("aspo_trainer_published_version", "Last published version.", registry=r)
        self.loss = Gauge("aspo_trainer_loss", "Loss of the last step.", registry=r)
        self.grad_norm = Gauge("aspo_trainer_grad_norm", "Pre-clip grad norm of the last step.", registry=r)
        self.tokens_per_s = Gauge("aspo_trainer_tokens_per_second", "Training throughput of the last step.", registry=r)

    def record_step(self, m: dict[str, float]) -> None:
        self.phase_seconds.labels("forward_backward").observe(m.get("time_forward_backward_s", 0.0))
        self.phase_seconds.labels("optimizer").observe(m.get("time_optimizer_s", 0.0))
        self.samples.inc(m["num_samples"])
        self.tokens.inc(m["num_tokens"])
        self.dropped_stale.inc(m["dropped_stale"])
        self.dropped_duplicate.inc(m["dropped_duplicate"])
        for gauge, key in ((self.loss, "loss"), (self.grad_norm, "grad_norm"), (self.tokens_per_s, "tokens_per_s")):
            if key in m:
                gauge.set(m[key])


class TrainerService:
    """Owns a PolicyTrainer and drives it from a source to an announcer."""

    def __init__(self, settings: TrainerSettings, source: RolloutSource, announcer: PolicyAnnouncer) -> None:
        self.settings = settings
        self.source = source
        self.announcer = announcer
        self.metrics = TrainerMetrics()
        self.state = "starting"
        self.error: str | None = None
        self.last_metrics: dict[str, float] = {}
        self.trainer: Any = None  # PolicyTrainer once start() ran (torch imported lazily)
        self._unacked: list[str] = []
        self._carried_drops: dict[str, float] = {}
        self._last_checkpoint_step = -1
        self._stop = threading.Event()

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Build the model, resume, publish the current version if missing."""
        from trainer.checkpoint import resume_latest
        from trainer.engine import PolicyTrainer
        from trainer.publish import list_versions

        self.trainer = PolicyTrainer(self.settings)
        if self.settings.checkpointing.resume:
            resume_latest(self.trainer, self.checkpoint_root)
        self._last_checkpoint_step = self.trainer.step
        self.metrics.step.set(self.trainer.step)
        if self.trainer.version not in {v for v, _ in list_versions(self.policy_root)}:
            self.publish()
        else:
            self._announce(self.trainer.version, self.policy_root / f"v{self.trainer.version}")

    @property
    def policy_root(self):  # -> Path
        return self.settings.run_dir / "policy"

    @property
    def checkpoint_root(self):  # -> Path
        return self.settings.run_dir / "checkpoints"

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Train until ``max_steps`` or ``stop()``; then checkpoint and ack."""
        try:
            if self.trainer is None:
                self.start()
            max_steps = self.settings.max_steps
            while not self._stop.is_set() and (max_steps is None or self.trainer.step < max_steps):
                self.run_one_step()
            self.state = "checkpointing"
            self.checkpoint()
            self.state = "stopped"
        except Exception as err:  # the loop's owner reports it through /health, then re-raises
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
            log.exception("trainer service failed")
            raise

    # ---------------------------------------------------------------- step
    def run_one_step(self) -> dict[str, float] | None:
        self.state = "waiting"
        t0 = time.perf_counter()
        groups = self._collect_groups()
        wait_s = time.perf_counter() - t0
        self.metrics.phase_seconds.labels("wait").observe(wait_s)
        if not groups:
            return None
        self.state = "training"
        samples: list[RolloutSample] = [s for g in groups for s in g.samples]
        lag_hist, trained_ids = self._lag_histogram(samples)
        m = self.trainer.train_step(samples)
        m["time_wait_s"] = wait_s
        self.last_metrics = m  # /health shows the step as soon as it is trained
        self._unacked.extend(g.group_id for g in groups)
        self.metrics.record_step(m)
        self.metrics.step.set(self.trainer.step)
        step = self.trainer.step
        if m.get("num_samples", 0) > 0 and step % self.settings.publishing.every_steps == 0:
            self.state = "publishing"
            m["time_publish_s"] = self.publish()
        if step % self.settings.checkpointing.every_steps == 0:
            self.state = "checkpointing"
            t_ckpt = time.perf_counter()
            self.checkpoint()
            m["time_checkpoint_s"] = time.perf_counter() - t_ckpt
        self.last_metrics = m
        if m["num_samples"] == 0:  # nothing trained, no new step: report the drops with the next one
            for key in ("dropped_stale", "dropped_duplicate"):
                self._carried_drops[key] = self._carried_drops.get(key, 0.0) + m[key]
            return m
        for key, value in self._carried_drops.items():
            m[key] += value
        self._carried_drops = {}
        self._log_step(step, m, lag_hist, trained_ids)
        publish_metrics = getattr(self.announcer, "publish_metrics", None)
        if publish_metrics is not None:  # the bus announcer also feeds the dashboard
            publish_metrics(step, {**m, **{f"lag_hist_{lag}": float(n) for lag, n in lag_hist.items()}})
        log.info("step %d: %s", step, {k: round(v, 4) for k, v in m.items()})
        return m

    def _lag_histogram(self, samples: list[RolloutSample]) -> tuple[dict[int, int], list[str]]:
        """Lag (current version - oldest token version) of each sample this step will
        train, and their rollout ids (the same filters as ``train_step``)."""
        t, k = self.trainer, self.settings.batching.max_off_policy_steps
        hist: dict[int, int] = {}
        ids: dict[str, None] = {}   # ordered set
        for s in samples:
            lag = t.version - s.min_version
            if s.rollout_id not in t.consumed_ids and s.rollout_id not in ids and (k is None or lag <= k):
                hist[lag] = hist.get(lag, 0) + 1
                ids[s.rollout_id] = None
        return hist, list(ids)

    def _log_step(self, step: int, metrics: dict[str, float], lag_hist: dict[int, int], ids: list[str]) -> None:
        """Append the step to ``<run>/trainer/steps.jsonl``: the trainer's own record
        (metrics, lag histogram, trained rollout ids) to check the dashboard against."""
        path = self.settings.run_dir / "trainer" / "steps.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"step": step, "time": time.time(), "metrics": metrics, "lag_histogram": lag_hist, "rollout_ids": ids}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _collect_groups(self) -> list[RolloutGroup]:
        cfg = self.settings.batching
        groups: list[RolloutGroup] = []
        while len(groups) < cfg.groups_per_step and not self._stop.is_set():
            got = self.source.fetch(cfg.groups_per_step - len(groups), cfg.fetch_timeout_s)
            groups.extend(g for g in got if self._valid(g))
            if not got and len(groups) >= cfg.min_groups_per_step:
                break
        return groups

    def _valid(self, group: RolloutGroup) -> bool:
        try:
            for s in group.samples:
                to_sequence(s)
        except ValueError as err:
            self.metrics.rejected_groups.inc()
            reject = getattr(self.source, "reject_group", None)
            if reject is not None:
                reject(group.group_id, str(err))
            else:  # the source cannot set it aside: log it whole so nothing is lost
                log.error("rejected group %s: %s; content: %r", group.group_id, err, group)
                self.source.ack([group.group_id])
            return False
        return True

    # ------------------------------------------------------ publish / ckpt
    def publish(self) -> float:
        from trainer.publish import publish_policy

        t0 = time.perf_counter()
        path = publish_policy(
            self.trainer.model,
            self.policy_root,
            self.trainer.version,
            self.settings.publishing.keep_last,
            tokenizer_dir=self.settings.model.path,
        )
        elapsed = time.perf_counter() - t0
        self.metrics.phase_seconds.labels("publish").observe(elapsed)
        self._announce(self.trainer.version, path)
        return elapsed

    def _announce(self, version: int, path: Any) -> None:
        self.announcer.announce(PolicyVersion(version=version, path=str(path), trainer_step=self.trainer.step))
        self.metrics.published_version.set(version)

    def checkpoint(self) -> None:
        """Checkpoint (if the step moved) and ack everything it now records."""
        from trainer.checkpoint import save_checkpoint

        if self.trainer.step != self._last_checkpoint_step:
            t0 = time.perf_counter()
            save_checkpoint(self.trainer, self.checkpoint_root, self.settings.checkpointing.keep_last)
            self.metrics.phase_seconds.labels("checkpoint").observe(time.perf_counter() - t0)
            self._last_checkpoint_step = self.trainer.step
        if self._unacked:
            self.source.ack(self._unacked)
            self._unacked = []

    def health(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "state": self.state,
            "step": t.step if t else None,
            "version": t.version if t else None,
            "optimizer_steps": t.optimizer_steps if t else None,
            "error": self.error,
            "last_metrics": self.last_metrics,
        }
