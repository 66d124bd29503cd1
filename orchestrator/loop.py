"""The asynchronous generation loop: admit, generate, score, publish.

`Orchestrator.run()` owns one asyncio loop with these tasks:
- `max_concurrent_groups` generation workers: each waits for admission
  (bounded lag, `orchestrator.staleness`), claims the next task index, asks
  vLLM for n samples, scores them over HTTP, computes group advantages and
  publishes a `RolloutGroup` (the producer waits when the stream is full);
- the watchers of `orchestrator.watchers`: new policy versions -> vLLM weight
  update; trainer metric events -> dashboard series; evaluation; status.
Generation keeps running while the trainer trains; it is limited only by the
lag bound k, never by a fixed schedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np

from orchestrator.advantages import group_advantages, has_signal, overlong_penalty
from orchestrator.bookkeeping import Bookkeeping, load_bookkeeping, save_bookkeeping
from orchestrator.metrics import batch_repetition
from orchestrator.rewards import RewardClient
from orchestrator.settings import OrchestratorSettings
from orchestrator.staleness import AdmissionController
from orchestrator.state import RunState, SampleRecord, StepRecord
from orchestrator.tasks.base import Task
from orchestrator.tasks.provider import TaskProvider
from services.bus.messages import RolloutGroup, RolloutSample
from services.bus.settings import BusSettings
from services.bus.transport import PublishCancelled

log = logging.getLogger(__name__)


class Orchestrator:
    """The loop; also the dashboard's `RunControl` (pause / resume / stop)."""

    def __init__(self, settings: OrchestratorSettings, bus: BusSettings, state: RunState | None = None) -> None:
        self.settings, self.bus = settings, bus
        self.state = state or RunState(settings.name)
        self.book_path = Path(settings.run_dir) / "orchestrator" / "bookkeeping.json"
        self.book: Bookkeeping = load_bookkeeping(self.book_path)
        self.admission = AdmissionController(settings.batch_samples, settings.max_off_policy_steps)
        self.admission.accepted = self.book.accepted_samples
        self.train_tasks = TaskProvider(settings.tasks, "train")
        eval_source = settings.eval_tasks or settings.tasks
        self.eval_tasks = TaskProvider(eval_source, "all" if settings.eval_tasks else "eval")
        self.policy_version = -1          # version loaded in vLLM
        self.trainer_step = 0
        self.cond = asyncio.Condition()
        self.stopping = asyncio.Event()
        self.paused = False
        self.gen_in_flight = 0
        self.gen_tokens: list[tuple[float, int]] = []   # (time, completion tokens) for tokens/s
        self.batch_stats: dict[int, dict[str, list[float]]] = {}
        self.tokenizer = None
        self.client = None
        self.updater = None
        self.rewards: RewardClient | None = None
        self.producer = None
        self.redis = None
        self.loss_name = "aspo"           # shown on the dashboard; set by the launcher
        self.trainer_busy_s = 0.0
        self.trainer_events: dict[int, dict[str, float]] = {}   # step -> the trainer's values
        self.trainer_wait_s = 0.0
        self._background: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ control
    # The dashboard calls these from its server thread: hop onto the loop.
    def pause(self) -> None:
        self._threadsafe(self._set_paused, True)

    def resume(self) -> None:
        self._threadsafe(self._set_paused, False)

    def stop(self) -> None:
        self._threadsafe(self._request_stop)

    def _threadsafe(self, fn, *args) -> None:  # noqa: ANN001
        if self._loop is None:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.state.update_status(message="paused: no new groups are admitted" if paused else "")
        if self._loop is not None:   # wake admission (waiting workers re-check within 1 s anyway)
            asyncio.ensure_future(self.notify())

    def _request_stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            self.state.update_status(state="stopping")

    async def notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    # ------------------------------------------------------------ helpers
    @property
    def target_groups(self) -> int:
        return self.settings.total_steps * self.settings.groups_per_step

    def prompt_ids(self, task: Task) -> list[int]:
        text = self.tokenizer.apply_chat_template(task.messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def save(self) -> None:
        self.book.accepted_samples = self.admission.accepted
        save_bookkeeping(self.book, self.book_path)

    def load_results(self) -> None:
        """A resumed run keeps its series: the rollout stats and evaluations of the
        steps before the restart come back from `steps.jsonl` (the trainer's events
        are replayed from the bus on top, replacing rather than adding)."""
        path = self.book_path.parent / "steps.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self.state.record_step(StepRecord.model_validate_json(line), replace_histogram=True)

    def save_results(self) -> None:
        """`<run>/orchestrator/status.json` and `steps.jsonl` (the dashboard's series),
        rewritten atomically: small files that outlive the run (reports read them)."""
        out = self.book_path.parent
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("status.json", self.state.status().model_dump_json(indent=1)),
            ("steps.jsonl", "".join(r.model_dump_json() + "\n" for r in self.state.steps())),
        ):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(out / name)

    # ------------------------------------------------------------ workers
    async def admit(self) -> int | None:
        """Wait until a group may start; claim its task index. None = no more work."""
        n = self.settings.group_size
        running_groups = lambda: self.admission.running // n  # noqa: E731
        async with self.cond:
            while True:
                if self.stopping.is_set() or self.book.accepted_groups + running_groups() >= self.target_groups:
                    return None
                if not self.paused and self.policy_version >= 0 and self.admission.can_admit(n, self.policy_version):
                    self.admission.start(n)
                    return self.book.claim()
                try:
                    await asyncio.wait_for(self.cond.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass

    async def worker(self) -> None:
        while (index := await self.admit()) is not None:
            accepted = False
            try:
                accepted = await self.run_group(index)
            except Exception as err:  # deliberately tolerated: the task goes back to the queue, the loop goes on
                log.exception("group for task %d failed: %s", index, err)
                self.book.retry_queue.append(index)
                self.state.update_status(message=f"generation error: {type(err).__name__}: {err}"[:300])
                await asyncio.sleep(2.0)
            finally:
                self.admission.finish(self.settings.group_size, accepted=accepted)
                if index in self.book.in_flight:
                    self.book.release(index)
                self.save()
                await self.notify()

    async def run_group(self, index: int) -> bool:
        """Generate, score and publish one group; True when it went to the trainer."""
        s = self.settings
        task = self.train_tasks.get(index)
        prompt = self.prompt_ids(task)
        self.gen_in_flight += 1
        try:
            completions = await self.client.generate(
                prompt, n=s.group_size, max_tokens=s.sampling.max_tokens,
                temperature=s.sampling.temperature, top_p=s.sampling.top_p,
                seed=s.sampling.seed + index * s.group_size,
            )
        finally:
            self.gen_in_flight -= 1
        now = time.time()
        self.gen_tokens.append((now, sum(len(c.completion_ids) for c in completions)))
        texts = [self.decode(c.completion_ids) for c in completions]
        rewards = await self.rewards.score(task, texts)
        self.book.samples_generated += len(completions)
        if any(r is None for r in rewards):
            self.book.reward_failures += len(completions)
            return False
        rewards = [self.shape_reward(r, len(c.completion_ids)) for r, c in zip(rewards, completions)]
        batch = self.book.accepted_groups // s.groups_per_step
        self.note_batch_stats(batch, texts, rewards, completions)
        if s.advantages.filter_zero_variance and not has_signal(rewards):
            self.book.samples_filtered += len(completions)
            return False
        adv = group_advantages(rewards, normalize_std=s.advantages.normalize_std)
        group = self.build_group(index, task, completions, rewards, adv)
        self.book.publishing.append(index)
        self.save()
        try:
            await self.producer.publish(group, cancel=self.stopping)
        except PublishCancelled:   # stopping while the stream is full: settled at the next start
            return False
        self.book.publishing.remove(index)
        self.book.accepted_groups += 1
        self.record_samples(task, group, texts, batch)
        if self.book.accepted_groups % s.groups_per_step == 0:
            self.flush_batch_stats(batch)
        return True

    def shape_reward(self, reward: float, length: int) -> float:
        a = self.settings.advantages
        if not a.overlong_penalty:
            return reward
        return reward + overlong_penalty(
            length, max_length=self.settings.sampling.max_tokens,
            cache_length=min(a.overlong_cache_tokens, self.settings.sampling.max_tokens),
        )

    def build_group(self, index, task, completions, rewards, adv) -> RolloutGroup:  # noqa: ANN001
        gid = f"{self.settings.name}:{index}"
        samples = [
            RolloutSample.build(
                rollout_id=f"{gid}:{i}", prompt_ids=c.prompt_ids, completion_ids=c.completion_ids,
                behaviour_logprobs=c.behaviour_logprobs, token_versions=c.token_versions,
                reward=r, advantage=float(a), finish_reason=c.finish_reason,
            )
            for i, (c, r, a) in enumerate(zip(completions, rewards, adv))
        ]
        return RolloutGroup(group_id=gid, task_id=task.task_id, samples=samples)

    def note_batch_stats(self, batch: int, texts: list[str], rewards: list[float], completions) -> None:  # noqa: ANN001
        """Reward, accuracy, length and repetition of every sample generated for a batch."""
        st = self.batch_stats.setdefault(batch, {"reward": [], "length": [], "text": []})
        st["reward"] += rewards
        st["length"] += [float(len(c.completion_ids)) for c in completions]
        st["text"] += texts

    def flush_batch_stats(self, batch: int) -> None:
        st = self.batch_stats.pop(batch, None)
        if not st or not st["reward"]:
            return
        r = np.asarray(st["reward"])
        values = {
            "reward_mean": float(r.mean()),
            "accuracy": float((r >= 1.0 - 1e-9).mean()),
            "response_length": float(np.mean(st["length"])),
        }
        values.update(batch_repetition(st["text"], st["reward"]))
        values["generation_tokens_per_s"] = self.state.status().generation_tokens_per_s
        self.state.record_step(StepRecord(step=batch + 1, values=values))

    def record_samples(self, task: Task, group: RolloutGroup, texts: list[str], batch: int) -> None:
        prompt = task.messages[-1]["content"]
        self.state.record_samples([
            SampleRecord(
                rollout_id=s.rollout_id, task_id=task.task_id, prompt=prompt, completion=t,
                reward=s.reward, advantage=s.advantage, policy_version=s.min_version,
                lag=batch - s.min_version,
            )
            for s, t in zip(group.samples, texts)
        ])

    # ------------------------------------------------------------ lifecycle
    def spawn(self, coro) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def finish(self) -> None:
        """All steps trained: pending and final evaluations complete, then stop."""
        await asyncio.gather(*list(self._background), return_exceptions=True)
        step = self.trainer_step
        if self.settings.evaluation.every_steps and step not in self.book.evaluated_steps:
            from orchestrator.watchers import evaluate

            self.book.evaluated_steps.append(step)
            await evaluate(self, step)
        self.save()
        self.state.update_status(state="finished")
        self.stopping.set()
        await self.notify()

    async def setup(self) -> None:
        from transformers import AutoTokenizer

        from services.bus.channels import rollout_producer
        from services.bus.transport import connect
        from services.inference.client import InferenceClient
        from services.inference.settings import InferenceClientSettings
        from services.inference.weights import WeightUpdater

        s = self.settings
        self.tokenizer = AutoTokenizer.from_pretrained(s.model)
        client_settings = InferenceClientSettings(base_urls=s.inference_urls, served_model_name=s.served_model_name)
        self.client = InferenceClient(client_settings)
        self.updater = WeightUpdater(self.client.pool, client_settings)
        self.rewards = RewardClient(s.reward)
        if not self.bus.url:
            raise ValueError("the orchestrator needs a Redis URL (REDIS_URL or bus.url); `aspo run` starts one")
        self.redis = connect(self.bus.url)
        self.producer = rollout_producer(self.redis, self.bus)
        await self.settle_publishing()
        served = await self.client.served_versions()
        live = [v for v in served.values() if v is not None]
        if not live:
            raise RuntimeError(f"no inference replica answers: {served}")
        self.policy_version = min(live)
        self.state.update_status(
            state="running", loss=self.loss_name, total_steps=s.total_steps,
            max_off_policy_steps=s.max_off_policy_steps, policy_version=self.policy_version,
        )

    async def settle_publishing(self) -> None:
        """Groups caught mid-publish by a crash: on the bus already, or to redo."""
        if not self.book.publishing:
            return
        from services.bus.channels import trained_ledger
        from services.bus.transport import DATA, MSGPACK

        decode = MSGPACK.decoder(RolloutGroup)
        in_stream: set[str] = set()
        for _, fields in await self.redis.xrange(self.bus.rollout_stream):
            try:
                in_stream.add(decode(fields[DATA]).group_id)
            except Exception:  # deliberately tolerated: a foreign entry cannot be one of ours
                continue
        ledger = trained_ledger(self.redis, self.bus)
        for index in list(self.book.publishing):
            gid = f"{self.settings.name}:{index}"
            trained = any(await ledger.seen([f"{gid}:{i}" for i in range(self.settings.group_size)]))
            self.book.settle(index, gid in in_stream or trained, self.settings.group_size)
            log.info("group %s caught mid-publish: %s", gid, "on the bus" if gid in in_stream or trained else "redone")
        self.admission.accepted = self.book.accepted_samples
        self.save()

    async def teardown(self) -> None:
        for closer in (self.client, self.rewards, self.updater):
            if closer is not None:
                await closer.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    async def evaluate_initial_policy(self) -> None:
        """Step 0 of the held-out series: the served policy before any training, evaluated
        before generation starts so that no weight update can land mid-evaluation."""
        cfg = self.settings.evaluation
        if not (cfg.every_steps and cfg.at_start) or 0 in self.book.evaluated_steps:
            return
        if self.trainer_step > 0 or self.policy_version != 0:
            return  # a resumed run whose initial policy is gone: no step-0 score rather than a mislabelled one
        from orchestrator.watchers import evaluate

        self.state.update_status(message="evaluating the initial policy (step 0)")
        await evaluate(self, 0)
        self.book.evaluated_steps.append(0)
        self.state.update_status(message="")
        self.save()

    async def run(self) -> None:
        """Run until every step is trained, `stop()` is called, or a fatal error."""
        from orchestrator.watchers import report_status, watch_metrics, watch_policy

        self._loop = asyncio.get_running_loop()
        try:
            self.load_results()
            await self.setup()
            await self.evaluate_initial_policy()
            workers = [asyncio.ensure_future(self.worker()) for _ in range(self.settings.max_concurrent_groups)]
            watchers = [asyncio.ensure_future(c) for c in (watch_policy(self), watch_metrics(self), report_status(self))]
            await self.stopping.wait()
            await asyncio.gather(*workers, return_exceptions=True)
            for t in watchers + list(self._background):
                t.cancel()
            await asyncio.gather(*watchers, *self._background, return_exceptions=True)
            if self.state.status().state != "finished":
                self.state.update_status(state="finished" if self.trainer_step >= self.settings.total_steps else "stopping")
        except Exception as err:
            self.state.update_status(state="failed", message=f"{type(err).__name__}: {err}"[:500])
            raise
        finally:
            self.save()
            self.save_results()
            await self.teardown()
