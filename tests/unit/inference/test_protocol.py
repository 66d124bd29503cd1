"""Parsing vLLM's token-in/token-out answers into Completions with per-token versions."""

from __future__ import annotations

import pytest

from services.inference.protocol import (
    Completion,
    InferenceProtocolError,
    SamplingRequest,
    parse_generate_response,
    spans_to_token_versions,
)


def choice(
    index: int, ids: list[int], spans: list[dict] | None, logprob_ids: list[int] | None = None
) -> dict:
    lp_ids = ids if logprob_ids is None else logprob_ids
    return {
        "index": index,
        "token_ids": ids,
        "logprobs": {
            "content": [{"token_id": t, "logprob": -0.1 * (k + 1)} for k, t in enumerate(lp_ids)]
        },
        "finish_reason": "stop",
        "weight_versions": spans,
    }


def test_spans_expand_to_one_version_per_token_across_an_update() -> None:
    spans = [{"version": "4", "start": 3, "end": 5}, {"version": "3", "start": 0, "end": 3}]
    assert spans_to_token_versions(spans, 5) == [3, 3, 3, 4, 4]


def test_untagged_default_version_is_policy_zero() -> None:
    assert spans_to_token_versions([{"version": "default", "start": 0, "end": 2}], 2) == [0, 0]


@pytest.mark.parametrize(
    ("spans", "n", "message"),
    [
        (None, 3, "--enable-scale-out"),
        ([{"version": "1", "start": 0, "end": 2}], 3, "cover 2 tokens"),
        (
            [{"version": "1", "start": 0, "end": 1}, {"version": "2", "start": 2, "end": 3}],
            3,
            "tile",
        ),
        ([{"version": "v1", "start": 0, "end": 3}], 3, "not an integer"),
    ],
)
def test_bad_spans_are_rejected_with_the_reason(spans: list | None, n: int, message: str) -> None:
    with pytest.raises(InferenceProtocolError, match=message):
        spans_to_token_versions(spans, n)


def test_choices_parse_in_index_order_with_aligned_arrays() -> None:
    payload = {
        "choices": [
            choice(1, [7, 8], [{"version": "2", "start": 0, "end": 2}]),
            choice(0, [5], [{"version": "2", "start": 0, "end": 1}]),
        ]
    }
    out = parse_generate_response(payload, [1, 2, 3], replica="http://r0")
    assert [c.completion_ids for c in out] == [[5], [7, 8]]
    assert out[1].behaviour_logprobs == pytest.approx([-0.1, -0.2])
    assert out[1].token_versions == [2, 2] and out[0].prompt_ids == [1, 2, 3]
    assert out[0].replica == "http://r0" and out[0].policy_versions == [2]


def test_logprob_entry_for_another_token_is_an_error() -> None:
    payload = {
        "choices": [choice(0, [5, 6], [{"version": "1", "start": 0, "end": 2}], logprob_ids=[5, 9])]
    }
    with pytest.raises(InferenceProtocolError, match="entry 1 is for token 9"):
        parse_generate_response(payload, [1])


def test_missing_logprobs_or_choices_are_errors() -> None:
    no_lp = {"choices": [{"index": 0, "token_ids": [1], "weight_versions": None}]}
    with pytest.raises(InferenceProtocolError, match="log-prob entries"):
        parse_generate_response(no_lp, [1])
    with pytest.raises(InferenceProtocolError, match="no choices"):
        parse_generate_response({"choices": []}, [1])


def test_completion_refuses_misaligned_arrays() -> None:
    with pytest.raises(ValueError, match="same length"):
        Completion(
            prompt_ids=[1],
            completion_ids=[1, 2],
            behaviour_logprobs=[-1.0],
            token_versions=[0, 0],
            finish_reason="stop",
        )


def test_sampling_request_body_asks_for_sampled_token_logprobs_only() -> None:
    body = SamplingRequest(prompt_ids=[1, 2], n=4, max_tokens=8, seed=3).to_vllm("policy", "rid")
    assert body["token_ids"] == [1, 2] and body["model"] == "policy" and body["stream"] is False
    assert body["sampling_params"]["logprobs"] == 0 and body["sampling_params"]["seed"] == 3
    with pytest.raises(ValueError):
        SamplingRequest(prompt_ids=[1, -2])
    with pytest.raises(ValueError):
        SamplingRequest(prompt_ids=[])
