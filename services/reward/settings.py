"""Settings of the reward service: one pydantic-settings model, env prefix ASPO_REWARD_.

Loaded by `cli.py` through `aspo.settings.load_settings` (YAML < env < flags).
Defaults live here and only here.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RewardSettings(BaseSettings):
    """Everything the reward service can be configured with."""

    model_config = SettingsConfigDict(env_prefix="ASPO_REWARD_", frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8090, ge=0, le=65535, description="TCP port (0 = pick a free one).")
    api_key: str | None = Field(
        None, min_length=8, description="If set, every endpoint but /health and /metrics needs `Authorization: Bearer <key>`."
    )
    max_code_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="Largest accepted program (UTF-8 bytes); more gives 413.")
    max_stdin_bytes: int = Field(16 << 20, ge=1024, le=256 << 20, description="Largest stdin / test input / files payload of one run; more gives 413.")
    max_body_bytes: int = Field(64 << 20, ge=4096, le=1 << 30, description="Largest request body; more gives 413 before it is parsed.")
    max_tests: int = Field(1000, ge=1, le=100_000, description="Most test cases in one code verification.")
    max_batch_items: int = Field(4096, ge=1, le=100_000, description="Most items in one /v1/score request.")
    max_concurrency: int = Field(64, ge=1, le=10_000, description="Requests worked on at once; the rest wait in the queue.")
    max_queue: int = Field(512, ge=0, le=100_000, description="Requests allowed to wait; beyond it the service answers 503 with Retry-After.")
    retry_after_s: int = Field(1, ge=1, le=600, description="Retry-After value sent with 503.")
    math_workers: int = Field(2, ge=1, le=256, description="Math verification worker processes (size it by the slowest items, not the median).")
    math_timeout_s: float = Field(5.0, gt=0, le=300, description="Hard deadline per math item; the worker is killed and replaced when it passes.")
    math_soft_deadline_fraction: float | None = Field(
        0.8, gt=0, lt=1, description="The worker interrupts itself (SIGALRM) at this fraction of the deadline and "
        "stays warm; None = only the hard kill at the deadline.",
    )
    math_pipeline_depth: int = Field(
        2, ge=1, le=64, description="Items queued in each math worker's pipe, so it starts the next one without "
        "waiting for the service to be scheduled; items behind a hung one are re-sent to its replacement.",
    )
    math_memory_mb: int = Field(2048, ge=256, le=65536, description="Address-space cap (RLIMIT_AS) of each math worker.")
    math_max_chars: int = Field(100_000, ge=100, le=10_000_000, description="Longest completion or ground truth accepted for math.")
    code_timeout_per_test_s: float = Field(6.0, gt=0, le=600, description="Default wall-clock limit per test run.")
    code_memory_mb: int = Field(1024, ge=16, le=65536, description="Default memory limit per test run.")
    code_compile_timeout_s: float = Field(30.0, gt=0, le=600, description="Default C++ compile time limit.")
    code_test_concurrency: int = Field(4, ge=1, le=256, description="Tests of one request run at once in `fraction` mode.")
    code_all_mode_wave: int = Field(2, ge=1, le=256, description="Tests run at once in `all` mode before checking for an early stop.")
    run_code_default_timeout_s: float = Field(10.0, gt=0, le=600, description="/run_code run timeout when the request gives none.")
    run_code_max_timeout_s: float = Field(120.0, gt=0, le=600, description="Largest run/compile timeout a request may ask for.")
    run_code_memory_mb: int = Field(1024, ge=16, le=65536, description="/run_code memory limit when the request gives -1 or none.")
    insecure_no_sandbox: bool = Field(
        False, description="Run code without bubblewrap isolation (development only: untrusted code then runs as this user)."
    )
    sandbox_workers: int | None = Field(None, ge=1, le=1024, description="Sandbox runs at once; None = the sandbox library's default.")
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug)$", description="uvicorn log level.")
