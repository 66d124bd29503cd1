"""Checkpoints with exact resume: ``<run>/checkpoints/step-<N>``.

One directory holds everything the next steps depend on: the weights (the
adapters only with LoRA), AdamW state, the LR schedule, the step counters,
the RNG states (python, numpy, torch, cuda), the ids of every rollout already
trained (so a redelivered rollout is never trained twice) and the settings.
It is written to ``.tmp-step-<N>``, every file fsynced, then renamed: a
directory named ``step-<N>`` is always complete. The last K are kept.

Resuming from step N and feeding the same batches reproduces the losses of an
uninterrupted run (tests/unit/trainer/test_checkpoint.py). It does not cover
nondeterministic GPU kernels, nor batches that differ after the restart.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from trainer.engine import PolicyTrainer

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories themselves."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_install(tmp: Path, final: Path) -> None:
    """Rename a complete ``tmp`` directory to ``final`` (replacing an old one)."""
    fsync_tree(tmp)
    if final.exists():
        stale = final.with_name(f".stale-{final.name}-{os.getpid()}")
        os.rename(final, stale)
        os.rename(tmp, final)
        shutil.rmtree(stale)
    else:
        os.rename(tmp, final)
    fsync_dir(final.parent)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def save_checkpoint(trainer: PolicyTrainer, root: Path, keep_last: int) -> Path:
    """Write ``root/step-<trainer.step>`` atomically; prune to the last ``keep_last``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{trainer.step}"
    tmp = root / f".tmp-step-{trainer.step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(trainer.trainable_state(), tmp / "model.pt")
    torch.save(
        {"optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict()},
        tmp / "optimizer.pt",
    )
    torch.save(rng_state(), tmp / "rng.pt")
    state = {
        "step": trainer.step,
        "optimizer_steps": trainer.optimizer_steps,
        "consumed_ids": sorted(trainer.consumed_ids),
    }
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    (tmp / "settings.json").write_text(trainer.settings.model_dump_json(indent=2))
    atomic_install(tmp, final)
    for _, old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint written: %s", final)
    return final


def load_checkpoint(trainer: PolicyTrainer, path: Path) -> None:
    """Restore everything ``save_checkpoint`` wrote into an already-built trainer."""
    state = json.loads((path / "trainer_state.json").read_text())
    trainer.load_trainable_state(torch.load(path / "model.pt", map_location=trainer.device, weights_only=True))
    opt = torch.load(path / "optimizer.pt", map_location=trainer.device, weights_only=True)
    trainer.optimizer.load_state_dict(opt["optimizer"])
    trainer.scheduler.load_state_dict(opt["scheduler"])
    # our own file: RNG states contain numpy/python objects that weights_only refuses
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    trainer.step = int(state["step"])
    trainer.optimizer_steps = int(state["optimizer_steps"])
    trainer.consumed_ids = set(state["consumed_ids"])
    log.info("resumed from %s (step %d, %d consumed rollouts)", path, trainer.step, len(trainer.consumed_ids))


def resume_latest(trainer: PolicyTrainer, root: Path) -> Path | None:
    """Load the newest checkpoint under ``root`` if any; return its path."""
    found = list_checkpoints(root)
    if not found:
        return None
    load_checkpoint(trainer, found[-1][1])
    return found[-1][1]
