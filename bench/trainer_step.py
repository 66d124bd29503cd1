"""Trainer step cost on this machine, side by side: chunked LM head vs full-vocab logits.

What is measured: ``PolicyTrainer.train_step`` (forward, backward through the
ASPO loss, grad clipping, AdamW) on a random-init model shaped like
SmolLM2-135M (LlamaConfig hidden 576, 30 layers, 9 heads / 3 KV heads,
intermediate 1536, vocab 49152, tied embeddings), fp32, one rollout batch of
``--samples`` sequences of ``--prompt`` + ``--completion`` tokens (default
16 x (64 + 128) = 16 x 192), ``--micro-batch-tokens`` per micro-batch.

Variants, each in its own process (so peak RSS is its own):
- ``chunked``: the trainer as shipped: decoder hidden states at completion
  positions only, through ``trainer.logprobs.token_logprobs`` (never (N, V)).
- ``naive``: the usual path: ``model(...).logits`` for every position,
  fp32 ``log_softmax`` over the vocabulary, gather (what field notes measured
  at ~30 s and 11 GB).
- ``chunked+gc``: chunked plus gradient checkpointing.

Timed: ``--steps`` steps after one untimed warm-up step; tokens/s counts
completion tokens trained. Peak RSS is ``ru_maxrss`` of the variant's process.

Run: ``.venv/bin/python bench/trainer_step.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2_135M = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def _naive_completion_logprobs(model, mb, temperature, chunk_size):
    import torch

    logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits.float() / temperature
    logp = torch.log_softmax(logits, -1)  # (B, L, V)
    entropy_all = -(logp.exp() * logp).sum(-1)
    flat = logp.reshape(-1, logp.shape[-1]).index_select(0, mb.hidden_index)
    lp = flat.gather(1, mb.target_ids.unsqueeze(1)).squeeze(1)
    ent = entropy_all.reshape(-1).index_select(0, mb.hidden_index)
    b, t = mb.mask.shape
    out_lp = torch.zeros(b * t, dtype=lp.dtype).index_copy(0, mb.token_index, lp).view(b, t)
    out_ent = torch.zeros(b * t, dtype=ent.dtype).index_copy(0, mb.token_index, ent).view(b, t)
    return out_lp, out_ent


def run_variant(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from services.bus.messages import RolloutSample
    from trainer import engine
    from trainer.settings import TrainerSettings

    torch.set_num_threads(args.threads)
    if args.variant == "naive":
        engine.completion_logprobs = _naive_completion_logprobs
    config = dict(SMOLLM2_135M, num_hidden_layers=args.layers)
    with tempfile.TemporaryDirectory() as run_dir:
        settings = TrainerSettings(
            run_dir=Path(run_dir),
            device="cpu",
            model={"config": config, "gradient_checkpointing": args.variant == "chunked+gc"},
            optimizer={"lr": 1e-6, "warmup_steps": 0},
            loss={"name": "aspo"},
            batching={"micro_batch_tokens": args.micro_batch_tokens, "max_off_policy_steps": None},
        )
        trainer = engine.PolicyTrainer(settings)
        rng = np.random.default_rng(0)
        times, tokens = [], 0
        for step in range(args.steps + 1):
            batch = [
                RolloutSample.build(
                    rollout_id=f"s{step}-{i}",
                    prompt_ids=rng.integers(0, config["vocab_size"], args.prompt),
                    completion_ids=rng.integers(0, config["vocab_size"], args.completion),
                    behaviour_logprobs=-rng.uniform(9, 12, args.completion),
                    token_versions=np.zeros(args.completion),
                    reward=float(i % 2),
                    advantage=float(i % 2) - 0.5,
                )
                for i in range(args.samples)
            ]
            t0 = time.perf_counter()
            m = trainer.train_step(batch)
            if step:  # step 0 is the warm-up
                times.append(time.perf_counter() - t0)
                tokens = int(m["num_tokens"])
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    med = statistics.median(times)
    return {"variant": args.variant, "step_s": med, "tokens_per_s": tokens / med, "peak_rss_gib": peak_gib}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["chunked", "naive", "chunked+gc"], help="Run one variant (internal).")
    p.add_argument("--variants", default="chunked,naive,chunked+gc")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--completion", type=int, default=128)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--micro-batch-tokens", type=int, default=1536)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 layers, 4 samples, 1 step: a smoke run.")
    args = p.parse_args()
    if args.quick:
        args.layers, args.samples, args.steps = 2, 4, 1
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    rows = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k not in ("variant", "variants", "quick") and v is not None
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(
        f"SmolLM2-135M shape ({args.layers} layers), fp32, {args.samples} x ({args.prompt}+{args.completion}) "
        f"tokens, micro-batch {args.micro_batch_tokens} tokens, {args.threads} threads, median of {args.steps}"
    )
    print("| variant | s/step | completion tokens/s | peak RSS GiB | time vs first | RSS vs first |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['step_s']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_rss_gib']:.2f} "
            f"| {r['step_s'] / base['step_s']:.2f}x | {r['peak_rss_gib'] / base['peak_rss_gib']:.2f}x |"
        )


if __name__ == "__main__":
    main()
