"""Dashboard HTTP API over a RunState filled by the test: values, validation, control auth, Prometheus text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from orchestrator.dashboard import (
    DashboardServer,
    DashboardSettings,
    MetricsResponse,
    RunControl,
    create_dashboard_app,
)
from orchestrator.dashboard.api import STATIC_DIR
from orchestrator.state import QueueDepths, RunState, SampleRecord, StepRecord

TOKEN = "s3cr3t-T0ken-for-tests-only-xyz"


def _filled_state() -> RunState:
    state = RunState("run-42")
    state.update_status(state="running", policy_version=6, trainer_step=7, total_steps=100, max_off_policy_steps=2,
                        samples_generated=640, samples_trained=512, samples_dropped_stale=3, samples_filtered=48,
                        reward_failures=1, queues=QueueDepths(rollout_stream=5, in_flight_samples=32, dead_letters=2),
                        generation_tokens_per_s=1234.5, training_tokens_per_s=987.0, trainer_idle_fraction=0.25,
                        inference_idle_fraction=0.125, eta_s=321.0)
    for step in range(5):
        state.record_step(StepRecord(step=step, values={"loss": 1.0 / (step + 1)}, lag_histogram={0: 4, 1: step}))
    # The orchestrator's half of step 4 arrives later and is merged into the same record.
    state.record_step(StepRecord(step=4, values={"reward_mean": 0.75}, lag_histogram={2: 3}, eval={"pass@4": 0.5}))
    state.record_samples([
        SampleRecord(rollout_id=f"r{i}", task_id="t", prompt=f"p{i}", completion=f"c{i}", reward=float(i % 2),
                     advantage=0.0, policy_version=i, lag=None)
        for i in range(120)
    ])
    return state


@pytest.fixture()
def client() -> TestClient:
    return TestClient(create_dashboard_app(_filled_state()))


def test_status_returns_the_stores_values(client: TestClient) -> None:
    body = client.get("/api/status").json()
    assert body["run_id"] == "run-42" and body["state"] == "running"
    assert (body["policy_version"], body["trainer_step"], body["total_steps"]) == (6, 7, 100)
    assert body["queues"] == {"rollout_stream": 5, "in_flight_samples": 32, "dead_letters": 2}
    assert body["eta_s"] == 321.0
    assert client.get("/health").json() == {"status": "ok", "run_id": "run-42"}


def test_metrics_since_filters_steps_but_histogram_covers_the_run(client: TestClient) -> None:
    everything = client.get("/api/metrics").json()
    assert [s["step"] for s in everything["steps"]] == [0, 1, 2, 3, 4]
    last = everything["steps"][-1]
    assert last["values"] == {"loss": 0.2, "reward_mean": 0.75} and last["eval"] == {"pass@4": 0.5}
    assert last["lag_histogram"] == {"0": 4, "1": 4, "2": 3}
    # lag 0: 4 per step; lag 1: 0+1+2+3+4; lag 2: only the merged half of step 4.
    assert everything["lag_histogram_total"] == {"0": 20, "1": 10, "2": 3}

    # The fast path (serialised by the store) gives exactly the pydantic dump of `steps()`.
    parsed = MetricsResponse.model_validate(everything)
    state = client.app.state.run_state
    assert parsed.steps == state.steps(0)
    assert json.loads(state.steps_json(2)) == [s.model_dump(mode="json") for s in state.steps(2)]

    tail = client.get("/api/metrics", params={"since": 3}).json()
    assert [s["step"] for s in tail["steps"]] == [3, 4]
    assert tail["lag_histogram_total"] == everything["lag_histogram_total"]
    assert client.get("/api/metrics", params={"since": 99}).json()["steps"] == []


@pytest.mark.parametrize("since", ["-1", "abc", "1.5"])
def test_metrics_rejects_bad_since_naming_the_field(client: TestClient, since: str) -> None:
    response = client.get("/api/metrics", params={"since": since})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "since"]


def test_samples_are_newest_first_and_limited(client: TestClient) -> None:
    assert [s["rollout_id"] for s in client.get("/api/samples", params={"limit": 3}).json()] == ["r119", "r118", "r117"]
    assert len(client.get("/api/samples").json()) == 50
    assert len(client.get("/api/samples", params={"limit": 500}).json()) == 120
    for bad in ("0", "501", "x"):
        response = client.get("/api/samples", params={"limit": bad})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_control_is_disabled_without_a_token(recording_control) -> None:
    control = recording_control
    client = TestClient(create_dashboard_app(_filled_state(), control=control))
    for action in ("pause", "resume", "stop"):
        response = client.post(f"/api/{action}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 503 and "control disabled" in response.json()["detail"]
    assert control.calls == []
    no_control = TestClient(create_dashboard_app(_filled_state(), api_token=TOKEN))
    response = no_control.post("/api/pause", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503 and "no run control" in response.json()["detail"]


def test_control_needs_the_right_bearer_token(recording_control) -> None:
    control = recording_control
    client = TestClient(create_dashboard_app(_filled_state(), control=control, api_token=TOKEN))
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        response = client.post("/api/stop", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert control.calls == []
    for action in ("pause", "resume", "stop"):
        response = client.post(f"/api/{action}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200 and response.json() == {"action": action, "requested": True}
    assert control.calls == ["pause", "resume", "stop"]
    assert client.get("/api/pause").status_code == 405  # a GET (link prefetch, crawler) never acts


def test_prometheus_gauges_carry_the_status_values(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, s.labels.get("state")): s for f in text_string_to_metric_families(response.text) for s in f.samples}
    expected = {"aspo_policy_version": 6, "aspo_trainer_step": 7, "aspo_samples_generated": 640,
                "aspo_samples_trained": 512, "aspo_samples_dropped_stale": 3, "aspo_samples_filtered": 48,
                "aspo_reward_failures": 1, "aspo_queue_rollout_stream": 5, "aspo_queue_in_flight_samples": 32,
                "aspo_queue_dead_letters": 2, "aspo_generation_tokens_per_second": 1234.5,
                "aspo_training_tokens_per_second": 987.0, "aspo_trainer_idle_fraction": 0.25,
                "aspo_inference_idle_fraction": 0.125, "aspo_eta_seconds": 321.0}
    for name, value in expected.items():
        assert samples[(name, None)].value == value, name
        assert samples[(name, None)].labels == {"run_id": "run-42"}
    assert samples[("aspo_run_state", "running")].value == 1
    assert samples[("aspo_run_state", "starting")].value == 0


def test_prometheus_reads_live_state_and_each_app_has_its_own_registry() -> None:
    first, second = RunState("first"), RunState("second")
    a, b = TestClient(create_dashboard_app(first)), TestClient(create_dashboard_app(second))
    first.update_status(trainer_step=3)
    assert 'aspo_trainer_step{run_id="first"} 3.0' in a.get("/metrics").text
    first.update_status(trainer_step=4)
    text_a, text_b = a.get("/metrics").text, b.get("/metrics").text
    assert 'aspo_trainer_step{run_id="first"} 4.0' in text_a
    assert 'run_id="first"' not in text_b and 'aspo_trainer_step{run_id="second"} 0.0' in text_b


def test_page_and_static_files_are_served_same_origin_only(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    local = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert local and all(ref.startswith("/static/") for ref in local)
    for ref in local:
        assert client.get(ref).status_code == 200, ref
    for path in Path(STATIC_DIR).iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{path.name} refers to another origin"
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(", text), path.name
    assert client.get("/static/../api.py").status_code == 404


def test_empty_token_is_refused_and_settings_validate() -> None:
    with pytest.raises(ValueError, match="api_token"):
        create_dashboard_app(RunState("r"), api_token="  ")
    with pytest.raises(ValidationError, match="api_token"):
        DashboardSettings(api_token="short")
    with pytest.raises(ValidationError, match="placeholder"):
        DashboardSettings(api_token="changeme-changeme-changeme")
    with pytest.raises(ValidationError, match="port"):
        DashboardSettings(port=70000)
    assert DashboardSettings(api_token=TOKEN).api_token == TOKEN


def test_env_prefix_sets_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASPO_DASHBOARD_PORT", "9123")
    assert DashboardSettings().port == 9123


def test_recording_control_satisfies_the_protocol(recording_control) -> None:
    assert isinstance(recording_control, RunControl)
    assert not isinstance(object(), RunControl)


def test_server_serves_on_a_free_port_and_stops() -> None:
    server = DashboardServer(create_dashboard_app(_filled_state()), port=0)
    url = server.start()
    try:
        assert httpx.get(url + "/api/status").json()["trainer_step"] == 7
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)
    server.stop()  # idempotent
