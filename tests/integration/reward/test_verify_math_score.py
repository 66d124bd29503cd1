"""/v1/verify/math and /v1/score against the real service: verdicts, hung items, bad items."""

from __future__ import annotations

import httpx

POWER_TOWER = r"The answer is \boxed{5^{5^{5^{5}}}}"


def test_verify_math_verdicts(client: httpx.Client) -> None:
    cases = [
        ("42", "<think>maybe \\boxed{41}</think> so \\boxed{42}", True, "ok"),
        ("\\frac{1}{2}", "\\boxed{0.5}", True, "ok"),
        ("0.5", "the answer is $\\frac{1}{2}$", True, "ok"),
        ("42", "\\boxed{43}", False, "ok"),
        ("42", "no idea", False, "no_answer"),
    ]
    for gold, completion, correct, status in cases:
        res = client.post("/v1/verify/math", json={"completion": completion, "ground_truth": gold}).json()
        assert (res["correct"], res["status"]) == (correct, status), (gold, completion, res)
        assert res["reward"] == (1.0 if correct else 0.0)


def test_power_tower_times_out_while_the_rest_of_the_batch_succeeds(client: httpx.Client) -> None:
    items = [
        {"kind": "math", "id": "tower", "completion": POWER_TOWER, "ground_truth": "1"},
        {"kind": "math", "id": "ok1", "completion": "\\boxed{7}", "ground_truth": "7"},
        {"kind": "code", "id": "code", "code": "print(int(input()) + 1)", "tests": {"inputs": ["1"], "outputs": ["2"]}},
        {"kind": "math", "id": 4, "completion": "\\boxed{\\sqrt{4}}", "ground_truth": "2"},
        {"kind": "math", "id": "wrong", "completion": "\\boxed{3}", "ground_truth": "2"},
    ]
    res = client.post("/v1/score", json={"items": items})
    assert res.status_code == 200
    results = res.json()["results"]
    assert [r["id"] for r in results] == ["tower", "ok1", "code", 4, "wrong"]
    assert results[0]["status"] == "timeout" and results[0]["reward"] == 0.0
    assert [r["reward"] for r in results[1:]] == [1.0, 1.0, 1.0, 0.0]
    metrics = client.get("/metrics").text
    assert 'aspo_reward_timeouts_total{kind="math"}' in metrics
    assert 'aspo_reward_requests_total{endpoint="/v1/score",status="200"}' in metrics
    assert 'aspo_reward_pool_workers{pool="math"} 2.0' in metrics and 'pool="sandbox"' in metrics
    assert "aspo_reward_request_seconds_bucket" in metrics and "aspo_reward_queue_depth" in metrics
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["sandbox"] and health["math"]["timeouts"] >= 1


def test_bad_items_give_error_results_not_a_failed_batch(client: httpx.Client) -> None:
    items = [
        {"kind": "math", "id": "good", "completion": "\\boxed{1}", "ground_truth": "1"},
        {"kind": "math", "id": "nogold", "completion": "\\boxed{1}"},
        {"kind": "poetry", "id": "kind"},
        "not an object",
        {"kind": "code", "id": "lang", "code": "x", "language": "cobol", "tests": {"inputs": ["1"], "outputs": ["1"]}},
        {"kind": "code", "id": "big", "code": "#" * (2 << 20), "tests": {"inputs": ["1"], "outputs": ["1"]}},
        {"kind": "code", "id": "mismatch", "code": "x", "tests": {"inputs": ["1", "2"], "outputs": ["1"]}},
    ]
    results = client.post("/v1/score", json={"items": items}).json()["results"]
    assert len(results) == len(items)
    assert results[0]["status"] == "ok" and results[0]["reward"] == 1.0
    assert all(r["status"] == "invalid" and r["reward"] == 0.0 for r in results[1:])
    assert "ground_truth" in results[1]["message"]
    assert "cobol" in results[4]["message"] and "python" in results[4]["message"]
    assert "limit" in results[5]["message"] and "outputs" in results[6]["message"]
