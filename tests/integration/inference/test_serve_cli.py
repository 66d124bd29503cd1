"""`aspo inference serve` as a process: comes up healthy, SIGTERM stops it and every vLLM child."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import psutil
import pytest
from inference_helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_sigterm_stops_the_server_and_all_its_children(base_model_dir) -> None:
    pytest.importorskip("vllm")
    port = free_port()
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.inference.cli",
            "serve",
            "--model",
            str(base_model_dir),
            "--port",
            str(port),
            "--enforce-eager",
            "--max-model-len",
            "512",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[psutil.Process] = []
    try:
        lines = []
        for line in cli.stdout:  # the CLI prints "serving ..." once /health answers
            lines.append(line)
            if line.startswith("serving"):
                break
        assert lines and lines[-1].startswith("serving"), "".join(lines[-30:])
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        children = psutil.Process(cli.pid).children(recursive=True)
        assert children, "vLLM runs as child processes of the CLI"
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], f"left running: {alive}"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:  # on failure, leave nothing running
        for proc in [*children, psutil.Process(cli.pid)] if cli.poll() is None else children:
            if proc.is_running():
                proc.kill()
