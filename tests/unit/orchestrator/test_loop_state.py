"""Loop bookkeeping that needs no servers: resumed series, batch stats, control."""

import asyncio

from orchestrator.loop import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import StepRecord
from services.bus.settings import BusSettings


def _orch(tmp_path) -> Orchestrator:
    return Orchestrator(OrchestratorSettings(model="m", run_dir=tmp_path, group_size=2, groups_per_step=1), BusSettings())


def test_resumed_run_reloads_its_series(tmp_path):
    first = _orch(tmp_path)
    first.state.record_step(StepRecord(step=1, values={"reward_mean": 0.25}, lag_histogram={0: 2}))
    first.state.record_step(StepRecord(step=2, eval={"avg@4": 0.5}))
    first.save_results()
    again = _orch(tmp_path)
    again.load_results()
    again.load_results()   # idempotent
    steps = again.state.steps()
    assert [s.step for s in steps] == [1, 2]
    assert steps[0].values == {"reward_mean": 0.25} and steps[0].lag_histogram == {0: 2}
    assert steps[1].eval == {"avg@4": 0.5}


def test_control_before_the_loop_runs_and_stop_ends_admission(tmp_path):
    orch = _orch(tmp_path)
    orch.pause()
    assert orch.paused
    orch.resume()
    assert not orch.paused
    orch.policy_version = 0
    orch.stop()
    assert asyncio.run(orch.admit()) is None
    assert orch.state.status().state == "stopping"


def test_the_initial_policy_is_evaluated_once_as_step_0_and_never_mislabelled(tmp_path, monkeypatch):
    import orchestrator.watchers as watchers

    calls = []

    async def fake_evaluate(orch, step):
        calls.append((step, orch.policy_version))
        return {"avg@4": 0.25}

    monkeypatch.setattr(watchers, "evaluate", fake_evaluate)
    orch = _orch(tmp_path)
    orch.policy_version = 0
    asyncio.run(orch.evaluate_initial_policy())
    asyncio.run(orch.evaluate_initial_policy())  # a restart before step 1: already done
    assert calls == [(0, 0)] and orch.book.evaluated_steps == [0]

    resumed = _orch(tmp_path / "resumed")
    resumed.policy_version = 3  # vLLM already serves a trained policy: its score is not step 0's
    asyncio.run(resumed.evaluate_initial_policy())
    for off in ({"at_start": False}, {"every_steps": 0}):
        settings = OrchestratorSettings(model="m", run_dir=tmp_path / str(off), group_size=2, groups_per_step=1,
                                        evaluation=off)
        quiet = Orchestrator(settings, BusSettings())
        quiet.policy_version = 0
        asyncio.run(quiet.evaluate_initial_policy())
    assert calls == [(0, 0)]
