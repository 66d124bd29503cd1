"""Settings of the dashboard server: one pydantic-settings model, env prefix ASPO_DASHBOARD_.

Read by whoever starts the dashboard (the orchestrator's run command) through
`aspo.settings.load_settings`; defaults live here and only here.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    """How the dashboard listens and whether its control endpoints are enabled."""

    model_config = SettingsConfigDict(env_prefix="ASPO_DASHBOARD_", frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Serve the dashboard during `aspo run`.")
    host: str = Field(
        "127.0.0.1",
        description="Interface to listen on. The read endpoints need no token: bind 0.0.0.0 only on a trusted network.",
    )
    port: int = Field(8265, ge=0, le=65535, description="TCP port (0 = pick a free one).")
    api_token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token for POST /api/pause|resume|stop. Unset: those answer 503 (control disabled).",
    )

    @field_validator("api_token")
    @classmethod
    def _not_placeholder(cls, token: str | None) -> str | None:
        if token is not None and ("changeme" in token.lower().replace("-", "") or len(set(token)) < 8):
            raise ValueError("api_token looks like a placeholder: set a random secret (e.g. `openssl rand -hex 24`)")
        return token
