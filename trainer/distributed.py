"""Multi-GPU / multi-node training: FSDP2 (``fully_shard``) under ``torchrun``.

``aspo trainer serve`` run by ``torchrun`` (``RANK``/``WORLD_SIZE`` set) uses
the classes here instead of the single-process ones; every rank runs the same
loop in lock-step:

- rank 0 alone talks to the outside: it fetches the rollout groups (Redis or a
  directory), validates them, and broadcasts them with
  ``broadcast_object_list``, together with the decision to go on or stop (so
  a SIGTERM seen by rank 0 stops every rank at the same step, after the same
  final checkpoint). Ranks > 0 never open the bus.
- every rank holds the whole batch and splits each mini-batch the same
  deterministic way (sequence i goes to rank i mod world); each rank
  backpropagates ``sum(own token terms) / GLOBAL count`` (the normaliser is
  computed over the whole mini-batch, as in ``PolicyTrainer``), times the
  world size to undo FSDP's gradient averaging. The reduce-scattered gradient
  is therefore the single-process gradient of the same mini-batch, and so are
  the clip norm and the AdamW step (tests/integration/distributed/test_fsdp.py
  checks loss and updated weights against one process on gloo).
  FSDP's collectives need every rank to run the same number of forwards:
  a rank with fewer micro-batches runs extra ones on a real sequence with its
  loss multiplied by 0.
- publishing and checkpoints gather the full state dict
  (``get_model_state_dict(..., full_state_dict=True, cpu_offload=True)``) on
  every rank (a collective); rank 0 writes ``<run>/policy/v<N>`` and
  ``<run>/checkpoints/step-<N>`` in the single-process format (so a sharded
  run resumes a single-process checkpoint and vice versa) and acks the bus.
  Resuming reads the checkpoint on every rank: multi-node runs need run_dir
  on shared storage (NFS), as inference does to reload published weights.

Sharding: ``fully_shard`` on every decoder layer, then on a root module that
wraps the whole model and computes the completion log-probs; the trainer's
log-prob path calls the decoder and the LM-head weight directly (never full
logits), so it must run inside the root's forward for FSDP to gather the
embedding, final norm and head. Not supported here (clear error): LoRA.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer import batching
from trainer.batching import MicroBatch, TrainSequence
from trainer.engine import PolicyTrainer, _combine_metrics
from trainer.model import causal_lm, completion_logprobs, is_lora, resolve_device
from trainer.service import TrainerService
from trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


def torchrun_rank() -> int | None:
    """This process's global rank when started by torchrun (RANK and WORLD_SIZE set), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"])
    return None


def init_distributed(device_setting: str) -> torch.device:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU); return this rank's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_setting != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else resolve_device(device_setting)


def broadcast_from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; small objects: groups, flags)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _LogprobRoot(nn.Module):
    """FSDP root: its forward is the trainer's completion log-prob path (see module doc)."""

    def __init__(self, model: nn.Module, temperature: float, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.chunk_size = chunk_size

    def forward(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logprobs, entropy = completion_logprobs(self.model, mb, self.temperature, self.chunk_size)
        # (B, T) views of flat buffers: FSDP hooks its pre-backward on the outputs, and
        # warns that an in-place op on a view would drop it; the copies cost B x T floats.
        return logprobs.clone(), entropy.clone()


def shard(model: nn.Module, temperature: float, chunk_size: int) -> _LogprobRoot:
    """``fully_shard`` each decoder layer, then the root wrapping ``model`` (parameters become DTensors)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    param = next(model.parameters())
    mesh = init_device_mesh(param.device.type, (dist.get_world_size(),))
    layers = getattr(causal_lm(model).get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"{type(causal_lm(model)).__name__}: no decoder .layers to shard")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    root = _LogprobRoot(model, temperature, chunk_size)
    fully_shard(root, mesh=mesh)
    return root


class DistributedPolicyTrainer(PolicyTrainer):
    """``PolicyTrainer`` whose model is sharded with FSDP2 and whose mini-batches are split over ranks."""

    def __init__(self, settings: TrainerSettings) -> None:
        if settings.model.lora.enabled:
            raise ValueError(
                "model.lora.enabled: LoRA is not supported under torchrun/FSDP2; train LoRA on one GPU"
            )
        device = init_distributed(settings.device)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            settings = settings.model_copy(update={"device": "cuda"})
        super().__init__(settings)  # builds the full model on this rank's device
        self.device = device
        cfg = settings.batching
        self.root = shard(self.model, cfg.temperature, cfg.logprob_chunk_size)
        self.reference_root = (
            shard(self.reference, cfg.temperature, cfg.logprob_chunk_size)
            if self.reference
            else None
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # now DTensors
        opt = settings.optimizer
        self.optimizer = torch.optim.AdamW(
            self.params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay
        )
        from trainer.engine import lr_lambda

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(opt))

    # -------------------------------------------------------- engine hooks
    def policy_logprobs(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.root(mb)

    def reference_logprobs(self, mb: MicroBatch) -> torch.Tensor:
        assert self.reference_root is not None
        with torch.no_grad():
            return self.reference_root(mb)[0]

    def clip_gradients(self) -> float:
        from torch.distributed.tensor import DTensor

        norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.optimizer.max_grad_norm)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return float(norm)

    def accumulate_gradients(
        self, mini: list[TrainSequence]
    ) -> tuple[dict[str, float], torch.Tensor]:
        """This rank's share of the mini-batch gradient; summed over ranks it is ``PolicyTrainer``'s."""
        total = batching.normaliser(
            self.agg_mode, mini
        )  # GLOBAL count: every rank holds the whole mini-batch
        mini_tokens = sum(s.completion_len for s in mini)
        budget = self.settings.batching.micro_batch_tokens
        own = (
            batching.pack(mini[self.rank :: self.world_size], budget)
            if len(mini) > self.rank
            else []
        )
        count = torch.tensor([len(own)], device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        filler = own[0] if own else batching.pack(mini[:1], budget)[0]
        self.optimizer.zero_grad(set_to_none=True)
        entropy_sum = torch.zeros((), device=self.device)
        parts: list[tuple[dict[str, float], float]] = []
        keys: list[str] = []
        for i in range(int(count.item())):
            real = i < len(own)
            mb = (own[i] if real else filler).to(self.device)
            out, entropy = self._micro_loss(mb, total)
            # x world: FSDP averages gradients over ranks, the loss terms must add up instead
            (out.loss * (self.world_size if real else 0.0)).backward()
            keys = sorted(out.metrics)
            if real:
                entropy_sum += (entropy.detach() * mb.mask).sum()
                parts.append((out.metrics, mb.num_tokens / mini_tokens))
        dist.all_reduce(entropy_sum)
        return self._reduce_metrics(_combine_metrics(parts), keys), entropy_sum

    def _reduce_metrics(self, local: dict[str, float], keys: list[str]) -> dict[str, float]:
        """Combine the ranks' partial metrics the way ``_combine_metrics`` combines micro-batches."""
        ops = {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}
        neutral = {"min": float("inf"), "max": float("-inf"), "sum": 0.0}
        out: dict[str, float] = {}
        for kind in ("sum", "min", "max"):
            names = [
                k
                for k in keys
                if (k.endswith(f"_{kind}") if kind != "sum" else not k.endswith(("_min", "_max")))
            ]
            if not names:
                continue
            values = torch.tensor(
                [local.get(k, neutral[kind]) for k in names],
                dtype=torch.float64,
                device=self.device,
            )
            dist.all_reduce(values, op=ops[kind])
            out.update(zip(names, values.tolist()))
        return out

    # -------------------------------------------------------------- state
    def full_weights(self) -> dict[str, torch.Tensor]:
        """All weights, gathered (collective: every rank calls); only rank 0 gets tensors (on CPU)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def full_optimizer_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.full_weights()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))


class _FullOptimizer:
    """What ``trainer.checkpoint`` sees as ``trainer.optimizer``: full (unsharded) state in and out."""

    def __init__(
        self, trainer: DistributedPolicyTrainer, gathered: dict[str, Any] | None = None
    ) -> None:
        self._trainer, self._gathered = trainer, gathered

    def state_dict(self) -> dict[str, Any]:
        assert self._gathered is not None
        return self._gathered

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        t = self._trainer
        set_optimizer_state_dict(
            t.model, t.optimizer, state, options=StateDictOptions(full_state_dict=True)
        )


class _CheckpointView:
    """The trainer as ``save_checkpoint``/``load_checkpoint`` expect it, with full (gathered) state.

    Attribute writes (step, consumed_ids... on load) go to the trainer itself.
    """

    def __init__(
        self,
        trainer: DistributedPolicyTrainer,
        weights: dict | None = None,
        optim: dict | None = None,
    ):
        object.__setattr__(self, "_t", trainer)
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "optimizer", _FullOptimizer(trainer, optim))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self._weights

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._t, name, value)


class _Nothing:
    """Source and announcer of ranks > 0: they never fetch, ack or announce."""

    def fetch(self, max_groups: int, timeout_s: float) -> list:
        return []

    def ack(self, group_ids: Any) -> None:
        pass

    def announce(self, version: Any) -> None:
        pass


class DistributedTrainerService(TrainerService):
    """``TrainerService`` in lock-step on every torchrun rank; rank 0 does all I/O (module doc)."""

    def __init__(
        self, settings: TrainerSettings, source: Any = None, announcer: Any = None
    ) -> None:
        self.rank = torchrun_rank() or 0
        if self.rank != 0:
            source, announcer = _Nothing(), _Nothing()
            logging.getLogger("trainer").setLevel(logging.WARNING)  # rank 0 logs the steps
        super().__init__(settings, source, announcer)

    def start(self) -> None:
        from trainer.checkpoint import resume_latest
        from trainer.publish import list_versions

        self.trainer = DistributedPolicyTrainer(self.settings)
        if self.settings.checkpointing.resume:
            resume_latest(_CheckpointView(self.trainer), self.checkpoint_root)
        self._last_checkpoint_step = self.trainer.step
        self.metrics.step.set(self.trainer.step)
        published = self.rank == 0 and self.trainer.version in {
            v for v, _ in list_versions(self.policy_root)
        }
        if broadcast_from_rank0(published):
            self._announce(self.trainer.version, self.policy_root / f"v{self.trainer.version}")
        else:
            self.publish()

    def stop(self) -> None:
        if self.rank == 0:  # ranks > 0 stop when rank 0 says so (same step, same final checkpoint)
            super().stop()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop()

    def run(self) -> None:
        if (
            threading.current_thread() is threading.main_thread()
        ):  # else `aspo trainer serve` handles signals
            # torchrun forwards SIGTERM to every rank: rank 0 stops the loop (all
            # ranks finish the step and checkpoint together), the others wait for it.
            handler = self._on_signal if self.rank == 0 else signal.SIG_IGN
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, handler)
        try:
            if self.trainer is None:
                self.start()
            max_steps = self.settings.max_steps
            while broadcast_from_rank0(
                not self._stop.is_set() and (max_steps is None or self.trainer.step < max_steps)
            ):
                self.run_one_step()
            self.state = "checkpointing"
            self.checkpoint()
            self.state = "stopped"
        except Exception as err:
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
            log.exception("trainer service failed on rank %d", self.rank)
            raise

    def _collect_groups(self) -> list:
        return broadcast_from_rank0(super()._collect_groups() if self.rank == 0 else None)

    def _log_step(
        self, step: int, metrics: dict[str, float], lag_hist: dict[int, int], ids: list[str]
    ) -> None:
        if self.rank == 0:
            super()._log_step(step, metrics, lag_hist, ids)

    def _announce(self, version: int, path: Any) -> None:
        if self.rank == 0:
            super()._announce(version, path)

    def publish(self) -> float:
        t0 = time.perf_counter()
        weights = self.trainer.full_weights()  # collective
        path = self.policy_root / f"v{self.trainer.version}"
        if self.rank == 0:
            from trainer.publish import publish_policy

            assert not is_lora(self.trainer.model)  # FSDP2 trains full weights (checked at start)
            publish_policy(self.trainer.model, self.policy_root, self.trainer.version,
                           self.settings.publishing.keep_last, self.settings.model.path, state_dict=weights)
        elapsed = time.perf_counter() - t0
        self.metrics.phase_seconds.labels("publish").observe(elapsed)
        self._announce(self.trainer.version, path)
        return elapsed

    def checkpoint(self) -> None:
        from trainer.checkpoint import save_checkpoint

        if self.trainer.step != self._last_checkpoint_step:
            t0 = time.perf_counter()
            weights, optim = (
                self.trainer.full_weights(),
                self.trainer.full_optimizer_state(),
            )  # collectives
            if self.rank == 0:
                view = _CheckpointView(self.trainer, weights, optim)
                save_checkpoint(view, self.checkpoint_root, self.settings.checkpointing.keep_last)
            dist.barrier()  # no rank moves on before the checkpoint exists
            self.metrics.phase_seconds.labels("checkpoint").observe(time.perf_counter() - t0)
            self._last_checkpoint_step = self.trainer.step
        if self._unacked and self.rank == 0:
            self.source.ack(self._unacked)
        self._unacked = []

