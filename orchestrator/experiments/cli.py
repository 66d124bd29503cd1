"""`aspo experiment` and `aspo report` (typer commands; registered in aspo/cli.py).

Heavy imports (matplotlib, the launcher) stay inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def experiment_command(
    grid: Annotated[Path, typer.Option("--grid", "-g", help="Grid YAML (configs/experiments/*.yaml).")],
    results: Annotated[Path | None, typer.Option(help="Results folder; default results/<grid name>.")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these cells (repeatable).")] = None,
    keep_artifacts: Annotated[bool, typer.Option(help="Keep checkpoints, policy dirs and Redis data of finished cells.")] = False,
    wipe_changed: Annotated[bool, typer.Option(help="Delete and rerun cells whose stored cell.yaml differs from the grid.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the cells and their states; run nothing.")] = False,
) -> None:
    """Run a grid of `aspo run`s one after another (resumable: rerun the same command to continue)."""
    from rich.console import Console

    from aspo.settings import SettingsError
    from orchestrator.experiments.grid import expand, load_grid
    from orchestrator.experiments.runner import GridRunner, plan

    console = Console()
    try:
        spec, base = load_grid(grid)
        folder = results or Path("results") / spec.name
        cells = expand(spec, base, folder)
        if only:
            unknown = sorted(set(only) - {c.name for c in cells})
            if unknown:
                raise SettingsError(f"--only: no such cell {unknown}; cells: {', '.join(c.name for c in cells)}")
            cells = [c for c in cells if c.name in only]
        if dry_run:
            for i, (cell, state, reason) in enumerate(plan(cells, folder), 1):
                console.print(f"{i:3d}/{len(cells)} {cell.name:<32} {state:<12} {reason}")
            raise typer.Exit(0)
        code = GridRunner(spec, cells, folder, keep_artifacts=keep_artifacts, wipe_changed=wipe_changed,
                          console=console, grid_file=grid).run()
    except SettingsError as err:
        console.print(f"[red]{err}")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def report_command(
    results: Annotated[Path, typer.Argument(help="A results folder written by `aspo experiment`.")],
    out: Annotated[Path, typer.Option(help="Markdown file; plots go to <out without .md>/.")] = Path("docs/experiments.md"),
) -> None:
    """Build the markdown report and PNG plots from stored results (no run needed)."""
    from orchestrator.experiments.report import ReportError, build_report

    try:
        path = build_report(results, out)
    except ReportError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"report: {path}")


def main() -> None:
    """`python -m orchestrator.experiments.cli experiment|report ...`: the same commands without
    the `aspo` console script (until/unless they are registered there)."""
    app = typer.Typer(no_args_is_help=True)
    app.command("experiment")(experiment_command)
    app.command("report")(report_command)
    app()


if __name__ == "__main__":
    main()
