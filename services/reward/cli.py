"""`aspo reward serve`: start the reward service with uvicorn.

Light at import time (aspo/cli.py imports this module): uvicorn, FastAPI and
math-verify are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def load_sandbox_settings(config: Path | None, overrides: dict[str, object]):  # -> SandboxSettings
    """Sandbox settings from the same YAML's `sandbox:` section (if any), env vars and our overrides."""
    from aspo.settings import load_settings, read_yaml
    from sandbox.settings import SandboxSettings

    has_section = config is not None and "sandbox" in read_yaml(config)
    return load_settings(SandboxSettings, config if has_section else None, section="sandbox", **overrides)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8090).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings file (a `reward:` section or top-level keys).")] = None,
    insecure_no_sandbox: Annotated[
        bool, typer.Option("--insecure-no-sandbox", help="Run code without bubblewrap (development only).")
    ] = False,
    api_key: Annotated[str | None, typer.Option(help="Require this bearer key (or env ASPO_REWARD_API_KEY).")] = None,
) -> None:
    """Serve /run_code, /v1/verify/math, /v1/verify/code, /v1/score, /health, /metrics."""
    import uvicorn

    from aspo.settings import SettingsError
    from services.reward.api import create_app
    from services.reward.serving import RewardService

    try:
        settings = load_reward_settings(
            config, host=host, port=port, api_key=api_key, insecure_no_sandbox=insecure_no_sandbox or None
        )
        service = RewardService(settings)
        sandbox_settings = load_sandbox_settings(config, service.sandbox_overrides())
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    if settings.insecure_no_sandbox:
        typer.echo("WARNING: --insecure-no-sandbox: untrusted code runs without isolation", err=True)
    service.sandbox_settings = sandbox_settings
    app = create_app(settings, service)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    app()
