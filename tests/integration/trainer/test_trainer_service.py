"""`aspo trainer serve` for real: a subprocess with a tiny random-init model,
rollout files in a directory, /health and /metrics over HTTP, atomic v<N>
publishing, SIGTERM -> final checkpoint, restart -> resume without retraining."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from services.bus.messages import RolloutGroup, RolloutSample
from trainer.sources import write_group

pytestmark = pytest.mark.slow

TINY = {
    "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64, "max_position_embeddings": 64,
}
ASPO = str(Path(sys.executable).with_name("aspo"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group(i: int, version: int = 0) -> RolloutGroup:
    rng = np.random.default_rng(i)
    samples = [
        RolloutSample.build(
            rollout_id=f"g{i}-{k}", prompt_ids=rng.integers(0, 64, 4), completion_ids=rng.integers(0, 64, 5),
            behaviour_logprobs=-rng.uniform(3.5, 4.5, 5), token_versions=np.full(5, version),
            reward=float(k % 2), advantage=float(k % 2) - 0.5,
        )
        for k in range(4)
    ]
    return RolloutGroup(group_id=f"g{i}", task_id="t", samples=samples)


def _start(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([ASPO, "trainer", "serve", "--config", str(config)], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, env=env)


def _wait_health(port: int, proc: subprocess.Popen, log: Path, until, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"trainer exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            if until(health):
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"trainer never reached the expected state:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_serve_trains_publishes_checkpoints_and_resumes(tmp_path):
    run, rollouts, port = tmp_path / "run", tmp_path / "rollouts", _free_port()
    config = tmp_path / "trainer.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(run), "device": "cpu",
        "model": {"config": TINY},
        "optimizer": {"lr": 1e-3, "warmup_steps": 0},
        "loss": {"name": "aspo"},
        "batching": {"groups_per_step": 2, "fetch_timeout_s": 0.3, "max_off_policy_steps": 1},
        "publishing": {"keep_last": 2},
        "checkpointing": {"every_steps": 2},
        "source": {"path": str(rollouts)},
        "server": {"port": port},
    }))
    log = tmp_path / "trainer.log"
    for i in range(4):
        write_group(rollouts, _group(i))
    (rollouts / "0-bad.msgpack").write_bytes(b"garbage")
    proc = _start(config, log)
    try:
        health = _wait_health(port, proc, log, lambda h: (h["step"] or 0) >= 2 and h["state"] == "waiting")
        assert health["version"] == 2 and health["last_metrics"]["num_samples"] == 8
        assert sorted(p.name for p in (run / "policy").iterdir() if p.is_dir()) == ["v1", "v2"]  # keep_last 2
        assert not [p for p in (run / "policy").iterdir() if p.name.startswith(".tmp")]
        latest = json.loads((run / "policy" / "latest.json").read_text())
        assert (latest["version"], latest["trainer_step"]) == (2, 2)
        versions = [json.loads(x)["version"] for x in (run / "policy" / "versions.jsonl").read_text().splitlines()]
        assert versions == [0, 1, 2]  # v0 = the initial weights, announced first
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "aspo_trainer_samples_trained_total 16.0" in metrics
        assert 'aspo_trainer_phase_seconds_count{phase="publish"} 3.0' in metrics
        assert (rollouts / "rejected" / "0-bad.msgpack").is_file()
        assert len(list((rollouts / "done").glob("*.msgpack"))) == 4  # acked after the step-2 checkpoint

        # a stale group (version 0 while the trainer is at 2, bound 1) is dropped and counted
        write_group(rollouts, _group(10, version=0))
        write_group(rollouts, _group(11, version=2))
        _wait_health(port, proc, log, lambda h: (h["step"] or 0) >= 3)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "aspo_trainer_samples_dropped_stale_total 4.0" in metrics
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (run / "checkpoints" / "step-3").is_dir()  # final checkpoint on SIGTERM

    # restart: resumes at step 3; redelivered (un-acked) groups are not trained again
    for i in (11, 12):
        write_group(rollouts, _group(i, version=3))
    proc = _start(config, log)
    try:
        health = _wait_health(port, proc, log, lambda h: h["last_metrics"].get("step", 0) >= 4)
        assert health["last_metrics"]["dropped_duplicate"] == 4  # g11 was trained before the restart
        assert health["last_metrics"]["num_samples"] == 4
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
