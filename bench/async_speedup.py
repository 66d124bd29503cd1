"""Asynchronous vs synchronous RL on the real system: is the overlap near ideal?

Runs `aspo run` twice with the same config, `max_off_policy_steps=0`
(synchronous: generation waits for each update) and `=2`, one after the
other on the same machine, then reads each run's own records
(`<run>/trainer/steps.jsonl`, `<run>/orchestrator/status.json`) and prints:

- trained samples per second between the first and the last trainer step
  (start-up excluded);
- trainer and inference idle fractions;
- g and t: generation and training time per step, measured on the
  synchronous run (t = the trainer's busy time per step: forward/backward,
  optimizer, publishing, checkpointing; g = the step period minus t:
  generation, scoring and the weight update);
- the ideal asynchronous speedup (g + t) / max(g, t) and the measured one,
  and their ratio (target >= 0.9).

On one CPU machine generation and training share the cores, so each
component is held to one thread (`--threads 1`, the default): the two can
then really overlap, as they do on separate GPUs, and the benchmark measures
the scheduling, not core contention. Usage:

    python bench/async_speedup.py [--config configs/smoke.yaml] [--steps 8] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_once(base: dict, k: int, steps: int, threads: int, workdir: Path) -> dict:
    cfg = json.loads(json.dumps(base))
    run_dir = workdir / f"k{k}"
    cfg["run"].update(run_dir=str(run_dir), max_off_policy_steps=k, total_steps=steps)
    cfg.setdefault("orchestrator", {})["evaluation"] = {"every_steps": 0}
    cfg["orchestrator"].setdefault("dashboard", {})["port"] = 0
    cfg.setdefault("inference", {})["omp_num_threads"] = threads
    path = workdir / f"k{k}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("REDIS_URL", None)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "aspo", "run", "--config", str(path)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"aspo run (k={k}) failed:\n{proc.stdout[-3000:]}")
    rows = {}
    for line in (run_dir / "trainer" / "steps.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row
    ordered = [rows[s] for s in sorted(rows)]
    status = json.loads((run_dir / "orchestrator" / "status.json").read_text())
    span = ordered[-1]["time"] - ordered[0]["time"]
    trained = sum(r["metrics"]["num_samples"] for r in ordered[1:])
    busy = [sum(r["metrics"].get(key, 0.0) for key in
                ("time_forward_backward_s", "time_optimizer_s", "time_recompute_s", "time_publish_s",
                 "time_checkpoint_s"))
            for r in ordered[1:]]
    return {
        "k": k, "steps": len(ordered), "wall_s": time.time() - t0, "span_s": span,
        "samples_per_s": trained / span, "step_period_s": span / (len(ordered) - 1),
        "train_s_per_step": sum(busy) / len(busy),
        "trainer_idle_fraction": status["trainer_idle_fraction"],
        "inference_idle_fraction": status["inference_idle_fraction"],
        "max_lag": max((int(k2) for r in ordered for k2 in r["lag_histogram"]), default=0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    base = yaml.safe_load(args.config.read_text())
    with tempfile.TemporaryDirectory(prefix="aspo-async-bench-") as tmp:
        sync = run_once(base, 0, args.steps, args.threads, Path(tmp))
        asyn = run_once(base, 2, args.steps, args.threads, Path(tmp))
    t = sync["train_s_per_step"]
    g = max(sync["step_period_s"] - t, 1e-9)
    ideal = (g + t) / max(g, t)
    measured = asyn["samples_per_s"] / sync["samples_per_s"]
    result = {"sync": sync, "async": asyn, "g_s": g, "t_s": t, "ideal_speedup": ideal,
              "measured_speedup": measured, "ratio_to_ideal": measured / ideal,
              "load_avg": os.getloadavg()}
    print("| k | samples/s | step period (s) | train s/step | trainer idle | inference idle | max lag |")
    print("|---|---|---|---|---|---|---|")
    for r in (sync, asyn):
        print(f"| {r['k']} | {r['samples_per_s']:.3f} | {r['step_period_s']:.1f} | {r['train_s_per_step']:.1f} | "
              f"{r['trainer_idle_fraction']:.2f} | {r['inference_idle_fraction']:.2f} | {r['max_lag']} |")
    print(f"\ng = {g:.1f} s, t = {t:.1f} s per step; ideal speedup (g+t)/max(g,t) = {ideal:.2f}; "
          f"measured {measured:.2f}; ratio to ideal {measured / ideal:.2f} (target >= 0.9); "
          f"load average {result['load_avg'][0]:.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
