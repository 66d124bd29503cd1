"""Checkpoints: a resumed run reproduces an uninterrupted one; writes are atomic."""

import json

import pytest
from trainer_helpers import random_samples, tiny_settings

from trainer.checkpoint import list_checkpoints, resume_latest, save_checkpoint
from trainer.engine import PolicyTrainer


def _settings(run_dir):
    # several optimizer steps per batch, shuffled mini-batches, warm-up and
    # weight decay: everything whose state a resume must restore
    return tiny_settings(
        run_dir,
        optimizer={"lr": 3e-3, "warmup_steps": 3, "weight_decay": 0.1, "schedule": "cosine", "total_steps": 20},
        loss={"name": "aspo", "hparams": {"loss_agg_mode": "seq-mean-token-mean"}},
        batching={"ppo_epochs": 2, "mini_batches": 2, "shuffle": True, "micro_batch_tokens": 40},
    )


BATCHES = [random_samples(6, seed=s, prefix=f"b{s}-") for s in range(5)]


def test_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(tmp_path):
    straight = PolicyTrainer(_settings(tmp_path / "a"))
    expected = [straight.train_step(b) for b in BATCHES]

    first = PolicyTrainer(_settings(tmp_path / "b"))
    for b in BATCHES[:2]:
        first.train_step(b)
    save_checkpoint(first, tmp_path / "b" / "ckpt", keep_last=2)
    del first

    resumed = PolicyTrainer(_settings(tmp_path / "b"))
    assert resume_latest(resumed, tmp_path / "b" / "ckpt") is not None
    assert (resumed.step, resumed.optimizer_steps) == (2, 8)
    got = [resumed.train_step(b) for b in BATCHES[2:]]
    for e, g in zip(expected[2:], got):
        for key in ("loss", "grad_norm", "lr", "entropy"):
            assert abs(e[key] - g[key]) <= 1e-6 * max(1.0, abs(e[key])), (key, e[key], g[key])
    # and the losses do move between steps, so equality above is not vacuous
    assert len({round(m["loss"], 6) for m in expected}) == len(expected)


def test_consumed_ids_survive_a_restart(tmp_path):
    trainer = PolicyTrainer(_settings(tmp_path))
    trainer.train_step(BATCHES[0])
    save_checkpoint(trainer, tmp_path / "ckpt", keep_last=1)
    again = PolicyTrainer(_settings(tmp_path))
    resume_latest(again, tmp_path / "ckpt")
    m = again.train_step(BATCHES[0] + BATCHES[1])  # the broker redelivers batch 0
    assert (m["dropped_duplicate"], m["num_samples"]) == (6, 6)


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    trainer = PolicyTrainer(_settings(tmp_path))
    root = tmp_path / "ckpt"
    for b in BATCHES[:4]:
        trainer.train_step(b)
        save_checkpoint(trainer, root, keep_last=2)
    assert [s for s, _ in list_checkpoints(root)] == [3, 4]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    # a crash mid-write leaves only a hidden temp dir, which resume ignores
    (root / ".tmp-step-5").mkdir()
    (root / ".tmp-step-5" / "model.pt").write_bytes(b"partial")
    fresh = PolicyTrainer(_settings(tmp_path))
    assert resume_latest(fresh, root).name == "step-4" and fresh.step == 4
    saved = json.loads((root / "step-4" / "settings.json").read_text())
    assert saved["loss"]["name"] == "aspo"


def test_lora_checkpoint_holds_only_adapters_and_resumes_exactly(tmp_path):
    def settings(run):
        return tiny_settings(
            run,
            optimizer={"lr": 1e-2, "warmup_steps": 0},
            model={"lora": {"enabled": True, "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        )

    straight = PolicyTrainer(settings(tmp_path / "a"))
    expected = [straight.train_step(b)["loss"] for b in BATCHES[:3]]
    first = PolicyTrainer(settings(tmp_path / "b"))
    first.train_step(BATCHES[0])
    path = save_checkpoint(first, tmp_path / "b" / "ckpt", keep_last=1)
    import torch

    saved = torch.load(path / "model.pt", weights_only=True)
    assert saved and all("lora_" in k for k in saved)
    resumed = PolicyTrainer(settings(tmp_path / "b"))
    resume_latest(resumed, tmp_path / "b" / "ckpt")
    got = [resumed.train_step(b)["loss"] for b in BATCHES[1:3]]
    assert got == pytest.approx(expected[1:], abs=1e-6)
    assert expected[1] != expected[2]
