"""The `aspo` console script: one typer app, a sub-app per component.

Each component's CLI module stays light at import time (heavy imports happen
inside the commands), so `aspo reward serve` never imports torch.
"""

from __future__ import annotations

import typer

from orchestrator.cli import app as orchestrator_app
from services.bus.cli import app as bus_app
from orchestrator.cli import run_command
from orchestrator.experiments.cli import experiment_command, report_command
from services.inference.cli import app as inference_app
from services.inference.cli import model_app
from services.reward.cli import app as reward_app
from trainer.cli import app as trainer_app

app = typer.Typer(no_args_is_help=True, help="ASPO: asynchronous RL post-training (arXiv 2510.06062).")
app.add_typer(reward_app, name="reward", help="Sandboxed code execution and math verification over HTTP.")
app.add_typer(trainer_app, name="trainer", help="The trainer: ASPO and baseline losses, weight publishing.")
app.add_typer(inference_app, name="inference", help="vLLM inference server with RL flags and live weight updates.")
app.add_typer(model_app, name="model", help="The default model (SmolLM2-135M-Instruct from a PyPI wheel).")
app.add_typer(orchestrator_app, name="orchestrator", help="The asynchronous loop and its dashboard.")
app.add_typer(bus_app, name="bus", help="The Redis bus: a private server, stream status, dead letters.")
app.command("run", help="Everything on one machine: Redis, reward, vLLM, trainer, orchestrator + dashboard.")(run_command)
app.command("experiment", help="Run a grid of `aspo run`s one after another (resumable).")(experiment_command)
app.command("report", help="Markdown report + PNG plots from stored experiment results.")(report_command)


@app.command()
def version() -> None:
    """Print the version."""
    from aspo import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
