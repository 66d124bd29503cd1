"""The report's matplotlib figures (PNG), from condensed cell results only.

Every figure but the sweep (end values against k, or against the one other
varied axis when k is fixed) has one column per lag bound k; lines are losses (plus any
other varied axis such as ppo_epochs), the mean over seeds with the seed
min..max shaded. Per-step batch values (entropy, repetition, clip fractions)
are drawn faint with a 3-step centered moving average on top; held-out
scores are drawn as measured. The Agg backend is chosen inside `write_plots`, never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.experiments.report import Group

LINESTYLES = ("-", "--", ":", "-.")


def series(group: Group, key: str, eval_key: bool = False) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, mean, min, max) over the group's seeds of a per-step value (or eval score)."""
    by_step: dict[int, list[float]] = {}
    for cell in group.cells:
        for row in cell.rows:
            src = row.get("eval") if eval_key else row.get("values")
            if src and src.get(key) is not None:
                by_step.setdefault(int(row["step"]), []).append(float(src[key]))
    steps = sorted(by_step)
    return (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps],
            [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps])


#: Centered moving-average window drawn over per-step batch values (eval scores are drawn as measured).
SMOOTH_WINDOW = 3


def moving_average(values: list[float], window: int = SMOOTH_WINDOW) -> list[float]:
    """Centered moving average; the window shrinks at the ends so every point keeps its step."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half): i + half + 1]
        out.append(sum(part) / len(part))
    return out


def _finish(fig, axes, path: Path, title: str, bottom: float = 0.08, ncol: int = 6,
            fontsize: float | None = None) -> Path:
    """Title, one legend below the panels (every label of every panel once: a loss may be missing at
    some k), save as PNG and close."""
    import matplotlib.pyplot as plt

    labelled: dict[str, object] = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            labelled.setdefault(name, handle)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    if labelled:
        fig.legend(list(labelled.values()), list(labelled), loc="lower center", ncol=min(len(labelled), ncol),
                   frameon=False, fontsize=fontsize)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _panels(groups: list[Group], rows: list[tuple[str, str, bool]], path: Path, title: str) -> Path:
    """A grid of panels: one row per (label, key, is_eval), one column per k; lines per loss."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ks = sorted({g.k for g in groups})
    fig, axes = plt.subplots(len(rows), len(ks), figsize=(4.2 * len(ks), 3.0 * len(rows)), squeeze=False,
                             sharex=True, sharey="row")  # one y scale per row: panels compare across k
    labels = sorted({g.label for g in groups})
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    for r, (ylabel, key, is_eval) in enumerate(rows):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            drawn = 0
            for g in (g for g in groups if g.k == k):
                steps, mean, lo, hi = series(g, key, is_eval)
                if not steps:
                    continue
                drawn += 1
                if is_eval or len(steps) < SMOOTH_WINDOW:
                    ax.plot(steps, mean, marker="o", ms=3, color=colours[g.label], label=g.label)
                else:  # one batch of samples per step is noisy: faint per-step values under a moving average
                    ax.plot(steps, mean, lw=0.8, alpha=0.35, color=colours[g.label], label="_nolegend_")
                    ax.plot(steps, moving_average(mean), lw=1.8, color=colours[g.label], label=g.label)
                if len(g.cells) > 1:
                    ax.fill_between(steps, lo, hi, color=colours[g.label], alpha=0.15)
            if not drawn:
                ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"k = {k}" if r == 0 else "")
            ax.set_ylabel(ylabel if c == 0 else "")
            ax.tick_params(labelleft=True)  # shared scale, but each panel keeps its numbers
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if r == len(rows) - 1:
                ax.set_xlabel("trainer step")
    return _finish(fig, axes, path, title, bottom=0.07)


def is_weight_plot(groups: list[Group], path: Path) -> Path:
    """The paper's weight-mismatch view: mean IS weight of positive- vs negative-advantage tokens."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ks = sorted({g.k for g in groups})
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.2), squeeze=False)
    labels = sorted({g.label for g in groups})
    for c, k in enumerate(ks):
        ax = axes[0][c]
        for i, lab in enumerate(labels):
            for g in (g for g in groups if g.k == k and g.label == lab):
                for key, style, sign in (("is_weight_pos_mean", "-", "A>0"), ("is_weight_neg_mean", "--", "A<0")):
                    steps, mean, _, _ = series(g, key)
                    if steps:
                        ax.plot(steps, mean, style, color=f"C{i % 10}", label=f"{lab} {sign}")
        ax.axhline(1.0, color="grey", lw=0.8, label="_nolegend_")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("trainer step")
        ax.set_ylabel("mean IS weight" if c == 0 else "")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, axes, path, "IS weight of positive (solid) vs negative (dashed) advantage tokens",
                   bottom=0.1, ncol=8, fontsize=8)


def lag_plot(groups: list[Group], path: Path) -> Path:
    """Realised lag histograms: share of trained samples per lag, per loss, one panel per k."""
    import matplotlib.pyplot as plt

    ks = sorted({g.k for g in groups})
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.0), squeeze=False)
    for c, k in enumerate(ks):
        ax = axes[0][c]
        row = [g for g in groups if g.k == k]
        width = 0.8 / max(len(row), 1)
        for i, g in enumerate(row):
            hist = g.lag_histogram()
            total = sum(hist.values()) or 1
            lags = sorted(hist)
            ax.bar([lag + (i - (len(row) - 1) / 2) * width for lag in lags], [hist[lag] / total for lag in lags],
                   width=width, label=g.label)
        ax.set_title(f"k = {k}")
        ax.set_xlabel("lag (trainer step - policy version)")
        ax.set_ylabel("share of trained samples" if c == 0 else "")
        ax.set_xticks(range(k + 1))
        if row:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


#: The lag bound's axis name in a grid (`Group.k`).
LAG_AXIS = "max_off_policy_steps"


def _varying_axes(groups: list[Group]) -> dict[str, set]:
    """Grid axes other than loss, lag and seed whose value differs between cells -> their values."""
    from orchestrator.experiments.report import REPLICATE_AXES

    values: dict[str, set] = {}
    for g in groups:
        for c in g.cells:
            for name, v in c.summary["axes"].items():
                if name not in REPLICATE_AXES:
                    values.setdefault(name, set()).add(v)
    return {name: vs for name, vs in values.items() if len(vs) > 1}


def sweep_axis(groups: list[Group]) -> str | None:
    """What the sweep figure puts on x: the lag bound k when it varies; else the one other numeric axis
    that varies (ppo_epochs in the epochs grid), with one line per loss; else None: one point per setting."""
    if len({g.k for g in groups}) > 1:
        return LAG_AXIS
    varying = _varying_axes(groups)
    if len(varying) == 1:
        (name, vs), = varying.items()
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vs):
            return name
    return None


def sweep_points(groups: list[Group], values: Callable[[Group], list[float]], axis: str | None = LAG_AXIS
                 ) -> dict[str, list[tuple[float, float, float, float]]]:
    """label -> [(x, mean, min, max) over the group's seeds], x ascending; groups without values left out.

    x is the group's k for the lag axis, its value of `axis` for another axis (the line is then the
    loss alone), or its position among the labels for None (one point per line)."""
    labels = sorted({g.label for g in groups})
    def x_and_label(g: Group) -> tuple[float, str]:
        if axis == LAG_AXIS:
            return g.k, g.label
        if axis is not None:
            return g.cells[0].summary["axes"][axis], g.loss
        return labels.index(g.label), g.label
    points: dict[str, list[tuple[float, float, float, float]]] = {}
    for x, label, vals in sorted((*x_and_label(g), values(g)) for g in groups):
        if vals:
            points.setdefault(label, []).append((x, sum(vals) / len(vals), min(vals), max(vals)))
    return points


def lag_sweep_plot(groups: list[Group], path: Path, avg_key: str) -> Path:
    """End-of-run values against the lag bound k, one line per loss: the study in one figure.

    With a single k the x axis is the grid's other varied axis (`sweep_axis`), or the settings
    themselves when nothing else varies. Points are the mean over seeds, bars the seed min..max;
    lines are offset a little along x so that the bars of different losses do not hide each other."""
    import matplotlib.pyplot as plt

    axis = sweep_axis(groups)
    at_k = f" (k = {groups[0].k})" if groups else ""  # a single lag bound, when the x axis is not the lag
    panels = ((f"final held-out {avg_key}", lambda g: g.finals(avg_key)),
              ("entropy at the end (nats/token)", lambda g: g.ends("entropy")),
              ("train reward at the end", lambda g: g.ends("reward_mean")))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    for ax, (ylabel, values) in zip(axes[0], panels):
        points = sweep_points(groups, values, axis)
        labels = sorted(points)
        for i, lab in enumerate(labels):
            shift = (i - (len(labels) - 1) / 2) * 0.06 if axis is not None else 0.0
            xs, means, lo, hi = zip(*points[lab])
            ax.errorbar([x + shift for x in xs], means, yerr=[[m - a for m, a in zip(means, lo)],
                                                             [b - m for m, b in zip(means, hi)]],
                        marker="o", ms=4, capsize=3, color=f"C{i % 10}",
                        linestyle=LINESTYLES[i // 10 % len(LINESTYLES)], label=lab)
        if axis is None:
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
            ax.set_xlim(-0.5, max(len(labels), 1) - 0.5)
            ax.set_xlabel(f"setting{at_k}")
        else:
            ax.set_xticks(sorted({p[0] for pts in points.values() for p in pts}))
            ax.set_xlabel("lag bound k (max_off_policy_steps)" if axis == LAG_AXIS else f"{axis}{at_k}")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    against = {LAG_AXIS: "against the lag bound", None: "per setting"}.get(axis, f"against {axis}")
    return _finish(fig, axes, path, f"End of run {against} (mean over seeds, bars: seed min..max)")


def write_plots(groups: list[Group], out_dir: Path, eval_keys: tuple[str, str]) -> dict[str, Path]:
    """All figures into out_dir; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    avg, pas = eval_keys
    return {
        "lag_sweep": lag_sweep_plot(groups, out_dir / "lag_sweep.png", avg),
        "accuracy": _panels(groups, [(f"held-out {avg}", avg, True), (f"held-out {pas}", pas, True)],
                            out_dir / "accuracy.png", "Held-out accuracy vs step"),
        "entropy_repetition": _panels(groups, [("entropy (nats/token)", "entropy", False),
                                               ("repetition ratio", "repetition", False)],
                                      out_dir / "entropy_repetition.png", "Entropy and repetition vs step"),
        "is_weights": is_weight_plot(groups, out_dir / "is_weights.png"),
        "clip_fractions": _panels(groups, [("clip fraction, upper", "clipfrac_upper", False),
                                           ("clip fraction, lower", "clipfrac_lower", False)],
                                  out_dir / "clip_fractions.png", "Clip fractions vs step"),
        "lag_histograms": lag_plot(groups, out_dir / "lag_histograms.png"),
    }
