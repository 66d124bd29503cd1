"""A cell's directory: its state, its condensed results, its index entry.

A cell's run dir is `<results>/<cell>` (the `aspo run` run dir). When the run
finishes, its series are condensed into two small files next to it and the
large artifacts (checkpoints, policy versions, Redis data) are deleted, so a
results folder can be committed:

- `metrics.jsonl`: one row per trainer step `{step, time, values, lag_histogram,
  eval}`: the orchestrator's series (reward, accuracy, repetition, evaluation)
  merged with the trainer's own rows (loss metrics, IS weights, clip fractions,
  lag histogram; the trainer is authoritative for those, later rows win).
- `summary.json`: final held-out scores, end-of-run entropy/repetition/reward,
  realised lag histogram, mean IS weights and clip fractions, wall time.

Cell states (decided from files only, so a later session can resume):
`done` (summary.json written), `finished` (status.json says finished and the
trainer logged every step 1..total_steps: only condensing is left), `partial`
(anything else that started: rerunning `aspo run` on the same dir resumes it),
`inconsistent` (status finished but trainer steps missing, or trainer steps
beyond total_steps: the dir is not this cell's run; it is wiped and rerun),
`pending` (nothing there).

The orchestrator reloads `orchestrator/steps.jsonl` when a run resumes; the
runner still stashes the old file under `experiment/` before each (re)start
(a record of every attempt) and condensing merges every stash idempotently
(later wins per step).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

CellState = Literal["pending", "done", "finished", "partial", "inconsistent"]
ARTIFACTS = ("checkpoints", "policy", "redis")
LOG_KEEP_BYTES = 256 * 1024
END_FRACTION = 0.2  # end-of-run values: mean over the last 20% of steps (at least one; 4 of 16)
#: Bumped when summarise() changes; older summaries are rewritten from the kept metrics.jsonl (refresh_summary).
SUMMARY_VERSION = 2


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file a run appends to; a last line torn by a crash mid-append is left out."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines[:-1]]
    if lines:
        try:
            rows.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            if text.endswith("\n"):  # a complete last line that is not JSON: corruption, not a torn write
                raise
    return rows


def write_json(path: Path, data: Any) -> None:
    """Atomic write (tmp + rename): an interrupted grid never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def trainer_rows(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The trainer's step rows; a step re-run after a resume replaces the older row."""
    return {int(r["step"]): r for r in read_jsonl(run_dir / "trainer" / "steps.jsonl")}


def run_status(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "orchestrator" / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cell_state(run_dir: Path, total_steps: int) -> tuple[CellState, str]:
    """The cell's state and a one-line reason."""
    if (run_dir / "summary.json").is_file():
        return "done", "summary.json present"
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "pending", "not started"
    steps = set(trainer_rows(run_dir))
    status = run_status(run_dir) or {}
    complete = set(range(1, total_steps + 1)) <= steps
    if steps and max(steps) > total_steps:
        return "inconsistent", f"trainer logged step {max(steps)} > total_steps {total_steps}"
    if status.get("state") == "finished":
        if complete:
            return "finished", "run finished, not yet condensed"
        missing = sorted(set(range(1, total_steps + 1)) - steps)
        return "inconsistent", f"status finished but trainer steps {missing[:5]} missing"
    return "partial", f"interrupted after {len(steps)}/{total_steps} trainer steps (resumable)"


def stash_series(run_dir: Path) -> None:
    """Keep the orchestrator's current series before a restart overwrites it."""
    src = run_dir / "orchestrator" / "steps.jsonl"
    if src.is_file() and src.stat().st_size:
        dest = run_dir / "experiment"
        dest.mkdir(parents=True, exist_ok=True)
        n = len(list(dest.glob("orchestrator-steps-*.jsonl")))
        shutil.copyfile(src, dest / f"orchestrator-steps-{n:03d}.jsonl")


def merged_steps(run_dir: Path, total_steps: int) -> list[dict[str, Any]]:
    """Per-step rows from every stashed and the current orchestrator series, then the trainer's rows."""
    from orchestrator.watchers import TRAINER_ALIASES

    parts = sorted((run_dir / "experiment").glob("orchestrator-steps-*.jsonl"))
    merged: dict[int, dict[str, Any]] = {}

    def row(step: int) -> dict[str, Any]:
        return merged.setdefault(step, {"step": step, "time": 0.0, "values": {}, "lag_histogram": {}, "eval": None})

    for part in [*parts, run_dir / "orchestrator" / "steps.jsonl"]:
        for rec in read_jsonl(part):
            r = row(int(rec["step"]))
            r["values"].update(rec.get("values") or {})
            r["lag_histogram"] = rec.get("lag_histogram") or r["lag_histogram"]
            r["eval"] = rec.get("eval") or r["eval"]
            r["time"] = max(r["time"], float(rec.get("time") or 0.0))
    for step, rec in trainer_rows(run_dir).items():
        r = row(step)
        values = dict(rec.get("metrics") or {})
        for theirs, ours in TRAINER_ALIASES.items():
            if theirs in values:
                values.setdefault(ours, values[theirs])
        r["values"].update(values)
        r["lag_histogram"] = rec.get("lag_histogram") or {}
        r["time"] = max(r["time"], float(rec.get("time") or 0.0))
    rows = [merged[s] for s in sorted(merged) if 0 <= s <= total_steps]
    for r in rows:
        r["lag_histogram"] = {str(k): int(v) for k, v in sorted(r["lag_histogram"].items(), key=lambda kv: int(kv[0]))}
    return rows


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def summarise(name: str, values: dict[str, Any], config: dict[str, Any], rows: list[dict[str, Any]],
              wall_s: float, attempts: int, status: dict[str, Any] | None) -> dict[str, Any]:
    """The cell's summary.json from its merged step rows."""
    run = {k: v for k, v in config.get("run", {}).items() if k != "run_dir"}
    total = int(run.get("total_steps", 0)) or max((r["step"] for r in rows), default=0)
    evals = [{"step": r["step"], **r["eval"]} for r in rows if r.get("eval")]
    trained = [r for r in rows if r["step"] >= 1 and "num_samples" in r["values"]]
    window = max(1, math.ceil(total * END_FRACTION))
    end_rows = [r for r in rows if r["step"] > total - window]

    def end(key: str) -> float | None:
        # the last steps that carry the key (orchestrator batch values may lag a step behind)
        have = [r["values"][key] for r in rows if key in r["values"]]
        last = [r["values"][key] for r in end_rows if key in r["values"]]
        return _mean(last or have[-window:])

    hist: dict[int, int] = {}
    for r in trained:
        for lag, n in r["lag_histogram"].items():
            hist[int(lag)] = hist.get(int(lag), 0) + int(n)
    n_lag = sum(hist.values())
    over = lambda key: _mean([r["values"].get(key) for r in trained])
    return {
        "cell": name, "summary_version": SUMMARY_VERSION, "axes": values, "run": run,
        "ppo_epochs": ((config.get("trainer") or {}).get("batching") or {}).get("ppo_epochs"),
        "evaluation": (config.get("orchestrator") or {}).get("evaluation"),
        "eval_tasks": (config.get("orchestrator") or {}).get("eval_tasks"),
        "total_steps": total, "steps_trained": len(trained),
        "samples_trained": int(sum(r["values"].get("num_samples", 0) for r in trained)),
        "samples_dropped_stale": int(sum(r["values"].get("dropped_stale", 0) for r in trained)),
        "final_eval": evals[-1] if evals else None, "evals": evals,
        "end": {k: end(k) for k in ("entropy", "repetition", "reward_mean", "accuracy", "response_length")},
        "end_window_steps": window,
        "lag_histogram": {str(k): hist[k] for k in sorted(hist)},
        "realised_lag_mean": sum(k * n for k, n in hist.items()) / n_lag if n_lag else None,
        "mean_over_steps": {k: over(k) for k in ("is_weight_pos_mean", "is_weight_neg_mean", "clipfrac_upper",
                                                   "clipfrac_lower", "dualclip_frac_pos", "dualclip_frac_neg",
                                                   "kl_behaviour", "grad_norm")},
        "wall_s": wall_s, "attempts": attempts,
        "status": {k: (status or {}).get(k) for k in ("state", "samples_generated", "samples_filtered", "reward_failures")},
        "written_at": time.time(),
    }


def condense(run_dir: Path, name: str, values: dict[str, Any], config: dict[str, Any], wall_s: float,
             attempts: int) -> dict[str, Any]:
    """Write metrics.jsonl and summary.json (summary last: it marks the cell done)."""
    total = int(config["run"].get("total_steps", 0))
    rows = merged_steps(run_dir, total)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = summarise(name, values, config, rows, wall_s, attempts, run_status(run_dir))
    write_json(run_dir / "summary.json", summary)
    return summary


def refresh_summary(run_dir: Path) -> bool:
    """Rewrite a summary.json older than SUMMARY_VERSION from the cell's kept metrics.jsonl and cell.yaml
    (no run needed; wall time and attempts are kept). True when it was rewritten."""
    import yaml

    path, metrics, cell_yaml = run_dir / "summary.json", run_dir / "metrics.jsonl", run_dir / "cell.yaml"
    if not (path.is_file() and metrics.is_file() and cell_yaml.is_file()):
        return False
    try:
        old = json.loads(path.read_text())
        current = int(old.get("summary_version", 1)) >= SUMMARY_VERSION
        name, axes = old["cell"], old["axes"]
    except (ValueError, TypeError, AttributeError, KeyError):
        return False  # not a summary this can rewrite: load_results names the problem
    if current:
        return False
    config = yaml.safe_load(cell_yaml.read_text())
    summary = summarise(name, axes, config, read_jsonl(metrics), float(old.get("wall_s", 0.0)),
                        int(old.get("attempts", 0)), run_status(run_dir) or old.get("status"))
    write_json(path, summary)
    return True


def delete_artifacts(run_dir: Path) -> None:
    """Drop checkpoints, policy versions and Redis data; keep each log's last 256 KiB."""
    for name in ARTIFACTS:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for log in (run_dir / "logs").glob("*.log"):
        if log.stat().st_size > LOG_KEEP_BYTES:
            with open(log, "rb") as f:
                f.seek(-LOG_KEEP_BYTES, 2)
                tail = f.read()
            log.write_bytes(b"[... truncated by aspo experiment ...]\n" + tail)


class ResultsError(ValueError):
    """A stored result file is unreadable or not what `aspo experiment` writes; the message names it."""


Number = float | None


class _Stored(BaseModel):
    model_config = ConfigDict(extra="allow")  # newer writers may add keys; the report reads these


class RunSection(_Stored):
    loss: str
    max_off_policy_steps: int = 0


class StoredSummary(_Stored):
    """The part of `summary.json` the report reads."""

    cell: str
    axes: dict[str, str | int | float | bool]
    run: RunSection
    total_steps: int
    samples_trained: int
    final_eval: dict[str, Number] | None = None
    end: dict[str, Number]
    lag_histogram: dict[int, int]
    mean_over_steps: dict[str, Number]
    wall_s: float = 0.0
    attempts: int = 0


class StoredRow(_Stored):
    """One `metrics.jsonl` row."""

    step: int
    values: dict[str, Number] = {}
    lag_histogram: dict[int, int] = {}
    eval: dict[str, Number] | None = None


def _validated(model: type[_Stored], data: Any, where: str) -> dict[str, Any]:
    try:
        model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in err.errors()[:5])
        raise ResultsError(f"{where}: not a result file written by `aspo experiment` ({problems})") from None
    return data


def load_results(results: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(summary, metrics rows) of every done cell under a results folder, by cell name.

    Both files are checked against what the report reads; a broken one raises
    ResultsError naming the file, the line and the problem instead of failing later."""
    out = []
    for summary_path in sorted(results.glob("*/summary.json")):
        try:
            summary = _validated(StoredSummary, json.loads(summary_path.read_text()), str(summary_path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ResultsError(f"{summary_path}: unreadable ({err})") from None
        rows_path = summary_path.parent / "metrics.jsonl"
        rows = []
        try:
            lines = rows_path.read_text().splitlines() if rows_path.is_file() else []
        except (OSError, UnicodeDecodeError) as err:
            raise ResultsError(f"{rows_path}: unreadable ({err})") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(_validated(StoredRow, json.loads(line), f"{rows_path} line {n}"))
            except json.JSONDecodeError as err:
                raise ResultsError(f"{rows_path} line {n}: not JSON ({err})") from None
        out.append((summary, rows))
    return out
