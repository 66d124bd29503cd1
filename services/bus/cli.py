"""`aspo bus ...`: run the private Redis, and inspect or stop it.

Light at import time (``aspo/cli.py`` can import this module): redis and the
bus modules are imported inside the commands.

* ``aspo bus redis --run-dir RUN`` starts (or adopts) the run's private
  redis-server, prints ``REDIS_URL=...`` and holds it until Ctrl-C/SIGTERM.
* ``aspo bus status [--run-dir RUN]`` prints backlog, pending entries per
  consumer, dead letters, ledger size and the latest policy version as JSON.
* ``aspo bus dead-letters`` lists dead letters with their reasons.
* ``aspo bus stop --run-dir RUN`` stops a private server left running (e.g.
  by a crashed orchestrator).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="The bus: Redis streams between components.")

RunDir = Annotated[Path | None, typer.Option(help="Run directory whose private Redis to use.")]
Config = Annotated[Path | None, typer.Option(help="YAML settings file (a `bus:` section or top-level keys).")]


@app.callback()
def _main() -> None:
    """Redis streams between orchestrator, trainer, inference and dashboard."""


def load_bus_settings(config: Path | None):  # -> BusSettings
    from aspo.settings import load_settings, read_yaml
    from services.bus.settings import BusSettings

    section = "bus" if config is not None and "bus" in read_yaml(config) else None
    return load_settings(BusSettings, config, section=section)


def _resolve_url(run_dir: Path | None, settings) -> str:
    from services.bus.redis_server import find_private

    if settings.url:
        return settings.url
    if run_dir is None:
        raise typer.BadParameter("set REDIS_URL (or ASPO_BUS_URL) or pass --run-dir")
    handle = find_private(run_dir)
    if handle is None:
        raise typer.BadParameter(f"no private Redis is running for {run_dir}")
    return handle.url


@app.command("redis")
def redis_cmd(run_dir: Annotated[Path, typer.Option(help="Run directory (data in RUN/redis).")],
              config: Config = None) -> None:
    """Start (or adopt) the run's private redis-server and hold it until Ctrl-C."""
    from services.bus.redis_server import ensure_redis

    settings = load_bus_settings(config)
    if settings.url:
        raise typer.BadParameter(f"REDIS_URL is set ({settings.url}): nothing to start")
    handle = ensure_redis(run_dir, settings)
    typer.echo(f"REDIS_URL={handle.url}", err=False)
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"]:
            signal.pause()
    finally:
        handle.close()


@app.command()
def status(run_dir: RunDir = None, config: Config = None) -> None:
    """Print the bus's state as JSON."""
    from services.bus.status import bus_status
    from services.bus.transport import connect

    settings = load_bus_settings(config)
    url = _resolve_url(run_dir, settings)

    async def run() -> str:
        r = connect(url)
        try:
            return (await bus_status(r, settings, url)).model_dump_json(indent=2)
        finally:
            await r.aclose()

    typer.echo(asyncio.run(run()))


@app.command("dead-letters")
def dead_letters_cmd(run_dir: RunDir = None, config: Config = None,
                     count: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
                     ) -> None:
    """List the rollout stream's dead letters (why each was set aside)."""
    from services.bus.status import dead_letters
    from services.bus.transport import connect

    settings = load_bus_settings(config)
    url = _resolve_url(run_dir, settings)

    async def run() -> list[dict[str, str]]:
        r = connect(url)
        try:
            return await dead_letters(r, settings.rollout_stream, count)
        finally:
            await r.aclose()

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


@app.command()
def stop(run_dir: Annotated[Path, typer.Option(help="Run directory of the private Redis.")]) -> None:
    """Stop the run's private redis-server (SHUTDOWN, AOF fsynced)."""
    from services.bus.redis_server import stop_private

    typer.echo("stopped" if stop_private(run_dir) else "no private Redis running there")


if __name__ == "__main__":
    app()
