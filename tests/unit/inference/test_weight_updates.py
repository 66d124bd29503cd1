"""Weight-update consistency logic against the in-process fake: roll-back, eviction, always resume."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from fake_vllm import FakeVLLM
from safetensors.numpy import save_file

from services.inference.checkpoint import CheckpointError
from services.inference.replicas import ReplicaPool
from services.inference.weights import WeightUpdater

URLS = ["http://r0:8000", "http://r1:8001", "http://r2:8002"]


def write_ckpt(d: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file(
        {k: np.zeros(s, dtype=np.float32) for k, s in shapes.items()}, str(d / "model.safetensors")
    )
    return d


SHAPES = {"a.weight": (4, 4), "b.weight": (4,)}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return write_ckpt(tmp_path / "base", SHAPES), write_ckpt(tmp_path / "v1", SHAPES)


def run_update(fake: FakeVLLM, base: Path, new: Path, policy: str = "rollback"):
    for r in fake.replicas.values():
        r.model_root = str(base)

    async def main():
        pool = ReplicaPool(URLS)
        updater = WeightUpdater(pool, http=httpx.AsyncClient(transport=fake.transport()))
        try:
            return await updater.update_weights(1, str(new), on_failure=policy), pool
        finally:
            await updater.aclose()

    return asyncio.run(main())


def test_all_replicas_follow_pause_reload_version_resume(dirs: tuple[Path, Path]) -> None:
    fake = FakeVLLM(URLS)
    result, pool = run_update(fake, *dirs)
    assert result.ok and result.consistent and result.served_version == 1
    for rep in fake.replicas.values():
        steps = [
            c
            for c in rep.calls
            if c in ("/pause", "/collective_rpc", "/update_weight_version", "/resume")
        ]
        assert steps == ["/pause", "/collective_rpc", "/update_weight_version", "/resume"]
        assert rep.version == "1" and not rep.paused and rep.reload_paths == [str(dirs[1])]
    assert [r.version for r in pool.replicas] == [1, 1, 1]


def test_one_failed_reload_rolls_every_replica_back(dirs: tuple[Path, Path]) -> None:
    fake = FakeVLLM(URLS)
    fake.replica(URLS[1]).fail_reload = True
    result, pool = run_update(fake, *dirs)
    assert not result.ok and "reload failed" in (result.error or "")
    assert result.consistent and result.served_version == 0
    assert {r.version for r in fake.replicas.values()} == {"0"}
    assert not any(r.paused for r in fake.replicas.values())  # resumed even where reload failed
    ok0 = fake.replica(URLS[0])
    assert ok0.reload_paths == [str(dirs[1]), str(dirs[0])]  # took v1, then back to base
    by_url = {r.url: r for r in result.replicas}
    assert by_url[URLS[0]].rolled_back and by_url[URLS[0]].version == 0
    # the failing replica cannot reload the old dir either, so it leaves rotation
    assert not by_url[URLS[1]].in_rotation and not pool.get(URLS[1]).in_rotation


def test_evict_keeps_new_version_and_drops_the_failed_replica(dirs: tuple[Path, Path]) -> None:
    fake = FakeVLLM(URLS)
    fake.replica(URLS[2]).down = True
    result, pool = run_update(fake, *dirs, policy="evict")
    assert fake.replica(URLS[0]).version == "1" and fake.replica(URLS[1]).version == "1"
    assert [r.url for r in pool.replicas if r.in_rotation] == URLS[:2]
    assert not result.ok and result.consistent and result.served_version == 1
    assert not next(r for r in result.replicas if r.url == URLS[2]).in_rotation


def test_incompatible_or_broken_checkpoints_touch_no_replica(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    base, _ = dirs
    bad = {
        "shape": write_ckpt(tmp_path / "shape", {"a.weight": (4, 5), "b.weight": (4,)}),
        "missing": write_ckpt(tmp_path / "missing", {"a.weight": (4, 4)}),
        "extra": write_ckpt(tmp_path / "extra", {**SHAPES, "c.weight": (2,)}),
    }
    trunc = write_ckpt(tmp_path / "trunc", SHAPES)
    st = trunc / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-8])
    bad["trunc"] = trunc
    garbage = write_ckpt(tmp_path / "garbage", SHAPES)
    (garbage / "model.safetensors").write_bytes(b"\xff" * 64)
    bad["garbage"] = garbage
    expected = {
        "shape": "other dtype/shape",
        "missing": "missing 1 tensors",
        "extra": "1 unknown",
        "trunc": "runs past",
        "garbage": "does not fit",
    }
    for name, d in bad.items():
        fake = FakeVLLM(URLS)
        with pytest.raises(CheckpointError, match=expected[name]):
            run_update(fake, base, d)
        assert all("/pause" not in r.calls and r.version == "0" for r in fake.replicas.values())


def test_pruned_old_checkpoints_do_not_block_updates_but_checks_still_apply(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    base, v1 = dirs
    v2 = write_ckpt(tmp_path / "v2", SHAPES)
    wrong = write_ckpt(tmp_path / "wrong", {"a.weight": (2, 2), "b.weight": (4,)})
    fake = FakeVLLM(URLS)
    for r in fake.replicas.values():
        r.model_root = str(base)

    async def main() -> tuple:
        updater = WeightUpdater(
            ReplicaPool(URLS), http=httpx.AsyncClient(transport=fake.transport())
        )
        try:
            first = await updater.update_weights(1, str(v1))
            shutil.rmtree(base)  # the trainer prunes old checkpoints
            second = await updater.update_weights(2, str(v2))
            shutil.rmtree(v1)
            with pytest.raises(CheckpointError, match="other dtype/shape"):
                await updater.update_weights(3, str(wrong))  # still compared with v2's specs
            return first, second
        finally:
            await updater.aclose()

    first, second = asyncio.run(main())
    assert first.ok and second.ok and second.served_version == 2
    assert {r.version for r in fake.replicas.values()} == {"2"}
