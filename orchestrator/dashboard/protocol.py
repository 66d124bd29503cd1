"""Boundary types of the dashboard: the control interface the loop implements and the /api/metrics body.

`RunStatus`, `StepRecord` and `SampleRecord` themselves live in
`orchestrator.state` (the loop's store); this module only adds what the HTTP
layer needs on top.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from orchestrator.state import StepRecord


@runtime_checkable
class RunControl(Protocol):
    """What the dashboard's control endpoints call; the orchestrator loop implements it.

    Each method only requests the change and returns at once (the loop acts
    on it at its next safe point, e.g. between groups); none may block the
    HTTP server. Calling pause twice, or resume when running, is a no-op.
    """

    def pause(self) -> None:
        """Stop admitting new generation requests; in-flight work finishes."""

    def resume(self) -> None:
        """Admit generation requests again after `pause`."""

    def stop(self) -> None:
        """End the run gracefully: drain, save a checkpoint, state -> finished."""


class MetricsResponse(BaseModel):
    """GET /api/metrics: the steps from `since` on, plus the lag histogram of the whole run."""

    steps: list[StepRecord] = Field(description="Step records with step >= since, oldest first.")
    lag_histogram_total: dict[int, int] = Field(
        description="lag -> samples trained with that lag, summed over every kept step (not only those returned)."
    )


class ControlResponse(BaseModel):
    """POST /api/{pause,resume,stop}: the action that was requested of the loop."""

    action: str
    requested: bool = True
