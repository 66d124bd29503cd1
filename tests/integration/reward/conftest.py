"""Fixtures: the real reward service, started as `aspo reward serve` subprocesses on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
ASPO = Path(sys.executable).with_name("aspo")
SECRET = "aspo-secret-value-5f3a9c"  # put in the server's environment; programs must not see it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def reward_server(**env_settings: str) -> Iterator[str]:
    """Start `aspo reward serve` with ASPO_REWARD_<KEY> env vars; yield its base URL; stop it."""
    port = free_port()
    env = {**os.environ, "ASPO_TEST_SECRET": SECRET, "ASPO_SANDBOX_WORKERS": "2"}
    env.update({f"ASPO_REWARD_{k.upper()}": str(v) for k, v in env_settings.items()})
    proc = subprocess.Popen(
        [str(ASPO), "reward", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"reward server exited: {proc.stdout.read().decode()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("reward server did not become healthy in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def reward_url() -> Iterator[str]:
    with reward_server(math_timeout_s="3", math_workers="2") as url:
        yield url


@pytest.fixture()
def start_reward_server():  # -> the reward_server context manager
    """Start an extra server with its own settings: `with start_reward_server(api_key=...) as url:`."""
    return reward_server


@pytest.fixture()
def server_secret() -> str:
    """A value in the server's environment that no program may see."""
    return SECRET


@pytest.fixture()
def client(reward_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=reward_url, timeout=120) as c:
        yield c
