"""`aspo report`: the markdown report of a results folder, from stored files only.

Cells are grouped by (loss, k, other varied axes); seeds are the replicates.
Every sentence of the findings is computed from the data: which loss kept
entropy highest at each k, whether ASPO beat GRPO by more than the seed
spread, how much lag was actually realised, what the IS weights of positive-
and negative-advantage tokens did (the paper's weight-mismatch argument,
arXiv 2510.06062 Sec. 3), and what the data cannot show. Results that
contradict the paper are stated as such.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.experiments.grid import cell_name, combinations
from orchestrator.experiments.results import (
    END_FRACTION,
    ResultsError,
    load_results,
    refresh_summary,
)

REPLICATE_AXES = {"loss", "max_off_policy_steps", "seed"}
#: Hand-written reading of the results, kept in the results folder and included in the report.
DISCUSSION_FILE = "discussion.md"


class ReportError(ValueError):
    """The results folder cannot be reported on; the message says why."""


@dataclass
class CellResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


@dataclass
class Group:
    loss: str
    k: int
    variant: str
    cells: list[CellResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.loss} {self.variant}".strip()

    def finals(self, key: str) -> list[float]:
        return [float(c.summary["final_eval"][key]) for c in self.cells
                if c.summary.get("final_eval") and c.summary["final_eval"].get(key) is not None]

    def ends(self, key: str) -> list[float]:
        return [float(c.summary["end"][key]) for c in self.cells if c.summary["end"].get(key) is not None]

    def over_steps(self, key: str) -> list[float]:
        return [float(v) for c in self.cells if (v := c.summary["mean_over_steps"].get(key)) is not None]

    def lag_histogram(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for c in self.cells:
            for lag, n in c.summary["lag_histogram"].items():
                total[int(lag)] = total.get(int(lag), 0) + int(n)
        return dict(sorted(total.items()))


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def sd(xs: list[float]) -> float | None:
    """Sample standard deviation over seeds; None with fewer than two."""
    return statistics.stdev(xs) if len(xs) >= 2 else None


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    s = sd(xs)
    return f"{fmt(mean(xs))} ± {fmt(s)}" if s is not None else f"{fmt(mean(xs))}"


def group_cells(cells: list[CellResult]) -> list[Group]:
    groups: dict[tuple[str, int, str], Group] = {}
    for cell in cells:
        s = cell.summary
        others = {k: v for k, v in s["axes"].items() if k not in REPLICATE_AXES}
        key = (str(s["run"].get("loss")), int(s["run"].get("max_off_policy_steps", 0)), cell_name(others) if others else "")
        groups.setdefault(key, Group(*key)).cells.append(cell)
    return [groups[k] for k in sorted(groups)]


def eval_keys(cells: list[CellResult]) -> tuple[str, str]:
    for c in cells:
        fe = c.summary.get("final_eval") or {}
        avg = next((k for k in fe if k.startswith("avg@")), None)
        pas = next((k for k in fe if k.startswith("pass@")), None)
        if avg and pas:
            return avg, pas
    return "avg@k", "pass@k"


# ---------------------------------------------------------------- findings
def entropy_findings(groups: list[Group]) -> list[str]:
    out = []
    for k in sorted({g.k for g in groups}):
        row = [(round(mean(g.ends("entropy")), 3), g.label) for g in groups if g.k == k and g.ends("entropy")]
        if len(row) < 2:
            continue
        row.sort(reverse=True)
        if row[0][0] == row[-1][0]:
            out.append(f"At k = {k}, every loss ended with the same entropy ({fmt(row[0][0])} nats/token, "
                       "to 3 decimals).")
        else:
            out.append(f"At k = {k}, {row[0][1]} ended with the highest entropy ({fmt(row[0][0])} nats/token) "
                       f"and {row[-1][1]} the lowest ({fmt(row[-1][0])}).")
    return out


@dataclass
class Comparison:
    diff: float              # a - b, rounded to 3 decimals
    text: str
    distinguishable: bool | None  # None: one seed each and above the sampling error, so unknown


def sampling_error(groups: list[Group], key: str, p: float) -> float | None:
    """Binomial standard error of one held-out score near p: n = prompts x samples for avg@k, prompts
    for pass@k. Approximate: correlated samples of one prompt make the real error larger, the held-out
    set's shared sampling seeds make differences between similar runs less noisy."""
    ev = next((c.summary.get("evaluation") for g in groups for c in g.cells if c.summary.get("evaluation")), None)
    if not ev or not ev.get("num_prompts"):
        return None
    n = int(ev["num_prompts"]) * (int(ev.get("k") or 1) if key.startswith("avg@") else 1)
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else None


def pairwise(groups: list[Group], a: str, b: str, key: str, finals: bool) -> list[Comparison]:
    """Loss a against loss b at each k (same variant), judged against the seed spread and, for held-out
    scores (`finals`), the binomial sampling error of the scores; else end-of-run values."""
    out = []
    for ga in (g for g in groups if g.loss == a):
        gb = next((g for g in groups if g.loss == b and g.k == ga.k and g.variant == ga.variant), None)
        if gb is None:
            continue
        xa, xb = (ga.finals(key), gb.finals(key)) if finals else (ga.ends(key), gb.ends(key))
        if not xa or not xb:
            continue
        ma, mb = mean(xa), mean(xb)
        diff = round(ma - mb, 3)
        spreads = [s for s in (sd(xa), sd(xb)) if s is not None]
        errors = [sampling_error(groups, key, m) for m in (ma, mb)] if finals else []
        sampling = math.hypot(*errors) if errors and None not in errors else None
        where = f"k = {ga.k}" + (f", {ga.variant}" if ga.variant else "")
        verdict = f"{a} {'higher' if diff > 0 else 'lower'} by {fmt(abs(diff))}" if diff else f"{a} equal to {b}"
        distinguishable: bool | None
        if not diff:
            note, distinguishable = "to 3 decimals", False
        elif sampling is not None and abs(diff) <= 2 * sampling:
            note = (f"within twice the held-out sampling error of the difference ({fmt(sampling)}, binomial): "
                    "not distinguishable")
            distinguishable = False
        elif not spreads:
            note, distinguishable = "one seed each, so the seed spread is unknown and this difference may be noise", None
        elif abs(diff) > 2 * max(spreads):
            note = f"more than twice the larger seed sd ({fmt(max(spreads))}) over {min(len(xa), len(xb))}+ seeds"
            if sampling is not None:
                note += f" and the held-out sampling error ({fmt(sampling)})"
            distinguishable = True
        else:
            note, distinguishable = f"within twice the seed sd ({fmt(max(spreads))}): not distinguishable", False
        label = f"held-out {key}" if finals else f"end {key}"
        out.append(Comparison(diff, f"{where}: {label}: {verdict} ({fmt(ma)} vs {fmt(mb)}); {note}.",
                              distinguishable))
    return out


def paper_verdict(c: Comparison) -> str:
    """How an ASPO - GRPO entropy difference stands against the paper (ASPO keeps entropy higher)."""
    if c.diff == 0:
        return "neither agrees nor contradicts it"
    if c.distinguishable is False:
        return f"is too small here to agree or disagree (its sign {'agrees' if c.diff > 0 else 'disagrees'})"
    direction = "agrees" if c.diff > 0 else "contradicts it"
    return direction if c.distinguishable else f"{direction}, on one seed each"


def lag_findings(groups: list[Group]) -> list[str]:
    out = []
    for k in sorted({g.k for g in groups}):
        hist: dict[int, int] = {}
        for g in (g for g in groups if g.k == k):
            for lag, n in g.lag_histogram().items():
                hist[lag] = hist.get(lag, 0) + n
        total = sum(hist.values())
        if not total:
            continue
        realised = sum(lag * n for lag, n in hist.items()) / total
        at_bound = hist.get(k, 0) / total
        out.append(f"k = {k}: realised mean lag {fmt(realised, 2)} steps; {100 * at_bound:.0f}% of trained samples "
                   f"were at the bound, max realised lag {max(hist)}.")
    return out


def is_weight_findings(groups: list[Group]) -> list[str]:
    out = []
    for loss in sorted({g.loss for g in groups}):
        pos = [x for g in groups if g.loss == loss for x in g.over_steps("is_weight_pos_mean")]
        neg = [x for g in groups if g.loss == loss for x in g.over_steps("is_weight_neg_mean")]
        if pos and neg:
            rel = "above" if mean(pos) > mean(neg) else "below" if mean(pos) < mean(neg) else "equal to"
            out.append(f"{loss}: positive-advantage tokens weighted {fmt(mean(pos))} on average, {rel} "
                       f"negative-advantage tokens ({fmt(mean(neg))}).")
    return out


def findings(groups: list[Group], avg_key: str) -> list[str]:
    lines = ["### What the data shows", ""]
    ent = entropy_findings(groups)
    lines += [f"- {s}" for s in ent] or ["- Fewer than two losses per k: no entropy comparison."]
    acc = pairwise(groups, "aspo", "grpo", avg_key, finals=True)
    lines += [f"- ASPO vs GRPO, {c.text}" for c in acc]
    for c in pairwise(groups, "aspo", "grpo", "entropy", finals=False):
        lines.append(f"- ASPO vs GRPO, {c.text} The paper reports ASPO keeping entropy higher than GRPO; "
                     f"this comparison {paper_verdict(c)}.")
    if not acc:
        lines.append("- No ASPO/GRPO pair with held-out scores: no accuracy comparison.")
    lines += [f"- Lag, {s}" for s in lag_findings(groups)]
    lines += [f"- IS weights, {s}" for s in is_weight_findings(groups)]
    return lines


def held_out_limit(groups: list[Group], avg_key: str) -> str:
    """How coarse the held-out scores are: their binomial sampling error at the scores reached."""
    line = ("- One task family and one held-out set; the held-out scores are binary per sample, so a small "
            "held-out set moves in coarse steps.")
    finals = [x for g in groups for x in g.finals(avg_key)]
    err = sampling_error(groups, avg_key, mean(finals)) if finals else None
    if not err:
        return line
    return (f"{line} At the mean final {avg_key} ({fmt(mean(finals))}) one score's binomial standard error is "
            f"{fmt(err)}, so two runs' scores must differ by more than {fmt(2 * math.sqrt(2) * err)} to be told "
            "apart; the ASPO-GRPO comparisons above are judged so. This is approximate both ways: samples of one "
            "prompt are correlated (the real error is larger), and every run draws its held-out samples with the "
            "same seeds (differences between similar policies are less noisy).")


def limits(groups: list[Group], cells: list[CellResult], avg_key: str) -> list[str]:
    seeds = sorted({len(g.cells) for g in groups})
    steps = sorted({int(c.summary["total_steps"]) for c in cells})
    samples = sorted({int(c.summary["samples_trained"]) for c in cells})
    model = {str(c.summary["run"].get("model") or "SmolLM2-135M-Instruct") for c in cells}
    return [
        "### What it cannot show", "",
        (f"- Seeds per setting: {', '.join(map(str, seeds))}. With fewer than 3 seeds, spreads are rough and "
         "differences within them are noise, whatever their sign."),
        (f"- Runs are short ({', '.join(map(str, steps))} trainer steps, {', '.join(map(str, samples))} trained "
         f"samples) on a small model ({', '.join(sorted(model))}): entropy collapse and repetition in the paper "
         "build up over hundreds of steps of much larger models; absence here is not evidence of absence there."),
        held_out_limit(groups, avg_key),
        ("- Lag is what the system realised, not what k allows: a fast trainer (or a slow generator) keeps lag "
         "below the bound, see the lag histograms."),
        *repetition_limit(cells),
    ]


def repetition_limit(cells: list[CellResult]) -> list[str]:
    """A plain statement when the repetition ratio never moved off 0 (short answers have no 20-grams)."""
    values = [float(r["values"]["repetition"]) for c in cells for r in c.rows if "repetition" in r.get("values", {})]
    if not values or max(values) > 0:
        return []
    lengths = [v for c in cells if (v := c.summary["end"].get("response_length")) is not None]
    length = f" (mean response length at the end: {fmt(mean(lengths), 1)} tokens)" if lengths else ""
    return [(f"- The repetition ratio (repeated word 20-grams, Archer2.0's definition) was 0 at every step of every "
             f"run{length}: answers this short have almost no 20-word spans, so this study cannot show repetition "
             "effects either way.")]


# ---------------------------------------------------------------- markdown
def table(groups: list[Group], avg_key: str, pass_key: str) -> list[str]:
    head = (f"| loss | k | variant | seeds | final {avg_key} | final {pass_key} | entropy (end) | repetition (end) "
            "| reward (end) | realised lag | IS weight A>0 | IS weight A<0 |")
    lines = [head, "|" + "---|" * 12]
    for g in groups:
        hist = g.lag_histogram()
        n = sum(hist.values())
        lag = sum(k * v for k, v in hist.items()) / n if n else None
        lines.append(
            f"| {g.loss} | {g.k} | {g.variant or '–'} | {len(g.cells)} | {mean_sd(g.finals(avg_key))} | "
            f"{mean_sd(g.finals(pass_key))} | {mean_sd(g.ends('entropy'))} | {mean_sd(g.ends('repetition'))} | "
            f"{mean_sd(g.ends('reward_mean'))} | {fmt(lag, 2)} | {fmt(mean(g.over_steps('is_weight_pos_mean')))} | "
            f"{fmt(mean(g.over_steps('is_weight_neg_mean')))} |")
    return lines


def completeness(results: Path, cells: list[CellResult]) -> list[str]:
    """A line naming the grid's cells that have no results yet (none when the grid is complete or unknown)."""
    index = results / "grid.json"
    try:
        axes = json.loads(index.read_text())["spec"]["axes"]
        planned = [cell_name(values) for values in combinations(axes)]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    done = {str(c.summary["cell"]) for c in cells}
    missing = [name for name in planned if name not in done]
    if not missing:
        return [f"The grid is complete: all {len(planned)} cells."]
    return [(f"**Partial grid: {len(planned) - len(missing)} of {len(planned)} cells finished.** Not yet run (or "
            f"not finished): {', '.join(missing)}. Findings below cover only the finished cells; rerun "
            "`aspo experiment` with the same grid to go on, then rebuild this report.")]


def rerun_line(results: Path, cells: list[CellResult]) -> list[str]:
    """The one command that reruns a cell of this grid into a scratch folder (committed results untouched)."""
    try:
        index = json.loads((results / "grid.json").read_text())
    except (OSError, ValueError):
        return []
    grid_file = index.get("grid_file") or f"configs/experiments/{index.get('name', results.name)}.yaml"
    cell = str(cells[-1].summary["cell"])
    return [(f"Rerun any cell into a scratch folder, leaving these results as they are: `aspo experiment --grid "
             f"{grid_file} --only {cell} --results results/rerun` (any cell name from the table at the end; "
             "the run config of each cell is also kept as `<cell>/cell.yaml`).")]


def sweep_text(groups: list[Group]) -> str:
    """How the sweep figure is laid out, in words (see `plots.sweep_axis`)."""
    from orchestrator.experiments.plots import LAG_AXIS, sweep_axis

    axis = sweep_axis(groups)
    if axis == LAG_AXIS:
        return "against the lag bound k, one line per loss"
    if axis is not None:
        return f"against {axis} at k = {groups[0].k}, one line per loss"
    return "per setting"


def discussion(results: Path) -> list[str]:
    """`RESULTS_DIR/discussion.md`, written by hand and kept with the results, under its own heading."""
    path = results / DISCUSSION_FILE
    if not path.is_file() or not path.read_text().strip():
        return []
    return ["## Discussion", "", (f"*Written by hand from the data above ({DISCUSSION_FILE} in the results "
            "folder); the sections above are computed.*"), "", path.read_text().strip(), ""]


def eval_text(final: dict[str, Any] | None) -> str:
    if not final:
        return "–"
    scores = ", ".join(f"{k} {fmt(v)}" for k, v in final.items() if k != "step")
    return f"{scores} (step {final.get('step')})"


def held_out_text(summary: dict[str, Any]) -> str:
    ev = summary.get("evaluation") or {}
    if not ev:
        return "The held-out set is the same for every run."
    return (f"Held-out evaluation (the same prompts for every run): {ev.get('num_prompts', '?')} prompts x "
            f"{ev.get('k', '?')} samples at temperature {ev.get('temperature', '?')}, every "
            f"{ev.get('every_steps', '?')} steps and at the end, after the initial policy (step 0) where that "
            "was recorded.")


def end_window(cells: list[CellResult]) -> str:
    windows = sorted({int(c.summary.get("end_window_steps") or 0) for c in cells})
    return f"{' or '.join(map(str, windows))} of {cells[0].summary.get('total_steps')}"


def build_report(results: Path, out: Path) -> Path:
    """Write `out` (markdown) and its PNGs under `<out stem>/`; returns the markdown path."""
    from orchestrator.experiments.plots import write_plots

    if not results.is_dir():
        raise ReportError(f"results folder {results} does not exist")
    try:
        for summary in results.glob("*/summary.json"):  # derived data: summaries of an older version are rewritten
            refresh_summary(summary.parent)
        cells = [CellResult(s, r) for s, r in load_results(results)]
    except ResultsError as err:
        raise ReportError(str(err)) from None
    if not cells:
        raise ReportError(f"{results}: no finished cells (no */summary.json); run `aspo experiment` first")
    groups = group_cells(cells)
    avg_key, pass_key = eval_keys(cells)
    plot_dir = out.with_suffix("")
    plots = write_plots(groups, plot_dir, (avg_key, pass_key))
    rel = lambda p: os.path.relpath(p, out.parent)
    s0 = cells[0].summary["run"]
    samples = s0.get("total_steps", 0) * s0.get("group_size", 0) * s0.get("groups_per_step", 0)
    lines = [
        "# Experiments: ASPO against baselines under asynchronous lag", "",
        f"Generated by `aspo report {results}` from {len(cells)} finished runs; rebuild with the same command.",
        *completeness(results, cells), *rerun_line(results, cells),
        (f"Each run: {s0.get('total_steps')} trainer steps x {s0.get('groups_per_step')} groups x "
         f"{s0.get('group_size')} samples = {samples} rollout samples of at most {s0.get('max_tokens')} tokens; "
         "every run shares this budget and the same held-out set. Values are mean ± sample sd over seeds "
         f"(no ± with one seed); 'end' values average the last {END_FRACTION:.0%} of steps "
         f"({end_window(cells)})."), held_out_text(cells[0].summary), "",
        "## Final table", "", *table(groups, avg_key, pass_key), "",
        *findings(groups, avg_key), "", *limits(groups, cells, avg_key), "", *discussion(results),
        "## Plots", "",
        (f"The study in one figure: final held-out {avg_key}, entropy and train reward at the end of each run "
         f"{sweep_text(groups)} (mean over seeds; bars: seed min..max):"), "",
        f"![lag sweep]({rel(plots['lag_sweep'])})", "",
        f"Held-out accuracy ({avg_key}, {pass_key}) vs step, one panel per lag bound k:", "",
        f"![accuracy]({rel(plots['accuracy'])})", "",
        ("Entropy and repetition ratio vs step (thin: per step, one batch each; thick: 3-step moving "
         "average):"), "", f"![entropy and repetition]({rel(plots['entropy_repetition'])})", "",
        "The weight-mismatch view (paper Sec. 3): mean IS weight of positive- vs negative-advantage tokens:", "",
        f"![IS weights]({rel(plots['is_weights'])})", "",
        "Clip fractions (thin: per step; thick: 3-step moving average):", "", f"![clip fractions]({rel(plots['clip_fractions'])})", "",
        "Realised lag histograms:", "", f"![lag histograms]({rel(plots['lag_histograms'])})", "",
        "## Runs", "", "| cell | final eval | wall (min) | attempts |", "|---|---|---|---|",
        *[f"| {c.summary['cell']} | {eval_text(c.summary.get('final_eval'))} | "
          f"{fmt(c.summary.get('wall_s', 0) / 60, 1)} | {c.summary.get('attempts')} |" for c in cells],
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
