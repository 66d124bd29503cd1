"""Publishing: atomic v<N> directories that transformers loads, keep-last-K, LoRA merged."""

import torch
from trainer_helpers import random_samples, tiny_settings
from transformers import AutoModelForCausalLM

from trainer.engine import PolicyTrainer
from trainer.model import causal_lm
from trainer.publish import list_versions, publish_policy


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_published_versions_load_and_match_the_trainer(tmp_path):
    trainer = PolicyTrainer(tiny_settings(tmp_path))
    root = tmp_path / "policy"
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    published = []
    for v in range(4):
        if v:
            trainer.train_step(random_samples(4, seed=v, prefix=f"p{v}-"))
        path = publish_policy(trainer.model, root, trainer.version, keep_last=2)
        published.append(_logits(trainer.model, ids))
        assert path.name == f"v{v}"
    assert [v for v, _ in list_versions(root)] == [2, 3]
    assert sorted(p.name for p in root.iterdir()) == ["v2", "v3"]  # no temp or stale dirs left
    loaded = AutoModelForCausalLM.from_pretrained(root / "v3", dtype=torch.float32)
    assert (root / "v3" / "model.safetensors").is_file()
    assert torch.allclose(_logits(loaded, ids), published[3], atol=1e-5)
    assert not torch.allclose(published[2], published[3], atol=1e-4)


def test_republishing_a_version_replaces_it_whole(tmp_path):
    trainer = PolicyTrainer(tiny_settings(tmp_path))
    root = tmp_path / "policy"
    publish_policy(trainer.model, root, 1, keep_last=3)
    trainer.train_step(random_samples(4, seed=9))
    publish_policy(trainer.model, root, 1, keep_last=3)  # e.g. after a resume from an older checkpoint
    ids = torch.randint(0, 64, (1, 7))
    loaded = AutoModelForCausalLM.from_pretrained(root / "v1", dtype=torch.float32)
    assert torch.allclose(_logits(loaded, ids), _logits(trainer.model, ids), atol=1e-5)
    assert sorted(p.name for p in root.iterdir()) == ["v1"]


def test_lora_step_trains_only_adapters_and_publishes_merged_weights(tmp_path):
    settings = tiny_settings(
        tmp_path,
        optimizer={"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0},
        model={"lora": {"enabled": True, "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "up_proj"]}},
        loss={"name": "grpo", "hparams": {"loss_agg_mode": "token-mean", "kl_coef": 0.05}},
    )
    trainer = PolicyTrainer(settings)
    assert trainer.reference is None  # KL reference = the base with adapters disabled
    base_ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    before = _logits(trainer.model, base_ids)
    for step in range(2):
        m = trainer.train_step(random_samples(6, seed=10 + step, prefix=f"l{step}-"))
        assert m["num_samples"] == 6
    after = _logits(trainer.model, base_ids)
    assert not torch.allclose(before, after, atol=1e-4)  # the adapters changed the policy
    path = publish_policy(trainer.model, tmp_path / "policy", trainer.version, keep_last=1)
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert not any("lora" in k for k in loaded.state_dict())
    assert torch.allclose(_logits(loaded, base_ids), after, atol=1e-5)
    # publishing did not merge into the training model: the adapters are still separate
    assert any("lora_A" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert torch.allclose(_logits(causal_lm(trainer.model), base_ids), after)
