"""``aspo trainer ...``: the trainer's command line (imported by aspo/cli.py).

Heavy imports (torch, transformers, fastapi) happen inside the commands so
``aspo --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="The trainer: ASPO and baseline losses, weight publishing.")


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="TrainerSettings YAML file.")],
    port: Annotated[int | None, typer.Option(help="Override server.port (0 = no HTTP server).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override max_steps.")] = None,
) -> None:
    """Train from a rollout source, publish <run>/policy/v<N>, serve /health and /metrics."""
    from aspo.settings import SettingsError, load_settings
    from trainer.settings import TrainerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(TrainerSettings, config, max_steps=max_steps)
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    if port is not None:
        settings = settings.model_copy(update={"server": settings.server.model_copy(update={"port": port})})

    from trainer.distributed import torchrun_rank

    rank = torchrun_rank()  # None unless started by torchrun (FSDP2, see trainer/distributed.py)
    if rank:  # ranks > 0 train their shard in lock-step; rank 0 does all I/O and serves the HTTP API
        from trainer.distributed import DistributedTrainerService

        DistributedTrainerService(settings).run()
        return
    service = _build_service(settings, rank)
    if settings.server.port == 0:
        service.run()
        return
    _serve_with_api(service, settings)


def _build_service(settings, rank: int | None):  # noqa: ANN001, ANN202 - TrainerSettings -> TrainerService
    """The service with its source and announcer: the Redis bus, or a directory."""
    from trainer.service import TrainerService
    from trainer.sources import DirectorySource, FileAnnouncer

    if settings.source.type == "redis":
        from services.bus.settings import BusSettings
        from trainer.bus import BusAnnouncer, BusBridge, RedisRolloutSource

        bridge = BusBridge(BusSettings())
        source, announcer = RedisRolloutSource(bridge), BusAnnouncer(bridge)
    else:
        source = DirectorySource(settings.source.path or settings.run_dir / "rollouts")
        announcer = FileAnnouncer(settings.run_dir / "policy")
    if rank == 0:
        from trainer.distributed import DistributedTrainerService

        return DistributedTrainerService(settings, source, announcer)
    return TrainerService(settings, source, announcer)


def _serve_with_api(service, settings) -> None:  # noqa: ANN001
    """Train in a thread while uvicorn serves /health and /metrics; stop cleanly on signals."""
    import signal
    import threading

    import uvicorn

    from trainer.api import build_app

    server = uvicorn.Server(
        uvicorn.Config(build_app(service), host=settings.server.host, port=settings.server.port, log_level="warning")
    )

    def train() -> None:
        try:
            service.run()
        finally:
            server.should_exit = True

    def on_signal(signum: int, frame: object) -> None:
        # uvicorn restores these handlers and re-raises the signal after its
        # own shutdown: with the default handler that would kill the process
        # before the loop finishes its step and writes the final checkpoint.
        service.stop()
        server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    worker = threading.Thread(target=train, name="trainer-loop")
    worker.start()
    server.run()  # returns on SIGINT/SIGTERM or when the loop ends
    service.stop()
    worker.join()  # finishes the current step, checkpoints, acks
    if service.state == "failed":
        raise typer.Exit(1)


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Option("--config", "-c", help="TrainerSettings YAML file.")]) -> None:
    """Parse and validate a config file; print the resolved settings."""
    from aspo.settings import SettingsError, load_settings
    from trainer.settings import TrainerSettings

    try:
        settings = load_settings(TrainerSettings, config)
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(settings.model_dump_json(indent=2))
