"""`aspo orchestrator ...` and `aspo run` (typer). Heavy imports stay inside commands."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file.")]


@app.command("serve")
def serve_cmd(
    config: ConfigOpt = None,
    section: Annotated[Optional[str], typer.Option(help="Read this top-level section of the YAML file.")] = None,
    loss: Annotated[str, typer.Option(help="Loss name shown on the dashboard.")] = "aspo",
) -> None:
    """Run the orchestrator loop and its dashboard (needs Redis: REDIS_URL)."""
    from aspo.settings import SettingsError, load_settings
    from orchestrator.server import serve
    from orchestrator.settings import OrchestratorSettings
    from services.bus.settings import BusSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = load_settings(OrchestratorSettings, config, section)
        bus = load_settings(BusSettings, config, "bus") if config and section else BusSettings()
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(serve(settings, bus, loss_name=loss))


def _progress_line(status: dict, last: dict) -> str:
    values = last.get("values", {})
    reward = values.get("reward_mean")
    lag = values.get("policy_lag_mean")
    eta = status.get("eta_s")
    parts = [
        f"step {status['trainer_step']}/{status['total_steps']}",
        f"vLLM v{status['policy_version']}",
        f"reward {reward:.3f}" if reward is not None else "reward -",
        f"lag {lag:.2f} (k={status['max_off_policy_steps']})" if lag is not None else f"k={status['max_off_policy_steps']}",
        f"gen {status['generation_tokens_per_s']:.0f} tok/s",
        f"train {status['training_tokens_per_s']:.0f} tok/s",
        f"ETA {eta / 60:.1f} min" if eta else "ETA -",
    ]
    return " | ".join(parts)


def run_command(
    config: ConfigOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Override run.run_dir (resume by reusing one).")] = None,
) -> None:
    """Everything on one machine: Redis, reward service, vLLM, trainer, orchestrator + dashboard.

    Ctrl-C or SIGTERM stops every component cleanly (exit 130 / 143)."""
    from rich.console import Console

    from aspo.settings import SettingsError
    from aspo.signals import deferred_signals, interrupt_on_signals
    from orchestrator.launcher import Launcher
    from orchestrator.runconfig import RunConfig

    console = Console()
    try:
        cfg = RunConfig.load(config)
        if run_dir is not None:
            cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": run_dir})})
    except SettingsError as err:
        console.print(f"[red]{err}")
        raise typer.Exit(2) from None
    launcher = Launcher(cfg)
    with interrupt_on_signals() as received:  # also under `nohup aspo run &` and on `kill PID`
        try:
            code = _run_until_finished(launcher, console)
        except KeyboardInterrupt:
            how = "Ctrl-C" if received.signum in (None, signal.SIGINT) else signal.Signals(received.signum).name
            console.print(f"[yellow]stopping ({how}): orchestrator, trainer, reward, vLLM, Redis")
            code = received.exit_code()
        finally:
            with deferred_signals():
                launcher.stop()
    raise typer.Exit(code)


def _run_until_finished(launcher, console) -> int:  # noqa: ANN001 - Launcher, rich Console
    """Start every component, show the live line until the orchestrator finishes; 0 or 1."""
    import httpx
    from rich.live import Live

    try:
        launcher.start(say=console.print)
        with Live(console=console, refresh_per_second=2) as live:
            while not launcher.finished():
                launcher.check_children()
                try:
                    status = launcher.status()
                    steps = httpx.get(f"{launcher.dashboard_url}/api/metrics", params={"since": max(status["trainer_step"] - 1, 0)}, timeout=5).json()["steps"]
                    last = next((s for s in reversed(steps) if "reward_mean" in s.get("values", {})), {})
                    live.update(f"{_progress_line(status, last)}\ndashboard: {launcher.dashboard_url}")
                except httpx.HTTPError:
                    pass  # the orchestrator is finishing; the loop condition decides
                time.sleep(1.0)
        console.print(f"[green]run finished: {launcher.run_dir}")
    except RuntimeError as err:
        console.print(f"[red]{err}")
        return 1
    return 0
