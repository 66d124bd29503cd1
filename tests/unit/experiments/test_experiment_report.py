"""`aspo report` on the stored fixture results: the table's numbers, computed findings, the PNGs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.experiments.report import ReportError, build_report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "experiments" / "results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("report") / "experiments.md"
    build_report(FIXTURES, out)
    return out.read_text(), out


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if len(cols) == 12 and cols[0] in ("aspo", "grpo"):
            rows[(cols[0], cols[1])] = cols
    return rows


def test_final_table_has_mean_and_seed_spread_per_loss_and_lag(report):
    rows = table_rows(report[0])
    assert set(rows) == {("aspo", "0"), ("aspo", "2"), ("grpo", "0"), ("grpo", "2")}
    # aspo k=0: avg@2 over seeds 0.5 and 0.7 -> mean 0.6, sample sd 0.1414; entropy 1.2, 1.4
    assert rows[("aspo", "0")][3:8] == ["2", "0.600 ± 0.141", "0.875 ± 0.177", "1.300 ± 0.141", "0.030 ± 0.014"]
    assert rows[("grpo", "0")][4] == "0.400 ± 0.000"
    assert rows[("aspo", "2")][3:6] == ["1", "0.250", "0.500"]  # one seed: no spread is claimed
    # realised lag from the histograms: k=2 cells trained 62.5% of samples at lag 0
    summary = json.loads((FIXTURES / "aspo-k2-s0" / "summary.json").read_text())
    assert rows[("aspo", "2")][9] == f"{summary['realised_lag_mean']:.2f}"


def test_findings_are_computed_and_hedged_by_the_seed_spread(report):
    text = report[0]
    assert "At k = 0, aspo ended with the highest entropy (1.300 nats/token) and grpo the lowest (0.700)." in text
    # 4 prompts x 2 samples per score: binomial errors sqrt(.24/8) and sqrt(.24/8) -> 0.245 for the difference
    assert ("k = 0: held-out avg@2: aspo higher by 0.200 (0.600 vs 0.400); within twice the held-out sampling "
            "error of the difference (0.245, binomial): not distinguishable.") in text
    assert "k = 2: held-out avg@2: aspo lower by 0.125 (0.250 vs 0.375); within twice the held-out sampling" in text
    assert "Seeds per setting: 1, 2." in text
    assert "realised mean lag 0.62 steps; 25% of trained samples were at the bound, max realised lag 2" in text


def test_a_result_against_the_paper_is_reported_as_such(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    for name in ("grpo-k2-s0",):
        path = results / name / "summary.json"
        summary = json.loads(path.read_text())
        summary["end"]["entropy"] = 3.0  # grpo keeps more entropy than aspo (1.5) at k=2
        path.write_text(json.dumps(summary))
    text = build_report(results, tmp_path / "r.md").read_text()
    assert "k = 2: end entropy: aspo lower by 1.500" in text
    assert "this comparison contradicts it" in text
    assert "At k = 2, grpo ended with the highest entropy" in text


def test_plots_are_written_next_to_the_report_and_linked(report):
    text, out = report
    pngs = sorted((out.parent / "experiments").glob("*.png"))
    assert [p.stem for p in pngs] == ["accuracy", "clip_fractions", "entropy_repetition", "is_weights", "lag_histograms",
                                      "lag_sweep"]
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"](experiments/{png.name})" in text


def test_an_empty_or_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nope", tmp_path / "r.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no finished cells"):
        build_report(tmp_path / "empty", tmp_path / "r.md")
    shutil.copytree(FIXTURES, tmp_path / "broken")
    (tmp_path / "broken" / "grpo-k2-s0" / "summary.json").write_text('{"cell": "grpo-k2-s0"')
    with pytest.raises(ReportError, match="grpo-k2-s0/summary.json: unreadable"):
        build_report(tmp_path / "broken", tmp_path / "r.md")


def test_runs_without_any_evaluation_still_get_a_report(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    for path in results.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        summary["final_eval"], summary["evals"] = None, []
        path.write_text(json.dumps(summary))
    for path in results.glob("*/metrics.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "eval": None}) + "\n" for r in rows))
    out = build_report(results, tmp_path / "r.md")
    text = out.read_text()
    assert "No ASPO/GRPO pair with held-out scores" in text
    assert table_rows(text)[("aspo", "0")][4] == "–"
    assert (tmp_path / "r" / "accuracy.png").stat().st_size > 1000


def test_equal_values_are_called_equal_not_a_win(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    for path in results.glob("*-k2-s0/summary.json"):
        summary = json.loads(path.read_text())
        summary["end"]["entropy"] = 1.0
        path.write_text(json.dumps(summary))
    text = build_report(results, tmp_path / "r.md").read_text()
    assert "At k = 2, every loss ended with the same entropy (1.000 nats/token, to 3 decimals)." in text
    assert "neither agrees nor contradicts it" in text


def test_other_axes_become_variants_not_extra_seeds(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    for name, epochs in (("aspo-k0-s0", 1), ("aspo-k0-s1", 3)):
        path = results / name / "summary.json"
        summary = json.loads(path.read_text())
        summary["axes"]["ppo_epochs"] = epochs
        path.write_text(json.dumps(summary))
    text = build_report(results, tmp_path / "r.md").read_text()
    assert "| aspo | 0 | ep1 | 1 | 0.500 |" in text and "| aspo | 0 | ep3 | 1 | 0.700 |" in text


def test_a_partial_grid_names_the_cells_still_to_run(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    axes = {"loss": ["aspo", "grpo"], "max_off_policy_steps": [0, 2], "seed": [0, 1]}
    (results / "grid.json").write_text(json.dumps({"name": "fixture", "spec": {"axes": axes}, "cells": {}}))
    text = build_report(results, tmp_path / "partial.md").read_text()
    assert "Partial grid: 6 of 8 cells finished." in text
    assert "Not yet run (or not finished): aspo-k2-s1, grpo-k2-s1." in text

    shutil.rmtree(results / "aspo-k2-s1", ignore_errors=True)
    axes["max_off_policy_steps"] = [0]
    (results / "grid.json").write_text(json.dumps({"name": "fixture", "spec": {"axes": axes}, "cells": {}}))
    assert "The grid is complete: all 4 cells." in build_report(results, tmp_path / "full.md").read_text()


def test_the_report_names_the_one_command_that_reruns_a_cell(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    index = {"name": "fixture", "grid_file": "configs/experiments/mine.yaml", "spec": {"axes": {}}, "cells": {}}
    (results / "grid.json").write_text(json.dumps(index))
    text = build_report(results, tmp_path / "r.md").read_text()
    line = next(l for l in text.splitlines() if l.startswith("Rerun any cell"))
    assert "`aspo experiment --grid configs/experiments/mine.yaml --only " in line and "--results results/rerun`" in line
    cell = line.split("--only ")[1].split()[0]
    assert (results / cell / "summary.json").is_file()
    del index["grid_file"]  # written before grids recorded their file: the grid's name gives the usual path
    (results / "grid.json").write_text(json.dumps(index))
    assert "--grid configs/experiments/fixture.yaml --only" in build_report(results, tmp_path / "r.md").read_text()


def test_moving_average_keeps_every_step_and_shrinks_at_the_ends():
    from orchestrator.experiments.plots import moving_average

    assert moving_average([1.0, 2.0, 6.0, 4.0]) == [1.5, 3.0, 4.0, 5.0]
    assert moving_average([2.0]) == [2.0]


def test_a_hand_written_discussion_in_the_results_folder_is_included(tmp_path, report):
    assert "## Discussion" not in report[0]
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    (results / "discussion.md").write_text("ASPO kept entropy higher in these runs.\n")
    text = build_report(results, tmp_path / "with.md").read_text()
    assert "## Discussion" in text and "ASPO kept entropy higher in these runs." in text
    assert text.index("## Discussion") < text.index("## Plots")


def test_a_repetition_ratio_that_never_moved_is_called_out(tmp_path, report):
    assert "was 0 at every step of every run" not in report[0]  # the fixtures have repetition > 0
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    for metrics in results.glob("*/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        for row in rows:
            if "repetition" in row["values"]:
                row["values"]["repetition"] = 0.0
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = build_report(results, tmp_path / "flat.md").read_text()
    assert "The repetition ratio (repeated word 20-grams, Archer2.0's definition) was 0 at every step" in text


def test_the_lag_sweep_points_are_seed_mean_and_range_per_loss_and_k():
    from orchestrator.experiments.plots import sweep_points
    from orchestrator.experiments.report import CellResult, group_cells
    from orchestrator.experiments.results import load_results

    groups = group_cells([CellResult(s, r) for s, r in load_results(FIXTURES)])
    points = sweep_points(groups, lambda g: g.finals("avg@2"))
    assert set(points) == {"aspo", "grpo"}
    k0, k2 = points["aspo"]  # aspo k=0: avg@2 0.5 and 0.7 over two seeds; k=2: one seed, 0.25
    assert k0[0] == 0 and k0[1] == pytest.approx(0.6) and k0[2:] == (0.5, 0.7)
    assert k2 == (2, 0.25, 0.25, 0.25)
    assert sweep_points(groups, lambda g: []) == {}


def with_evaluation(results: Path, num_prompts: int, finals: dict[str, float] | None = None) -> None:
    for path in results.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        summary["evaluation"]["num_prompts"] = num_prompts
        if finals and summary["cell"] in finals:
            summary["final_eval"]["avg@2"] = finals[summary["cell"]]
        path.write_text(json.dumps(summary))


def test_held_out_differences_are_judged_by_seed_spread_once_the_sampling_error_is_small(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    with_evaluation(results, num_prompts=5000)  # 10,000 samples per score: sampling error ~0.007
    text = build_report(results, tmp_path / "r.md").read_text()
    assert "k = 0: held-out avg@2: aspo higher by 0.200 (0.600 vs 0.400); within twice the seed sd (0.141)" in text
    assert "k = 2: held-out avg@2: aspo lower by 0.125 (0.250 vs 0.375); one seed each" in text
    with_evaluation(results, num_prompts=5000, finals={"grpo-k0-s0": 0.1, "grpo-k0-s1": 0.1})
    text = build_report(results, tmp_path / "r.md").read_text()
    assert ("k = 0: held-out avg@2: aspo higher by 0.500 (0.600 vs 0.100); more than twice the larger seed sd "
            "(0.141) over 2+ seeds and the held-out sampling error (0.006)") in text


def test_an_entropy_difference_within_the_seed_spread_neither_agrees_nor_disagrees_with_the_paper(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    for name, entropy in (("grpo-k0-s0", 1.2), ("grpo-k0-s1", 1.3)):  # aspo: 1.2 and 1.4
        path = results / name / "summary.json"
        summary = json.loads(path.read_text())
        summary["end"]["entropy"] = entropy
        path.write_text(json.dumps(summary))
    text = build_report(results, tmp_path / "r.md").read_text()
    line = next(l for l in text.splitlines() if "k = 0: end entropy" in l)
    assert "within twice the seed sd" in line and "is too small here to agree or disagree" in line


def test_the_report_rewrites_summaries_of_an_older_version_before_reading_them(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    summary = json.loads((results / "aspo-k0-s0" / "summary.json").read_text())
    assert "summary_version" not in summary  # the fixtures are version-1 summaries without cell.yaml: kept as they are
    (results / "aspo-k0-s0" / "cell.yaml").write_text(json.dumps({"run": summary["run"]}))  # JSON is YAML
    text = build_report(results, tmp_path / "r.md").read_text()
    refreshed = json.loads((results / "aspo-k0-s0" / "summary.json").read_text())
    assert refreshed["summary_version"] >= 2 and refreshed["end_window_steps"] == 1  # 20% of 4 steps
    assert "summary_version" not in json.loads((results / "grpo-k0-s0" / "summary.json").read_text())
    assert "'end' values average the last 20% of steps (1 of 4)." in text


def _group(loss: str, k: int, axes: dict, finals: list[float]):
    from orchestrator.experiments.report import CellResult, Group

    variant = "-".join(f"{n}{v}" for n, v in axes.items())
    return Group(loss, k, variant, [CellResult({"axes": {"loss": loss, "max_off_policy_steps": k, "seed": s, **axes},
                                                "final_eval": {"avg@4": f}, "end": {}}, [])
                                    for s, f in enumerate(finals)])


def test_the_sweep_figure_uses_the_other_varied_axis_when_the_lag_is_fixed():
    from orchestrator.experiments.plots import LAG_AXIS, sweep_axis, sweep_points

    groups = [_group(loss, 0, {"ppo_epochs": ep}, [f]) for loss, ep, f in
              (("aspo", 1, 0.5), ("aspo", 3, 0.75), ("grpo", 1, 0.625), ("grpo", 3, 0.875))]
    assert sweep_axis(groups) == "ppo_epochs"
    assert sweep_points(groups, lambda g: g.finals("avg@4"), "ppo_epochs") == {
        "aspo": [(1, 0.5, 0.5, 0.5), (3, 0.75, 0.75, 0.75)], "grpo": [(1, 0.625, 0.625, 0.625), (3, 0.875, 0.875, 0.875)]}
    # a varying k wins; two varying axes, or a non-numeric one, leave nothing to sweep: one point per setting
    assert sweep_axis(groups + [_group("aspo", 2, {"ppo_epochs": 1}, [0.5])]) == LAG_AXIS
    assert sweep_axis([_group("aspo", 0, {"ppo_epochs": 1, "mini_batches": 1}, [0.5]),
                       _group("aspo", 0, {"ppo_epochs": 3, "mini_batches": 4}, [0.5])]) is None
    plain = [_group("aspo", 1, {}, [0.5, 0.75]), _group("grpo", 1, {}, [0.25])]
    assert sweep_axis(plain) is None
    assert sweep_points(plain, lambda g: g.finals("avg@4"), None) == {"aspo": [(0, 0.625, 0.5, 0.75)],
                                                                      "grpo": [(1, 0.25, 0.25, 0.25)]}


def test_a_grid_with_one_lag_says_what_its_sweep_figure_is_against(tmp_path):
    from orchestrator.experiments.plots import lag_sweep_plot
    from orchestrator.experiments.report import sweep_text

    groups = [_group(loss, 0, {"ppo_epochs": ep}, [0.5]) for loss in ("aspo", "grpo") for ep in (1, 3)]
    assert sweep_text(groups) == "against ppo_epochs at k = 0, one line per loss"
    assert sweep_text([_group("aspo", 1, {}, [0.5])]) == "per setting"
    import matplotlib
    matplotlib.use("Agg")
    for name, gs in (("ep", groups), ("plain", [_group("aspo", 1, {}, [0.5]), _group("grpo", 1, {}, [0.25])])):
        assert lag_sweep_plot(gs, tmp_path / f"{name}.png", "avg@4").read_bytes().startswith(PNG_MAGIC)
