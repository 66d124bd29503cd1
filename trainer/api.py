"""HTTP surface of the trainer service: ``GET /health`` and ``GET /metrics``.

Routes only; the state lives in ``trainer.service.TrainerService`` (fetched
from app state). Prometheus scrapes ``/metrics``; the orchestrator and
operators read ``/health`` (state, step, policy version, last step metrics).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from trainer.service import TrainerService


class HealthResponse(BaseModel):
    state: str = Field(description="starting | waiting | training | publishing | checkpointing | stopped | failed")
    step: int | None = Field(description="Trainer steps done since v0.")
    version: int | None = Field(description="Policy version the trainer's weights are at (== step).")
    optimizer_steps: int | None = Field(description="Optimizer steps done (ppo_epochs x mini_batches per step).")
    error: str | None = Field(description="Why the service failed, if it did.")
    last_metrics: dict[str, float] = Field(description="Metrics of the last trainer step.")


def build_app(service: TrainerService) -> FastAPI:
    app = FastAPI(title="aspo trainer", docs_url=None, redoc_url=None)
    app.state.service = service

    @app.get("/health", response_model=HealthResponse)
    def health(request: Request) -> Any:
        return request.app.state.service.health()

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        registry = request.app.state.service.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
