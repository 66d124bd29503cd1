"""Run by ``torchrun`` from test_fsdp.py: train a batch with the FSDP2 trainer, rank 0 saves the result.

Usage: torchrun --nproc_per_node=2 fsdp_worker.py SETTINGS_JSON SAMPLES_MSGPACK OUT_PT
"""

from __future__ import annotations

import sys

import msgspec
import torch
import torch.distributed as dist

from services.bus.messages import RolloutSample
from trainer.distributed import DistributedPolicyTrainer
from trainer.settings import TrainerSettings


def main(settings_path: str, samples_path: str, out_path: str) -> None:
    with open(settings_path) as f:
        settings = TrainerSettings.model_validate_json(f.read())
    with open(samples_path, "rb") as f:
        batches = msgspec.msgpack.decode(f.read(), type=list[list[RolloutSample]])
    trainer = DistributedPolicyTrainer(settings)
    metrics = [trainer.train_step(batch) for batch in batches]
    weights = trainer.full_weights()
    if dist.get_rank() == 0:
        torch.save(
            {"metrics": metrics, "weights": weights, "world_size": dist.get_world_size()}, out_path
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
