"""The `aspo` console script: one typer app, a sub-app per component.

Each component's CLI module stays light at import time (heavy imports happen
inside the commands), so `aspo reward serve` never imports torch.
"""

from __future__ import annotations

import typer

from services.reward.cli import app as reward_app
from trainer.cli import app as trainer_app

app = typer.Typer(no_args_is_help=True, help="ASPO: asynchronous RL post-training (arXiv 2510.06062).")
app.add_typer(reward_app, name="reward", help="Sandboxed code execution and math verification over HTTP.")
app.add_typer(trainer_app, name="trainer", help="The trainer: ASPO and baseline losses, weight publishing.")


@app.command()
def version() -> None:
    """Print the version."""
    from aspo import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
