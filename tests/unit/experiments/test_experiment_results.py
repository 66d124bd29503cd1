"""Cell states from files, merged series across resumes, condensing and artifact clean-up."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from experiment_fakes import fake_finished_run, trainer_row, write_orchestrator, write_trainer_rows

from orchestrator.experiments import results as res


def test_cell_states_follow_the_files(tmp_path):
    run = tmp_path / "cell"
    assert res.cell_state(run, 3)[0] == "pending"
    write_trainer_rows(run, [trainer_row(1, {"0": 8})])
    write_orchestrator(run, "running", [])
    state, reason = res.cell_state(run, 3)
    assert state == "partial" and "1/3" in reason
    write_orchestrator(run, "finished", [])
    state, reason = res.cell_state(run, 3)
    assert state == "inconsistent" and "[2, 3]" in reason
    write_trainer_rows(run, [trainer_row(2, {"0": 8}), trainer_row(3, {"0": 8})])
    assert res.cell_state(run, 3)[0] == "finished"
    assert res.cell_state(run, 2)[0] == "inconsistent"  # step 3 > total_steps: another budget ran here
    (run / "summary.json").write_text("{}")
    assert res.cell_state(run, 3)[0] == "done"


def test_trainer_complete_but_orchestrator_not_finished_is_resumed_not_condensed(tmp_path):
    run = tmp_path / "cell"
    write_trainer_rows(run, [trainer_row(s, {"0": 8}) for s in (1, 2)])
    write_orchestrator(run, "stopping", [])
    assert res.cell_state(run, 2)[0] == "partial"


def test_series_survive_a_resume_and_the_trainers_later_row_wins(tmp_path):
    run = tmp_path / "cell"
    # first attempt: steps 1-2 with an eval at 2; killed
    write_orchestrator(run, "running", [
        {"step": 1, "values": {"reward_mean": 0.1}, "lag_histogram": {"0": 8}, "eval": None},
        {"step": 2, "values": {"reward_mean": 0.2}, "lag_histogram": {}, "eval": {"avg@2": 0.25, "pass@2": 0.5}},
    ])
    write_trainer_rows(run, [trainer_row(1, {"0": 8}, entropy=1.0), trainer_row(2, {"0": 4, "1": 4}, entropy=1.1)])
    res.stash_series(run)
    # second attempt rewrites the orchestrator series from memory (steps 2-3 only) and re-runs step 2
    write_orchestrator(run, "finished", [
        {"step": 2, "values": {"accuracy": 0.3}, "lag_histogram": {"1": 99}, "eval": None},
        {"step": 3, "values": {"reward_mean": 0.4}, "lag_histogram": {}, "eval": {"avg@2": 0.75, "pass@2": 1.0}},
    ])
    write_trainer_rows(run, [trainer_row(2, {"1": 8}, entropy=1.2), trainer_row(3, {"0": 8}, entropy=1.3)])
    rows = {r["step"]: r for r in res.merged_steps(run, 3)}
    assert sorted(rows) == [1, 2, 3]
    assert rows[2]["eval"] == {"avg@2": 0.25, "pass@2": 0.5}  # kept from the stash
    assert rows[2]["values"]["reward_mean"] == 0.2 and rows[2]["values"]["accuracy"] == 0.3
    assert rows[2]["lag_histogram"] == {"1": 8}  # the trainer's re-run row, not the orchestrator's sum
    assert rows[2]["values"]["entropy"] == 1.2
    assert rows[2]["values"]["lag_mean"] == rows[2]["values"]["policy_lag_mean"]  # the dashboard's aliases apply


def test_condense_summarises_and_cleanup_keeps_only_small_files(tmp_path):
    run = tmp_path / "aspo-k1"
    fake_finished_run(run, 4)
    (run / "logs").mkdir()
    (run / "logs" / "vllm.log").write_bytes(b"a" * (res.LOG_KEEP_BYTES * 2) + b"LAST LINE\n")
    config = {"run": {"total_steps": 4, "loss": "aspo", "run_dir": str(run)},
              "trainer": {"batching": {"ppo_epochs": 3}}}
    summary = res.condense(run, "aspo-k1", {"loss": "aspo"}, config, wall_s=12.5, attempts=2)
    assert summary["final_eval"] == {"step": 4, "avg@2": 0.5, "pass@2": 1.0}
    assert summary["lag_histogram"] == {"0": 16, "1": 16} and summary["realised_lag_mean"] == 0.5
    assert summary["samples_trained"] == 32 and summary["steps_trained"] == 4 and summary["ppo_epochs"] == 3
    assert summary["end"]["repetition"] == 0.04  # the last 10% of 4 steps = the last step
    assert summary["mean_over_steps"]["is_weight_pos_mean"] == 0.9
    assert "run_dir" not in summary["run"]
    stored = json.loads((run / "summary.json").read_text())
    assert stored["wall_s"] == 12.5 and stored["attempts"] == 2
    assert len(res.read_jsonl(run / "metrics.jsonl")) == 4
    res.delete_artifacts(run)
    assert not any((run / d).exists() for d in res.ARTIFACTS)
    log = (run / "logs" / "vllm.log").read_bytes()
    assert len(log) < res.LOG_KEEP_BYTES + 100 and log.endswith(b"LAST LINE\n")
    assert res.load_results(tmp_path)[0][0]["cell"] == "aspo-k1"


def test_a_torn_last_line_is_left_out_but_corruption_elsewhere_is_not(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "val')  # killed mid-append
    assert [r["step"] for r in res.read_jsonl(path)] == [1, 2]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(json.JSONDecodeError):
        res.read_jsonl(path)


@pytest.mark.parametrize(("summary", "rows", "named"), [
    ("{broken", "", "summary.json: unreadable"),
    ("[]", "", "summary.json: not a result file written by `aspo experiment` (top level"),
    ('{"cell": "x"}', "", "axes: Field required"),
    (None, '{"step": 1}\n{"step":', "metrics.jsonl line 2: not JSON"),
    (None, '{"values": {}}\n', "metrics.jsonl line 1: not a result file written by `aspo experiment` (step: Field"),
])
def test_broken_result_files_are_named_with_their_problem(tmp_path, summary, rows, named):
    run = tmp_path / "aspo-k1"
    fake_finished_run(run, 2)
    config = {"run": {"total_steps": 2, "loss": "aspo"}}
    (run / "cell.yaml").write_text(yaml.safe_dump(config))  # a real cell: its summary could be refreshed
    res.condense(run, "aspo-k1", {"loss": "aspo"}, config, wall_s=1.0, attempts=1)
    assert len(res.load_results(tmp_path)) == 1  # what condense writes passes the check
    if summary is not None:
        (run / "summary.json").write_text(summary)
    if rows:
        (run / "metrics.jsonl").write_text(rows)
    assert not res.refresh_summary(run)  # a broken summary is left for load_results to name
    with pytest.raises(res.ResultsError, match=re.escape(named)):
        res.load_results(tmp_path)


def test_an_older_summary_is_rewritten_from_the_kept_metrics_without_a_run(tmp_path):
    run = tmp_path / "aspo-k1"
    fake_finished_run(run, 10)
    config = {"run": {"total_steps": 10, "loss": "aspo"}}
    (run / "cell.yaml").write_text(yaml.safe_dump(config))
    current = res.condense(run, "aspo-k1", {"loss": "aspo"}, config, wall_s=42.0, attempts=2)
    assert current["summary_version"] == res.SUMMARY_VERSION and current["end_window_steps"] == 2  # 20% of 10
    assert not res.refresh_summary(run)  # already current: left alone
    old = dict(current, summary_version=1, end={"entropy": 9.9}, end_window_steps=1)
    (run / "summary.json").write_text(json.dumps(old))
    assert res.refresh_summary(run)
    again = json.loads((run / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "written_at"} == {k: v for k, v in current.items() if k != "written_at"}
    res.delete_artifacts(run)  # a committed cell keeps what refreshing needs
    (run / "summary.json").write_text(json.dumps(old))
    assert res.refresh_summary(run) and json.loads((run / "summary.json").read_text())["end"] == current["end"]
