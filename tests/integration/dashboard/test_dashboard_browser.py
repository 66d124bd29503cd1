"""The dashboard page in a real headless Chromium against a real uvicorn server.

A feeder thread keeps writing a `RunState` the way the orchestrator loop does
(status changes, steps merged from trainer and orchestrator halves, lag
histograms, eval points, samples including HTML-like model output). The test
checks what a user sees: the header matches /api/status, every chart holds
exactly the points the API serves and has drawn them in its series colours,
new steps appear live, model output is shown as text and never executed, the
console stays clean and nothing is fetched from another origin.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

import httpx
import pytest

from orchestrator.dashboard import DashboardServer, create_dashboard_app
from orchestrator.state import RunState, SampleRecord, StepRecord

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
XSS = "<script>alert(1)</script>"
WAIT_S = 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"),
]


class Feeder:
    """Writes steps, samples and status like the orchestrator loop; can be held between steps."""

    def __init__(self, state: RunState, total_steps: int = 500) -> None:
        self.state = state
        self.total_steps = total_steps
        self.step = 0
        self.allowed = threading.Event()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dashboard-feeder", daemon=True)

    def write_step(self) -> None:
        s = self.step
        trainer_half = {"loss": 0.5 / (1 + s), "grad_norm": 1.0 + (s % 3), "lr": 1e-6, "entropy": 1.2 - 0.01 * s,
                        "clipfrac_upper": 0.02, "clipfrac_lower": 0.01 + 0.001 * s, "dualclip_frac_pos": 0.003,
                        "dualclip_frac_neg": 0.002, "is_ratio_pos_mean": 1.0 + 0.01 * s, "is_ratio_neg_mean": 0.98,
                        "is_weight_pos_mean": 0.97, "is_weight_neg_mean": 1.02 + 0.005 * s,
                        "kl_behaviour": 0.001 * s, "training_tokens_per_s": 900.0 + 10 * s}
        if s % 2 == 0:  # a key that only some steps have: the page must cope
            trainer_half["kl_ref"] = 0.0005 * s
        orchestrator_half = {"reward_mean": 0.2 + 0.02 * s, "accuracy": 0.1 + 0.02 * s, "response_length": 80.0 + s,
                             "repetition": 0.05, "generation_tokens_per_s": 300.0 + 5 * s,
                             "lag_mean": (s % 3) / 2, "lag_max": float(s % 3)}
        self.state.record_step(StepRecord(step=s, values=trainer_half, lag_histogram={0: 10, 1: 4}))
        evaluation = {"avg@4": 0.1 + 0.01 * s, "pass@4": 0.3 + 0.01 * s} if s % 4 == 0 else None
        self.state.record_step(StepRecord(step=s, values=orchestrator_half, lag_histogram={2: s % 3}, eval=evaluation))
        completion = f"step {s}: the answer is {s + 1}. " + (XSS + " <b>bold?</b> & more" if s % 2 == 0 else "")
        self.state.record_samples([
            SampleRecord(rollout_id=f"r{s}-{i}", task_id=f"t{s}", prompt=f"What is {s} + 1? <i>{i}</i>",
                         completion=completion, reward=float(i % 2), advantage=0.5 - (i % 2),
                         policy_version=max(0, s - 1), lag=1 if i else None)
            for i in range(3)
        ])
        self.state.update_status(state="running", trainer_step=s + 1, policy_version=s, total_steps=self.total_steps,
                                 max_off_policy_steps=2, samples_generated=12 * (s + 1), samples_trained=8 * (s + 1),
                                 samples_dropped_stale=s, eta_s=float(self.total_steps - s) * 3.0,
                                 generation_tokens_per_s=300.0 + 5 * s, trainer_idle_fraction=0.25)
        self.step += 1

    def _run(self) -> None:
        while not self.stopped.is_set():
            if self.allowed.is_set():
                with self.lock:
                    if self.allowed.is_set():
                        self.write_step()
            self.stopped.wait(0.25)

    def hold(self) -> None:
        """Stop writing; returns once no step is half written."""
        self.allowed.clear()
        with self.lock:
            pass


@pytest.fixture()
def served() -> Iterator[tuple[str, Feeder]]:
    state = RunState("browser-run-1")
    feeder = Feeder(state)
    for _ in range(6):
        feeder.write_step()
    server = DashboardServer(create_dashboard_app(state), port=0)
    url = server.start()
    feeder.thread.start()
    try:
        yield url, feeder
    finally:
        feeder.stopped.set()
        feeder.thread.join(5)
        server.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,2400", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # Record any alert() instead of letting it block: set before any page script runs.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));"})
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# Per chart: how many pixels of each drawn series' colour are in the plot area (below the legend row).
_PIXELS_JS = """
const out = {};
const top = Math.ceil(window.Charts.PAD.top * (window.devicePixelRatio || 1));
for (const [name, chart] of Object.entries(window.dashboard.charts)) {
  const canvas = chart.canvas;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = chart.series ? chart.series.filter((s) => chart.seriesPoints(s.key) > 0).map((s) => [s.key, s.color])
                               : [['bars', chart.color]];
  out[name] = {};
  for (const [key, hex] of colours) {
    const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    let n = 0;
    for (let i = top * canvas.width * 4; i < data.length; i += 4) {
      if (Math.abs(data[i] - rgb[0]) < 24 && Math.abs(data[i + 1] - rgb[1]) < 24 && Math.abs(data[i + 2] - rgb[2]) < 24) n++;
    }
    out[name][key] = n;
  }
}
return out;
"""

_COUNTS_JS = """
const out = {};
for (const [name, chart] of Object.entries(window.dashboard.charts)) {
  out[name] = chart.series ? Object.fromEntries(chart.series.map((s) => [s.key, chart.seriesPoints(s.key)]))
                           : {bars: chart.points};
}
return out;
"""


def _wait(driver: object, condition, message: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: condition(d), message=message)


def _settle(driver: object, feeder: Feeder) -> None:
    """Hold the feeder, then wait for two complete polls so the page has everything the API has."""
    feeder.hold()
    polls = driver.execute_script("return window.dashboard.polls")
    _wait(driver, lambda d: d.execute_script("return window.dashboard.polls") >= polls + 2, "page stopped polling")


def _expected_counts(metrics: dict) -> dict[str, int]:
    """Series key -> number of steps the API has a value (or eval score) for."""
    counts: dict[str, int] = {}
    for record in metrics["steps"]:
        for key in record["values"]:
            counts[key] = counts.get(key, 0) + 1
        for name in record["eval"] or {}:
            counts["eval:" + name] = counts.get("eval:" + name, 0) + 1
    return counts


def test_dashboard_page_live_in_headless_chromium(served: tuple[str, Feeder], driver) -> None:
    url, feeder = served
    driver.get(url + "/")
    _wait(driver, lambda d: d.execute_script("return window.dashboard && window.dashboard.lastStep >= 5"),
          "the page never showed the pre-seeded steps")
    feeder.allowed.set()
    _wait(driver, lambda d: d.execute_script("return window.dashboard.lastStep") >= 9, "steps did not arrive live")
    _settle(driver, feeder)

    status = httpx.get(url + "/api/status").json()
    metrics = httpx.get(url + "/api/metrics", params={"since": 0}).json()
    assert driver.find_element("id", "hdr-run-id").text == status["run_id"] == "browser-run-1"
    assert driver.find_element("id", "hdr-step").text == str(status["trainer_step"])
    assert driver.find_element("id", "hdr-policy-version").text == str(status["policy_version"])
    assert driver.find_element("id", "hdr-total").text == "500"
    assert driver.find_element("id", "counter-samples_generated").text == str(status["samples_generated"])

    # Every series holds exactly the points the API serves (missing keys skipped, merged steps once).
    expected = _expected_counts(metrics)
    shown = driver.execute_script(_COUNTS_JS)
    for chart, series in shown.items():
        for key, n in series.items():
            if key == "bars":
                assert n == len(metrics["lag_histogram_total"]) == 3, chart
            else:
                assert n == expected.get(key, 0), (chart, key)
    assert shown["kl"]["kl_ref"] < shown["kl"]["kl_behaviour"]  # kl_ref only on even steps
    assert shown["reward"]["eval:pass@4"] >= 3

    # ... and has drawn them: each series with data left pixels of its colour on its canvas.
    pixels = driver.execute_script(_PIXELS_JS)
    assert set(pixels) == set(shown)
    for chart, series in pixels.items():
        assert series, f"{chart} drew no series"
        for key, n in series.items():
            assert n >= 10, f"{chart}/{key}: only {n} pixels of its colour"

    # Live: resume the feeder and the point counts grow.
    before = driver.execute_script("return window.dashboard.charts.reward.points")
    last_step = driver.execute_script("return window.dashboard.lastStep")
    feeder.allowed.set()
    _wait(driver, lambda d: d.execute_script("return window.dashboard.lastStep") >= last_step + 2, "no live update")
    _settle(driver, feeder)
    assert driver.execute_script("return window.dashboard.charts.reward.points") > before
    assert driver.find_element("id", "hdr-step").text == str(httpx.get(url + "/api/status").json()["trainer_step"])

    # Model output is shown literally, as text: no element created, no script run.
    cells = driver.find_elements("css selector", "#samples-body td.completion summary")
    assert len(cells) == 50
    assert any(XSS in cell.text for cell in cells), [c.text for c in cells[:3]]
    assert driver.execute_script("return document.querySelectorAll('#samples-body script, #samples-body b').length") == 0
    assert driver.execute_script("return window.__alerts") == []

    # An expanded completion shows the full text and stays open across the table's refreshes.
    first = driver.find_element("css selector", "#samples-body tr:first-child td.completion summary")
    rollout_text = first.text
    first.click()
    polls = driver.execute_script("return window.dashboard.polls")
    _wait(driver, lambda d: d.execute_script("return window.dashboard.polls") >= polls + 2, "page stopped polling")
    details = driver.find_element("css selector", "#samples-body tr:first-child td.completion details")
    assert details.get_attribute("open") is not None
    assert details.find_element("css selector", "pre").text.startswith(rollout_text.rstrip("…").strip())

    # Hovering a chart shows a readout of that step's values, as text.
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "chart-reward")
    ActionChains(driver).move_to_element(canvas).perform()
    tooltip = driver.find_element("id", "tooltip")
    _wait(driver, lambda d: tooltip.is_displayed(), "no hover readout")
    assert tooltip.text.startswith("step ") and "reward mean: " in tooltip.text

    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    origin = url.rstrip("/")
    resources = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert resources and all(name.startswith(origin + "/") for name in resources), resources
    driver.save_screenshot("/tmp/dashboard.png")


def test_empty_run_then_a_single_step(driver) -> None:
    """Before any step the charts wait cleanly; one step gives one visible point per series."""
    state = RunState("empty-run")
    server = DashboardServer(create_dashboard_app(state), port=0)
    url = server.start()
    try:
        driver.get_log("browser")  # drop the previous test's entries
        driver.get(url + "/")
        _wait(driver, lambda d: d.execute_script("return window.dashboard && window.dashboard.polls >= 2"), "no polls")
        assert driver.find_element("id", "hdr-run-id").text == "empty-run"
        assert driver.find_element("id", "hdr-step").text == "0"
        counts = driver.execute_script(_COUNTS_JS)
        assert all(n == 0 for series in counts.values() for n in series.values()), counts

        state.record_step(StepRecord(step=0, values={"reward_mean": 0.5, "entropy": 1.1, "grad_norm": 2.0},
                                     lag_histogram={0: 8}))
        state.update_status(trainer_step=1, policy_version=0)
        _wait(driver, lambda d: d.execute_script("return window.dashboard.lastStep") == 0, "the single step never arrived")
        counts = driver.execute_script(_COUNTS_JS)
        assert counts["reward"] == {"reward_mean": 1, "accuracy": 0}
        assert counts["entropy"]["entropy"] == 1 and counts["grad"]["grad_norm"] == 1 and counts["lag_histogram"]["bars"] == 1
        pixels = driver.execute_script(_PIXELS_JS)
        for chart, key in (("reward", "reward_mean"), ("entropy", "entropy"), ("grad", "grad_norm"), ("lag_histogram", "bars")):
            assert pixels[chart][key] >= 10, (chart, pixels[chart])
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        assert driver.execute_script("return window.dashboard.errors") == 0
    finally:
        server.stop()


def _click_and_read(driver, action: str, previous: str) -> str:
    """Click a control button and return the result line once it changed."""
    driver.execute_script("document.getElementById('ctl-result').textContent = ''")
    driver.find_element("id", f"ctl-{action}").click()
    _wait(driver, lambda d: d.find_element("id", "ctl-result").text not in ("", previous), f"{action}: no answer shown")
    return driver.find_element("id", "ctl-result").text


def test_control_bar_needs_the_token_and_calls_the_loop(driver, recording_control) -> None:
    token = "dashboard-test-token-7f3a9c"
    state = RunState("control-run")
    state.update_status(state="running", total_steps=10)
    control = recording_control
    server = DashboardServer(create_dashboard_app(state, control, api_token=token), port=0)
    url = server.start()
    try:
        driver.get(url + "/")
        driver.execute_script("sessionStorage.clear()")
        driver.get(url + "/")
        _wait(driver, lambda d: d.execute_script("return window.dashboard && window.dashboard.polls >= 1"), "no poll")
        _wait(driver, lambda d: d.find_element("id", "ctl-pause").is_enabled(), "controls stayed disabled while running")

        assert "HTTP 401" in _click_and_read(driver, "pause", "")  # no token typed
        field = driver.find_element("id", "ctl-token")
        field.send_keys("not-the-token-at-all")
        assert "HTTP 401" in _click_and_read(driver, "pause", "") and control.calls == []

        field.clear()
        field.send_keys(token)
        assert _click_and_read(driver, "pause", "") == "pause: requested"
        assert _click_and_read(driver, "resume", "") == "resume: requested"
        assert control.calls == ["pause", "resume"]

        driver.execute_script("window.confirm = () => false")  # the user cancels the stop dialog
        driver.execute_script("document.getElementById('ctl-result').textContent = ''")
        driver.find_element("id", "ctl-stop").click()
        polls = driver.execute_script("return window.dashboard.polls")
        _wait(driver, lambda d: d.execute_script("return window.dashboard.polls") >= polls + 1, "page stopped polling")
        assert driver.find_element("id", "ctl-result").text == "" and control.calls == ["pause", "resume"]
        driver.execute_script("window.confirm = () => true")
        assert _click_and_read(driver, "stop", "") == "stop: requested"
        assert control.calls == ["pause", "resume", "stop"]

        # The token survives a reload of the tab; a finished run disables the buttons.
        driver.refresh()
        _wait(driver, lambda d: d.execute_script("return window.dashboard && window.dashboard.polls >= 1"), "no poll")
        assert driver.find_element("id", "ctl-token").get_attribute("value") == token
        state.update_status(state="finished")
        _wait(driver, lambda d: not d.find_element("id", "ctl-stop").is_enabled(), "buttons enabled after the run ended")
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "/api/" not in e["message"]] == []
    finally:
        server.stop()


def test_control_bar_without_a_configured_token_says_control_is_disabled(driver, recording_control) -> None:
    state = RunState("no-control-run")
    state.update_status(state="running")
    server = DashboardServer(create_dashboard_app(state, recording_control), port=0)
    url = server.start()
    try:
        driver.get(url + "/")
        _wait(driver, lambda d: d.find_element("id", "ctl-pause").is_enabled(), "controls stayed disabled while running")
        text = _click_and_read(driver, "pause", "")
        assert "HTTP 503" in text and "control disabled" in text, text
    finally:
        server.stop()
