"""Garbage at every endpoint never gives a 500; limits, API key and overload answer as documented."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

ENDPOINTS = ["/run_code", "/v1/verify/math", "/v1/verify/code", "/v1/score"]
GARBAGE_BODIES: list[bytes] = [
    b"", b"{", b"null", b"[]", b"42", b'"string"', b"\xff\xfe\x00garbage", b'{"code": "\xff"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"code": 1, "language": ["python"], "stdin": {}, "run_timeout": "soon"}',
    b'{"code": "print(1)", "language": "python", "run_timeout": 1e308, "memory_limit_MB": 99999999999999999999}',
    b'{"completion": null, "ground_truth": 5}',
    b'{"completion": "x", "ground_truth": "", "extra": 1}',
    b'{"code": "x", "tests": {"inputs": "nope", "outputs": 3}}',
    b'{"code": "x", "tests": {"inputs": [1], "outputs": [1], "fn_name": "not a name!"}, "mode": "some"}',
    b'{"items": {"kind": "math"}}',
    b'{"items": [[[[{"kind": {"kind": []}}]]]]}',
    b'{"code": "x", "language": "python", "files": {"a": 5}}',
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_garbage_never_gives_a_server_error(client: httpx.Client, endpoint: str) -> None:
    for body in GARBAGE_BODIES:
        response = client.post(endpoint, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500 or response.status_code == 200, (endpoint, body[:60], response.text)
        assert response.status_code != 200 or response.json()  # a 200 (e.g. /v1/score item errors) still answers
    assert client.get("/health").json()["status"] == "ok"


def test_validation_errors_name_the_field(client: httpx.Client) -> None:
    response = client.post("/run_code", json={"language": "python"})
    assert response.status_code == 422
    assert any(err["loc"][-1] == "code" for err in response.json()["detail"])
    response = client.post("/v1/verify/code", json={"code": "x", "tests": {"inputs": [1], "outputs": [1]}, "mode": "most"})
    assert response.status_code == 422 and any("mode" in err["loc"] for err in response.json()["detail"])


def test_size_and_language_limits(client: httpx.Client) -> None:
    big = client.post("/run_code", json={"code": "#" * ((1 << 20) + 1), "language": "python"})
    assert big.status_code == 413 and big.json()["field"] == "code"
    lang = client.post("/run_code", json={"code": "x", "language": "brainfuck"})
    assert lang.status_code == 400 and "python" in lang.json()["detail"] and "cpp" in lang.json()["detail"]
    code_lang = client.post("/v1/verify/code", json={"code": "x", "language": "go", "tests": {"inputs": ["1"], "outputs": ["1"]}})
    assert code_lang.status_code == 400


def test_openapi_documents_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    for path in ENDPOINTS + ["/health", "/metrics"]:
        assert path in schema["paths"]
    props = schema["components"]["schemas"]["RunCodeRequest"]["properties"]
    assert all(p.get("description") for p in props.values())


def test_api_key_and_overload(start_reward_server) -> None:
    with start_reward_server(api_key="test-key-123456", max_concurrency="1", max_queue="0", retry_after_s="2",
                             max_body_bytes="65536") as url:
        assert httpx.post(f"{url}/v1/verify/math", json={"completion": "1", "ground_truth": "1"}).status_code == 401
        wrong = httpx.post(f"{url}/run_code", json={"code": "x", "language": "python"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        auth = {"Authorization": "Bearer test-key-123456"}
        assert httpx.get(f"{url}/health").status_code == 200
        slow_done: list[int] = []

        def slow() -> None:
            r = httpx.post(f"{url}/run_code", json={"code": "import time; time.sleep(3)", "language": "python"},
                           headers=auth, timeout=60)
            slow_done.append(r.status_code)

        worker = threading.Thread(target=slow)
        worker.start()
        while httpx.get(f"{url}/health").json()["inflight"] < 1 and not slow_done:
            time.sleep(0.02)
        busy = httpx.post(f"{url}/run_code", json={"code": "print(1)", "language": "python"}, headers=auth)
        worker.join()
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
        assert slow_done == [200]
        chunked = httpx.post(f"{url}/run_code", headers={**auth, "content-type": "application/json"},
                             content=(b" " * 8192 for _ in range(20)))   # no Content-Length: streamed
        assert chunked.status_code == 413
        ok = httpx.post(f"{url}/run_code", json={"code": "print(1)", "language": "python"}, headers=auth)
        assert ok.status_code == 200 and ok.json()["run_result"]["stdout"] == "1\n"
        assert 'aspo_reward_rejected_total 1.0' in httpx.get(f"{url}/metrics").text
