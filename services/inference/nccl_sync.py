"""GPU weight push over NCCL through vLLM's weight-transfer API. UNVERIFIED HERE.

Status: written from vLLM's own trainer-side engine
(``vllm.distributed.weight_transfer.nccl_engine.NCCLTrainerWeightTransferEngine``
and ``HTTPVLLMWeightSyncClient`` in vLLM 0.32) and its dev-mode routes, but
never run: it needs CUDA GPUs for both trainer and vLLM, and this project's
machines have no vLLM on GPU. The CPU path (:mod:`.weights`, reload from a
safetensors dir) is the tested one.

Protocol (one replica; repeat per replica with its own NCCL group):

1. server started with ``--weight-transfer-config '{"backend": "nccl"}'``
   (:func:`weight_transfer_args`), on GPU;
2. once, in the trainer's rank 0: :func:`connect_trainer` calls vLLM's
   ``trainer_init``, which POSTs ``/init_weight_transfer_engine`` (workers join
   the NCCL group at ranks 1..world_size-1) while the trainer opens rank 0;
3. per version: :func:`push_weights` pauses generation (``/pause?mode=keep``),
   runs ``send_weights`` (vLLM posts ``/start_weight_update``, then
   ``/update_weights`` with names/dtypes/shapes concurrently with the NCCL
   broadcast, then ``/finish_weight_update``), tags ``/update_weight_version``
   and always resumes. Unlike the CPU path there is no roll-back: weights that
   arrived half-way cannot be un-sent, so after a failure the replica serves
   unknown weights; the caller must take it out of rotation or reload the last
   published dir with :class:`.weights.WeightUpdater`.

Start the server for it with ``InferenceSettings(device="cuda",
extra_args=weight_transfer_args())``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx


def weight_transfer_args(backend: str = "nccl") -> list[str]:
    """Extra vLLM CLI args enabling a weight-transfer backend (GPU only)."""
    return ["--weight-transfer-config", json.dumps({"backend": backend})]


def connect_trainer(
    base_url: str, module: Any, master_address: str, master_port: int, world_size: int
) -> Any:
    """Trainer rank 0: open the NCCL group with one vLLM replica; returns vLLM's engine.

    ``world_size`` = 1 (trainer) + the replica's GPU workers (TP x PP).
    """
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.nccl_engine import (
        NCCLTrainerInitInfo,
        NCCLTrainerWeightTransferEngine,
    )

    info = NCCLTrainerInitInfo(
        master_address=master_address, master_port=master_port, world_size=world_size, rank=0
    )
    return NCCLTrainerWeightTransferEngine.trainer_init(
        info, client=HTTPVLLMWeightSyncClient(base_url), source=ModuleSource(module)
    )


def push_weights(engine: Any, base_url: str, version: int, timeout_s: float = 300.0) -> float:
    """Pause (keep), broadcast the module's weights, tag ``version``, resume; returns paused seconds."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as http:
        t0 = time.perf_counter()
        http.post("/pause", params={"mode": "keep"}).raise_for_status()
        try:
            engine.send_weights()
            http.post(
                "/update_weight_version", json={"new_version": str(version)}
            ).raise_for_status()
        finally:
            http.post("/resume").raise_for_status()
        return time.perf_counter() - t0
