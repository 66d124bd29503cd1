"""Fake run directories shaped like what `aspo run` leaves (for resumability tests)."""

from __future__ import annotations

import json
from pathlib import Path


def trainer_row(step: int, lags: dict[str, int], entropy: float = 1.5) -> dict:
    metrics = {"step": float(step), "num_samples": float(sum(lags.values())), "pg_loss": 0.1 * step,
               "policy_lag_mean": 0.5, "entropy": entropy, "is_weight_pos_mean": 0.9, "is_weight_neg_mean": 1.1,
               "clipfrac_upper": 0.01, "clipfrac_lower": 0.0, "dropped_stale": 0.0}
    return {"step": step, "time": 1000.0 + step, "metrics": metrics, "lag_histogram": lags, "rollout_ids": []}


def write_trainer_rows(run_dir: Path, rows: list[dict]) -> None:
    path = run_dir / "trainer" / "steps.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def write_orchestrator(run_dir: Path, state: str, records: list[dict]) -> None:
    out = run_dir / "orchestrator"
    out.mkdir(parents=True, exist_ok=True)
    (out / "status.json").write_text(json.dumps({"run_id": run_dir.name, "state": state, "samples_generated": 40}))
    (out / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def fake_finished_run(run_dir: Path, total_steps: int) -> None:
    """A finished run: every trainer step, orchestrator series with an eval at the end, large artifacts."""
    write_trainer_rows(run_dir, [trainer_row(s, {"0": 4, "1": 4}) for s in range(1, total_steps + 1)])
    records = [{"step": s, "values": {"reward_mean": 0.1 * s, "repetition": 0.01 * s}, "lag_histogram": {},
                "eval": {"avg@2": 0.5, "pass@2": 1.0} if s == total_steps else None} for s in range(1, total_steps + 1)]
    write_orchestrator(run_dir, "finished", records)
    for name in ("checkpoints/step-2", "policy/v2", "redis"):
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        (run_dir / name / "blob.bin").write_bytes(b"x" * 1000)
