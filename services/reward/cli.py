"""`aspo reward serve`: start the reward service with uvicorn.

Light at import time (aspo/cli.py imports this module): uvicorn, FastAPI and
math-verify are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="The reward service: sandboxed code execution and math verification.")


@app.callback()
def _main() -> None:
    """Sandboxed code execution and math verification over HTTP."""


def load_reward_settings(config: Path | None, **overrides: object):  # -> RewardSettings
    """Settings from a YAML file (its `reward:` section when it has one), env vars and flags."""
    from aspo.settings import load_settings, read_yaml
    from services.reward.settings import RewardSettings

    section = None
    if config is not None and "reward" in read_yaml(config):
        section = "reward"
    return load_settings(RewardSettings, config, section=section, **overrides)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="TCP port (default 8090)."),
    config: Path | None = typer.Option(None, help="YAML settings file (a `reward:` section or top-level keys)."),
    insecure_no_sandbox: bool = typer.Option(False, "--insecure-no-sandbox", help="Run code without bubblewrap (development only)."),
    api_key: str | None = typer.Option(None, envvar="ASPO_REWARD_API_KEY", help="Require this bearer key."),
) -> None:
    """Serve /run_code, /v1/verify/math, /v1/verify/code, /v1/score, /health, /metrics."""
    import uvicorn

    from aspo.settings import SettingsError
    from services.reward.api import create_app

    try:
        settings = load_reward_settings(
            config, host=host, port=port, api_key=api_key, insecure_no_sandbox=insecure_no_sandbox or None
        )
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    if settings.insecure_no_sandbox:
        typer.echo("WARNING: --insecure-no-sandbox: untrusted code runs without isolation", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
